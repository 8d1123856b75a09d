"""The kiosk's spoken prompts, for static/kiosk_voice.js:

    GET /kiosk/voice/{lang}/{key}.wav[?elderly=1]   -> audio/wav

`key` is one of adapters.voice.PROMPT_KEYS and `lang` one of zh-CN, en; anything else is a
404 (`voice_unknown`): the text spoken is always the locale's kiosk.voice.<key>, never
something from the request, so no one can make the kiosk say a word of their own.
`elderly=1` speaks slower (SELFPAY_VOICE_SPEED_ELDERLY). When espeak-ng is missing or
fails, 503 `voice_unavailable` with a message in the prompt's language: the page stays
silent and the kiosk works as before. SELFPAY_VOICE=off answers 404 `voice_off`.

A prompt changes only when the locale files do (a release), so a browser may keep it for a
day and then revalidate it by its ETag (the cache key: voice, speed, sha256 of the text),
which costs a 304.
"""

from __future__ import annotations

import logging
import threading

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from selfpay.adapters.voice import PROMPT_KEYS, EspeakNg, PromptCache
from selfpay.config import Settings
from selfpay.entrypoints.web.deps import ContainerDep
from selfpay.entrypoints.web.i18n import catalog, pick_lang, request_lang, translate
from selfpay.services.ports import SpeechUnavailable

log = logging.getLogger(__name__)
router = APIRouter(prefix="/kiosk/voice", tags=["kiosk"], include_in_schema=False)
CACHE_CONTROL = "public, max-age=86400, stale-while-revalidate=604800"
_building = threading.Lock()


def prompt_cache(request: Request, settings: Settings) -> PromptCache:
    """This process's prompt cache (app.state.voice_prompts), made on first use: espeak-ng
    and <data_dir>/voice/. A test may put its own there first."""
    state = request.app.state
    cache: PromptCache | None = getattr(state, "voice_prompts", None)
    if cache is None:
        with _building:
            cache = getattr(state, "voice_prompts", None)
            if cache is None:
                cache = PromptCache(EspeakNg(), settings.data_dir / "voice")
                state.voice_prompts = cache
    return cache


def _problem(status: int, code: str, lang: str, detail: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = "300"
    return JSONResponse({"detail": detail, "code": code,
                         "message": translate(lang, f"kiosk.voice.err.{code.split('_')[1]}")},
                        status_code=status, headers=headers)


@router.get("/{lang}/{key}.wav")
def prompt(lang: str, key: str, request: Request, container: ContainerDep,
           elderly: bool = False) -> Response:
    """One prompt as WAV; made by espeak-ng on this machine the first time it is asked."""
    settings = container.settings
    chosen = pick_lang(lang)
    said_in = chosen or request_lang(request)
    if settings.voice == "off":
        return _problem(404, "voice_off", said_in, "voice prompts are off (SELFPAY_VOICE)")
    # the language's own text only: an English voice must not read the Chinese fallback
    text = catalog(chosen).get(f"kiosk.voice.{key}") if chosen and key in PROMPT_KEYS else None
    if not text:
        return _problem(404, "voice_unknown", said_in, "no such voice prompt")
    voice = settings.voice_name if chosen == "zh-CN" else settings.voice_name_en
    speed = settings.voice_speed_elderly if elderly else settings.voice_speed
    try:
        found = prompt_cache(request, settings).get(text, voice=voice, speed=speed)
    except SpeechUnavailable as exc:
        log.warning("voice prompt %s/%s not made: %s", chosen, key, exc)
        return _problem(503, "voice_unavailable", said_in, str(exc))
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": found.etag}
    if found.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(found.path, media_type="audio/wav", headers=headers)
