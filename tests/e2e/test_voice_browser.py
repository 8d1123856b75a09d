"""static/kiosk_voice.js in Debian's chromium against the live server: KioskVoice.say()
asks for the right prompt and the browser plays it (headless chromium has no sound card
and plays into its fake audio output); muted, it asks for nothing.

The page under test is a minimal one served at the live server's origin by playwright
(the real kiosk screen is another module's): it loads /static/kiosk_voice.js, and the
audio comes from the real GET /kiosk/voice/... with real espeak-ng.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

pytestmark = pytest.mark.browser
# tests/e2e/conftest.py's, and the kiosk's: sound may play before the first touch
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
KIOSK_ARGS = [*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"]


class LiveServer(Protocol):  # the `live_server` fixture of tests/e2e/conftest.py
    url: str
    data_dir: Path


@pytest.fixture(scope="module")
def espeak() -> None:
    if shutil.which("espeak-ng") is None:
        reason = "espeak-ng is not installed (scripts/voice.sh install)"
        if os.environ.get("SELFPAY_REQUIRE_SERVERS") == "1":
            pytest.fail(reason + " and SELFPAY_REQUIRE_SERVERS=1")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def kiosk_browser(playwright_session: Any, chromium_path: Path) -> Iterator[Any]:
    """Chromium as the kiosk runs it: sound may play before the first touch."""
    launched = playwright_session.chromium.launch(executable_path=str(chromium_path), headless=True,
                                          args=KIOSK_ARGS)
    try:
        yield launched
    finally:
        launched.close()


def open_page(browser: Any, live_server: LiveServer, *, lang: str = "zh-CN",
              attrs: str = 'data-voice="elderly" data-elderly="1"',
              script: str = "") -> tuple[Any, list[str]]:
    """A page at <server>/voice-test that loads kiosk_voice.js (and runs `script` when it
    has loaded); and the list of the paths of the prompts it asks the server for."""
    page = browser.new_page()
    html = (f'<!doctype html><html lang="{lang}" {attrs}><head><meta charset="utf-8">'
            '<script src="/static/kiosk_voice.js"></script></head>'
            '<body><button id="touch">touch</button>'
            f'<script>{script}</script></body></html>')
    page.route(f"{live_server.url}/voice-test",
               lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url.removeprefix(live_server.url))
            if "/kiosk/voice/" in r.url else None)
    page.goto(f"{live_server.url}/voice-test")
    return page, asked


# Resolves with the events of the prompt's <audio> up to `ended` (or an error), and
# what was asked to play.
PLAY = """key => new Promise(resolve => {
  const a = KioskVoice.audio, seen = [];
  for (const name of ["playing", "ended", "error"]) {
    a.addEventListener(name, () => {
      seen.push(name);
      if (name !== "playing") resolve({seen, src: a.currentSrc, duration: a.duration,
                                        error: a.error && a.error.code});
    });
  }
  if (!KioskVoice.say(key)) resolve({seen: ["not said"]});
  setTimeout(() => resolve({seen, timeout: true}), 20000);
})"""


def assert_played(result: dict[str, Any]) -> None:
    """It played to its end (a stall while it loads may repeat `playing`)."""
    seen = result["seen"]
    assert "playing" in seen and seen[-1] == "ended" and "error" not in seen, result


def test_say_plays_the_prompt_of_the_page_language_in_elderly_mode(
        espeak: None, kiosk_browser: Any, live_server: LiveServer) -> None:
    page, asked = open_page(kiosk_browser, live_server)
    try:
        result = page.evaluate(PLAY, "choose")
        assert_played(result)
        assert result["src"] == f"{live_server.url}/kiosk/voice/zh-CN/choose.wav?elderly=1"
        assert 0.5 < result["duration"] < 10
        assert asked and set(asked) == {"/kiosk/voice/zh-CN/choose.wav?elderly=1"}
        # made on the server with the Mandarin voice at the elderly speed, and kept
        assert list((live_server.data_dir / "voice").glob("cmn-130-*.wav"))
    finally:
        page.close()


def test_english_page_at_normal_speed_when_the_server_says_always(
        espeak: None, kiosk_browser: Any, live_server: LiveServer) -> None:
    page, asked = open_page(kiosk_browser, live_server, lang="en", attrs='data-voice="always"')
    try:
        result = page.evaluate(PLAY, "paid")
        assert_played(result)
        assert asked and set(asked) == {"/kiosk/voice/en/paid.wav"}
    finally:
        page.close()


def test_muted_or_not_elderly_or_unknown_asks_for_nothing(
        espeak: None, kiosk_browser: Any, live_server: LiveServer) -> None:
    page, asked = open_page(kiosk_browser, live_server, attrs='data-voice="elderly"')
    try:
        # elderly-only voice, and this customer is not in elderly mode
        assert page.evaluate("KioskVoice.say('choose')") is False
        page.evaluate("KioskVoice.setElderly(true)")
        page.evaluate("KioskVoice.setMuted(true)")
        assert page.evaluate("KioskVoice.muted") is True
        assert page.evaluate("KioskVoice.say('choose')") is False
        assert page.evaluate("KioskVoice.say('no-such-step')") is False
        page.click("#touch")
        page.wait_for_timeout(500)
        assert asked == []
        assert page.evaluate("KioskVoice.audio.paused") is True

        # the mute outlives a reload (same customer) ...
        assert page.evaluate("sessionStorage.getItem('selfpay.kiosk.voiceMuted')") == "1"
        page.reload()
        assert page.evaluate("KioskVoice.muted") is True
        # ... and ends with the idle reset (next customer)
        page.evaluate("KioskVoice.reset()")
        assert page.evaluate("KioskVoice.muted") is False
        assert page.evaluate("sessionStorage.getItem('selfpay.kiosk.voiceMuted')") is None
        page.evaluate("KioskVoice.setElderly(true)")
        result = page.evaluate(PLAY, "paid")
        assert_played(result)
        assert set(asked) == {"/kiosk/voice/zh-CN/paid.wav?elderly=1"}
    finally:
        page.close()


def test_muting_stops_a_prompt_that_is_playing(
        espeak: None, kiosk_browser: Any, live_server: LiveServer) -> None:
    page, _ = open_page(kiosk_browser, live_server)
    try:
        page.evaluate("""() => new Promise(resolve => {
            KioskVoice.audio.addEventListener("playing", resolve, {once: true});
            KioskVoice.say("pay");
        })""")
        page.evaluate("KioskVoice.setMuted(true)")
        assert page.evaluate("KioskVoice.audio.paused") is True
    finally:
        page.close()


def test_without_a_touch_the_browser_refuses_and_say_waits_for_one(
        espeak: None, playwright_session: Any, chromium_path: Path,
        live_server: LiveServer) -> None:
    """Chromium's own autoplay policy (no kiosk flag): play() is refused before the first
    touch; say() does not throw, and the prompt plays at the touch."""
    browser = playwright_session.chromium.launch(
        executable_path=str(chromium_path), headless=True,
        args=[*CHROMIUM_ARGS, "--autoplay-policy=document-user-activation-required"])
    try:
        # said by the page itself: playwright's evaluate() counts as a user gesture
        page, asked = open_page(browser, live_server, script="""
            window.seen = [];
            KioskVoice.audio.addEventListener("playing", () => seen.push("playing"));
            window.said = KioskVoice.say("identify");""")
        page.wait_for_timeout(1500)
        assert page.evaluate("window.said") is True
        assert page.evaluate("window.seen") == []  # refused: no touch yet
        page.click("#touch")
        page.wait_for_function("window.seen.includes('playing')", timeout=10000)
        assert set(asked) == {"/kiosk/voice/zh-CN/identify.wav?elderly=1"}
    finally:
        browser.close()
