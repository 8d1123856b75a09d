"""The kiosk's spoken prompts: espeak-ng (Debian's `espeak-ng`) run offline on the server,
and a file cache of what it said.

Only a fixed list of prompts is ever spoken (PROMPT_KEYS; their texts are the locale
keys kiosk.voice.<key>): nothing a customer types reaches the synthesiser. A prompt is
made on first use and kept under <data_dir>/voice/ as <voice>-<speed>-<sha256 of the
text>.wav, written to a temporary file and renamed into place, so a reader never sees half
a file and two processes that make the same prompt at once both end with a whole one.

Each machine keeps a cache of its own, on purpose: a prompt is a pure function of (voice,
speed, text), so every `selfpay serve` process on every machine makes the same file (or
one as good) from the locale files it ships with, and nothing needs to be shared.

Served as the WAV espeak-ng writes (16-bit mono 22 kHz; 150-650 KB a prompt) rather than
converted with sox to Ogg (about 14 times smaller): every browser plays WAV, the kiosk
keeps each file for a day and then revalidates it by ETag (a 304), so the whole set
(11 prompts, two languages, two speeds, about 5 MB) crosses the network about once per
terminal, and there is no second program to install or to fail.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from selfpay.services.ports import SpeechSynthesiser, SpeechUnavailable

log = logging.getLogger(__name__)

# The kiosk's steps and states that have a prompt (static/kiosk_voice.js says them).
PROMPT_KEYS = frozenset({
    "choose", "identify", "identify_plate", "confirm_plate", "confirm", "pay", "paid",
    "receipt", "idle", "failed", "reconnecting",
})
# A voice name is a word, never an option: "-w /etc/x" cannot be passed as a voice.
VOICE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,39}")
INSTALL_HINT = "install it with scripts/voice.sh install (apt-get install espeak-ng)"


class EspeakNg:
    """SpeechSynthesiser on Debian's espeak-ng: one process per prompt, no shell, the text
    on standard input (so no text is ever read as an option), killed after `timeout_s`."""

    def __init__(self, binary: str = "espeak-ng", *, timeout_s: float = 15.0) -> None:
        self.binary = binary
        self.timeout_s = timeout_s

    def synthesise(self, text: str, *, voice: str, speed: int) -> bytes:
        if not VOICE_NAME.fullmatch(voice):
            raise ValueError(f"not an espeak-ng voice name: {voice!r}")
        if not 80 <= speed <= 450:
            raise ValueError(f"espeak-ng speed must be 80-450 words per minute, not {speed}")
        path = shutil.which(self.binary)
        if path is None:
            raise SpeechUnavailable(f"{self.binary} is not installed: {INSTALL_HINT}")
        with tempfile.TemporaryDirectory(prefix="selfpay-voice-") as tmp:
            out = Path(tmp) / "prompt.wav"
            # -w rather than --stdout: on a pipe espeak-ng cannot go back to write the
            # lengths into the WAV header and leaves 0x7fffffff there. -b 1: UTF-8 input.
            argv = [path, "-v", voice, "-s", str(speed), "-b", "1", "-w", str(out), "--stdin"]
            try:
                done = subprocess.run(argv, input=text.encode("utf-8"), capture_output=True,
                                      timeout=self.timeout_s, check=False)
            except subprocess.TimeoutExpired:
                raise SpeechUnavailable(
                    f"{self.binary} did not finish within {self.timeout_s:g} s") from None
            except OSError as exc:
                raise SpeechUnavailable(f"{self.binary} could not run: {exc}") from None
            said = done.stderr.decode("utf-8", "replace").strip()
            if done.returncode != 0 or not out.exists():  # e.g. an unknown voice
                raise SpeechUnavailable(f"{self.binary} -v {voice} failed (exit "
                                        f"{done.returncode}): {said or 'no message'}")
            wav = out.read_bytes()
        if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
            raise SpeechUnavailable(f"{self.binary} wrote something that is not a WAV file")
        return wav


@dataclass(frozen=True, slots=True)
class Prompt:
    """One cached prompt: its file and its ETag (the cache key, quoted)."""

    path: Path
    etag: str


class PromptCache:
    """Prompts as files under `directory`, keyed by (voice, speed, sha256 of the text);
    made with `synthesiser` on first use. Within a process one prompt is made once at a
    time (the first kiosks after a restart all ask for "choose"); across processes the
    atomic rename makes a race harmless."""

    def __init__(self, synthesiser: SpeechSynthesiser, directory: Path) -> None:
        self.synthesiser = synthesiser
        self.directory = directory
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @staticmethod
    def key(text: str, *, voice: str, speed: int) -> str:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{voice}-{speed}-{digest}"

    def get(self, text: str, *, voice: str, speed: int) -> Prompt:
        """The prompt's file, made now if this machine has not made it before. Raises
        SpeechUnavailable when it must be made and cannot be."""
        key = self.key(text, voice=voice, speed=speed)
        path = self.directory / f"{key}.wav"
        prompt = Prompt(path=path, etag=f'"{key}"')
        if path.exists():
            return prompt
        with self._lock_for(key):
            if path.exists():  # made by the thread we waited for
                return prompt
            wav = self.synthesiser.synthesise(text, voice=voice, speed=speed)
            self._write(path, wav)
            log.info("voice prompt made: %s (%d bytes)", path.name, len(wav))
        return prompt

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _write(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".part-", suffix=".wav")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
