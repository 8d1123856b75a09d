"""The kiosk's spoken prompts: real espeak-ng (Debian's `espeak-ng`; scripts/voice.sh
installs it), the file cache under the data dir, and GET /kiosk/voice/{lang}/{key}.wav.

Without espeak-ng the tests that need it skip with the reason, unless
SELFPAY_REQUIRE_SERVERS=1. The browser half is tests/e2e/test_voice_browser.py.
"""

from __future__ import annotations

import array
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selfpay.adapters.voice import PROMPT_KEYS, EspeakNg, PromptCache
from selfpay.bootstrap import Container
from selfpay.config import SettingsError, load_settings
from selfpay.entrypoints.web.app import STATIC_DIR, create_app
from selfpay.services.ports import SpeechUnavailable
from support.web import TestClient, build_container

LOCALES = Path(__file__).resolve().parents[2] / "src" / "selfpay" / "locales"
CHOOSE_ZH = "请选择缴费项目。"


@pytest.fixture(scope="module")
def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        reason = "espeak-ng is not installed (scripts/voice.sh install)"
        if os.environ.get("SELFPAY_REQUIRE_SERVERS") == "1":
            pytest.fail(reason + " and SELFPAY_REQUIRE_SERVERS=1")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    built = build_container(tmp_path_factory.mktemp("voice"))
    yield built
    built.close()


@pytest.fixture
def client(container: Container, tmp_path: Path) -> TestClient:
    """A fresh app whose prompt cache is this test's own directory (the default one,
    <data_dir>/voice with espeak-ng, is what test_default_cache_lives_in_the_data_dir
    checks)."""
    app = create_app(container=container)
    app.state.voice_prompts = PromptCache(EspeakNg(), tmp_path / "voice")
    return TestClient(app)


@pytest.fixture
def espeak_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of every espeak-ng process run from now on (they still run)."""
    runs: list[list[str]] = []
    real = subprocess.run

    def spy(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        runs.append(list(argv))
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    return runs


def samples(wav: bytes) -> tuple[Any, array.array[int]]:
    with wave.open(io.BytesIO(wav)) as w:
        params = w.getparams()
        frames = w.readframes(params.nframes)
    pcm = array.array("h")
    pcm.frombytes(frames)
    if sys.byteorder == "big":  # pragma: no cover - WAV is little-endian
        pcm.byteswap()
    return params, pcm


def rms(pcm: array.array[int]) -> float:
    return math.sqrt(sum(s * s for s in pcm) / len(pcm)) if pcm else 0.0


def voice_of(argv: list[str]) -> str:
    return argv[argv.index("-v") + 1]


# --- the synthesiser ----------------------------------------------------------------------


def test_espeak_says_mandarin_as_a_whole_wav_that_is_not_silent(
        espeak: str, espeak_runs: list[list[str]]) -> None:
    wav = EspeakNg().synthesise(CHOOSE_ZH, voice="cmn", speed=130)

    params, pcm = samples(wav)
    assert (params.nchannels, params.sampwidth, params.comptype) == (1, 2, "NONE")
    # the header's lengths are the real ones (espeak-ng on a pipe leaves 0x7fffffff)
    assert params.nframes == len(pcm) == (len(wav) - 44) // 2
    assert 0.5 < params.nframes / params.framerate < 10  # a short sentence, in seconds
    assert rms(pcm) > 500, "the prompt is silent"  # of 32767; speech is in the thousands
    assert [voice_of(a) for a in espeak_runs] == ["cmn"]
    assert CHOOSE_ZH not in " ".join(espeak_runs[0])  # the text went on stdin


def test_the_voice_and_the_speed_change_what_is_said(espeak: str) -> None:
    synth = EspeakNg()
    slow = samples(synth.synthesise(CHOOSE_ZH, voice="cmn", speed=130))[1]
    fast = samples(synth.synthesise(CHOOSE_ZH, voice="cmn", speed=175))[1]
    english = samples(synth.synthesise(CHOOSE_ZH, voice="en-us", speed=130))[1]
    assert len(slow) > len(fast) * 1.15  # elderly mode is slower
    assert english != slow  # the voice is not ignored


def test_an_unknown_voice_is_a_clear_error(espeak: str) -> None:
    with pytest.raises(SpeechUnavailable, match="-v nosuch.*does not exist"):
        EspeakNg().synthesise("你好", voice="nosuch", speed=130)


def test_a_voice_name_can_never_be_an_option() -> None:
    for bad in ("-w/tmp/x", "cmn -w x", "", "../cmn"):
        with pytest.raises(ValueError, match="voice name"):
            EspeakNg().synthesise("你好", voice=bad, speed=130)
    with pytest.raises(ValueError, match="80-450"):
        EspeakNg().synthesise("你好", voice="cmn", speed=10)
    with pytest.raises(SettingsError, match="SELFPAY_VOICE_NAME"):
        load_settings(voice_name="-w/tmp/x", env="development")


def fake_espeak(tmp_path: Path, body: str) -> Path:
    """An `espeak-ng` that is a shell script: records argv and stdin, then runs `body`."""
    script = tmp_path / "espeak-ng"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/argv"\n'
        f'cat > "{tmp_path}/stdin"\n' + body + "\n",
        encoding="utf-8")
    script.chmod(0o755)
    return script


def test_text_goes_to_the_process_as_data_never_as_a_shell_or_an_option(
        tmp_path: Path) -> None:
    # the fake writes a valid empty WAV where -w says
    header = ("RIFF$\\000\\000\\000WAVEfmt \\020\\000\\000\\000\\001\\000\\001\\000\"V\\000"
              "\\000D\\254\\000\\000\\002\\000\\020\\000data\\000\\000\\000\\000")
    script = fake_espeak(tmp_path, 'while [ "$1" != -w ]; do shift; done\n'
                                   f"printf '{header}' > \"$2\"")
    text = '-w /etc/passwd "$(touch pwned)"; rm -rf / `id`'
    wav = EspeakNg(str(script)).synthesise(text, voice="cmn", speed=130)
    assert wav.startswith(b"RIFF") and wav[8:12] == b"WAVE"
    assert (tmp_path / "stdin").read_text(encoding="utf-8") == text
    argv = (tmp_path / "argv").read_text(encoding="utf-8").splitlines()
    assert argv[:6] == ["-v", "cmn", "-s", "130", "-b", "1"] and argv[-1] == "--stdin"
    assert text not in argv
    assert not (tmp_path / "pwned").exists()


def test_a_hung_synthesiser_is_killed_after_the_timeout(tmp_path: Path) -> None:
    script = fake_espeak(tmp_path, "sleep 5")
    with pytest.raises(SpeechUnavailable, match="did not finish within 0.5 s"):
        EspeakNg(str(script), timeout_s=0.5).synthesise("你好", voice="cmn", speed=130)


def test_missing_espeak_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SpeechUnavailable, match="espeak-ng is not installed.*voice.sh install"):
        EspeakNg().synthesise("你好", voice="cmn", speed=130)


# --- the cache ----------------------------------------------------------------------------


class Counting:
    def __init__(self, inner: EspeakNg) -> None:
        self.inner = inner
        self.calls = 0

    def synthesise(self, text: str, *, voice: str, speed: int) -> bytes:
        self.calls += 1
        return self.inner.synthesise(text, voice=voice, speed=speed)


def test_a_prompt_is_made_once_then_read_from_its_file(
        espeak: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synth = Counting(EspeakNg())
    cache = PromptCache(synth, tmp_path / "voice")
    first = cache.get(CHOOSE_ZH, voice="cmn", speed=130)
    made = first.path.read_bytes()
    assert synth.calls == 1
    assert first.path.parent == tmp_path / "voice"
    assert re.fullmatch(r"cmn-130-[0-9a-f]{64}\.wav", first.path.name)
    assert first.etag == f'"{first.path.stem}"'
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temp file

    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # espeak-ng cannot run now
    again = PromptCache(synth, tmp_path / "voice").get(CHOOSE_ZH, voice="cmn", speed=130)
    assert again == first and again.path.read_bytes() == made
    assert synth.calls == 1
    # another speed is another prompt: it needs espeak-ng, which is gone
    with pytest.raises(SpeechUnavailable):
        cache.get(CHOOSE_ZH, voice="cmn", speed=175)
    assert synth.calls == 2
    assert len(list((tmp_path / "voice").iterdir())) == 1


def test_a_failed_synthesis_leaves_no_file(tmp_path: Path) -> None:
    class Broken:
        def synthesise(self, text: str, *, voice: str, speed: int) -> bytes:
            raise SpeechUnavailable("broken")

    with pytest.raises(SpeechUnavailable):
        PromptCache(Broken(), tmp_path / "voice").get("你好", voice="cmn", speed=130)
    assert not (tmp_path / "voice").exists() or not list((tmp_path / "voice").iterdir())


# --- the route ----------------------------------------------------------------------------


def test_a_prompt_is_served_as_wav_with_long_cache_headers(
        espeak: str, client: TestClient, espeak_runs: list[list[str]],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    r = client.get("/kiosk/voice/zh-CN/choose.wav")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert "max-age=86400" in r.headers["cache-control"]
    assert "public" in r.headers["cache-control"]
    etag = r.headers["etag"]
    assert re.fullmatch(r'"cmn-175-[0-9a-f]{64}"', etag)
    assert rms(samples(r.content)[1]) > 500
    assert [voice_of(a) for a in espeak_runs] == ["cmn"]

    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # from now on espeak-ng is gone
    again = client.get("/kiosk/voice/zh-CN/choose.wav")
    assert again.status_code == 200 and again.content == r.content
    assert again.headers["etag"] == etag
    same = client.get("/kiosk/voice/zh-CN/choose.wav", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == etag
    assert len(espeak_runs) == 1  # the cache answered all three


def test_elderly_mode_and_english_use_their_speed_and_voice(
        espeak: str, client: TestClient, espeak_runs: list[list[str]]) -> None:
    normal = client.get("/kiosk/voice/zh-CN/pay.wav")
    slow = client.get("/kiosk/voice/zh-CN/pay.wav?elderly=1")
    english = client.get("/kiosk/voice/en/pay.wav?elderly=1")
    assert [r.status_code for r in (normal, slow, english)] == [200, 200, 200]
    assert slow.headers["etag"].startswith('"cmn-130-')
    assert english.headers["etag"].startswith('"en-us-130-')
    assert len(samples(slow.content)[1]) > len(samples(normal.content)[1]) * 1.15
    assert [(voice_of(a), a[a.index("-s") + 1]) for a in espeak_runs] == [
        ("cmn", "175"), ("cmn", "130"), ("en-us", "130")]


def test_configured_voice_and_speeds_are_used(espeak: str, tmp_path: Path,
                                              espeak_runs: list[list[str]]) -> None:
    built = build_container(tmp_path / "yue", voice_name="yue", voice_speed_elderly=110)
    try:
        r = TestClient(create_app(container=built)).get("/kiosk/voice/zh-CN/paid.wav?elderly=1")
    finally:
        built.close()
    assert r.status_code == 200, r.text
    assert [(voice_of(a), a[a.index("-s") + 1]) for a in espeak_runs] == [("yue", "110")]
    # the default cache: a file under the data dir, which every later request reads
    assert (tmp_path / "yue" / "voice" / f"{r.headers['etag'].strip(chr(34))}.wav").exists()


@pytest.mark.parametrize("path", [
    "/kiosk/voice/zh-CN/hello.wav",  # not a prompt
    "/kiosk/voice/zh-CN/err.off.wav",  # a locale key under kiosk.voice., but no prompt
    "/kiosk/voice/fr/choose.wav",  # not a language of ours
    "/kiosk/voice/zh-CN/choose%20now.wav",
    "/kiosk/voice/zh-CN/CHOOSE.wav",
])
def test_only_the_known_prompts_are_spoken(client: TestClient, path: str,
                                           espeak_runs: list[list[str]]) -> None:
    r = client.get(path)
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == "voice_unknown"
    assert body["message"] in ("没有这条语音提示", "There is no such voice prompt")
    assert espeak_runs == []


def test_a_path_that_climbs_out_is_not_a_prompt(client: TestClient,
                                               espeak_runs: list[list[str]]) -> None:
    r = client.get("/kiosk/voice/zh-CN/%2E%2E%2F%2E%2E%2Fchoose.wav")
    assert r.status_code == 404
    assert espeak_runs == []


def test_missing_synthesiser_is_503_with_a_clear_message(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    r = client.get("/kiosk/voice/zh-CN/choose.wav")
    assert r.status_code == 503
    body = r.json()
    assert body["code"] == "voice_unavailable"
    assert "espeak-ng is not installed" in body["detail"]
    assert body["message"].startswith("语音提示暂不可用")
    assert r.headers["cache-control"] == "no-store"  # the kiosk asks again later
    assert r.headers["retry-after"] == "300"
    en = client.get("/kiosk/voice/en/choose.wav")
    assert en.status_code == 503 and en.json()["message"].startswith("Voice prompts are")
    assert not (tmp_path / "voice").exists() or not list((tmp_path / "voice").iterdir())


def test_voice_off_answers_404(tmp_path: Path, espeak_runs: list[list[str]]) -> None:
    built = build_container(tmp_path, voice="off")
    try:
        r = TestClient(create_app(container=built)).get("/kiosk/voice/zh-CN/choose.wav")
    finally:
        built.close()
    assert r.status_code == 404 and r.json()["code"] == "voice_off"
    assert espeak_runs == []


# --- the texts ----------------------------------------------------------------------------


def test_every_prompt_has_its_text_in_both_languages_and_the_script_knows_them() -> None:
    for lang in ("zh-CN", "en"):
        catalog: dict[str, str] = json.loads((LOCALES / f"{lang}.json").read_text("utf-8"))
        for key in PROMPT_KEYS:
            assert catalog.get(f"kiosk.voice.{key}", "").strip(), (lang, key)
        for code in ("unknown", "off", "unavailable"):
            assert catalog.get(f"kiosk.voice.err.{code}"), (lang, code)
    script = (STATIC_DIR / "kiosk_voice.js").read_text(encoding="utf-8")
    listed = re.search(r"var KEYS = \[([^\]]*)\]", script)
    assert listed is not None
    assert set(re.findall(r'"([a-z_]+)"', listed.group(1))) == PROMPT_KEYS
