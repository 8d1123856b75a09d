"""STOMP 1.2 frame reading and writing for the STOMP transport, at C speed.

stompman's own FrameParser walks every byte of every frame (headers *and* body) in
Python, which measured as the largest cost of a bridge round trip: a reply frame of
~800 bytes took ~0.2 ms of CPU to parse, more than everything else the bridge does.
This parser finds line ends, `content-length` bodies and NUL terminators with
bytes.find and slicing, and builds the same stompman frame objects. The writer escapes
headers with str.translate. Same behaviour as stompman's: EOLs between frames are
heartbeats, the first of a repeated header wins, frames of unknown commands and headers
that are not UTF-8 are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from stompman.frames import (
    AnyClientFrame,
    AnyServerFrame,
    ConnectFrame,
    HeartbeatFrame,
)
from stompman.serde import COMMANDS_TO_FRAMES, FRAMES_TO_COMMANDS, FRAMES_WITH_BODY

_UNESCAPE: Final = {"n": "\n", "c": ":", "\\": "\\", "r": "\r"}
_ESCAPE: Final = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})
_HEARTBEAT: Final = HeartbeatFrame()


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(_UNESCAPE.get(text[i + 1], ""))  # an undefined escape is dropped
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class FrameParser:
    """Incremental: feed chunks as they arrive, get the complete frames back."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def parse_frames_from_chunk(self, chunk: bytes) -> Iterator[AnyServerFrame | AnyClientFrame]:
        buf = self._buf
        buf += chunk
        frames: list[Any] = []
        pos = 0
        size = len(buf)
        while pos < size:
            first = buf[pos]
            if first == 0x0A:  # an EOL between frames is a heartbeat
                frames.append(_HEARTBEAT)
                pos += 1
                continue
            if first == 0x0D:
                if pos + 1 >= size:
                    break
                if buf[pos + 1] == 0x0A:
                    frames.append(_HEARTBEAT)
                    pos += 2
                else:
                    pos += 1
                continue
            if first == 0x00:  # a stray NUL (stompman ignores it too)
                pos += 1
                continue
            parsed = self._frame_at(buf, pos, size)
            if parsed is None:
                break  # incomplete: wait for more bytes
            frame, pos = parsed
            if frame is not None:
                frames.append(frame)
        if pos:
            del buf[:pos]
        return iter(frames)

    @staticmethod
    def _frame_at(buf: bytearray, pos: int, size: int) -> tuple[Any, int] | None:
        # The header block ends at the first empty line: LF LF, or LF CR LF.
        end = buf.find(b"\n\n", pos, size)
        crlf = buf.find(b"\n\r\n", pos, end if end >= 0 else size)
        if crlf >= 0:
            p = crlf + 3
            block = buf[pos:crlf]
        elif end >= 0:
            p = end + 2
            block = buf[pos:end]
        else:
            return None
        headers, content_length, command = _headers(block)
        if content_length is not None and 0 <= content_length:
            stop = p + content_length
            if stop >= size:
                return None
            if buf[stop] != 0x00:  # a wrong length: fall back to the NUL
                nul = buf.find(b"\x00", stop, size)
                if nul < 0:
                    return None
                stop = nul
        else:
            stop = buf.find(b"\x00", p, size)
            if stop < 0:
                return None
        frame_type: Any = COMMANDS_TO_FRAMES.get(command)
        if frame_type is None:
            return None, stop + 1  # an unknown command: dropped
        frame = (frame_type(headers=headers, body=bytes(buf[p:stop]))
                 if frame_type in FRAMES_WITH_BODY else frame_type(headers=headers))
        return frame, stop + 1


def _headers(block: bytearray) -> tuple[dict[str, str], int | None, bytes]:
    """The headers (first of a repeated one wins), content-length and command of a
    header block, decoded in one go (line by line only when it is not all UTF-8: such
    lines are dropped)."""
    try:
        text = block.decode()
    except UnicodeDecodeError:
        lines = [line.removesuffix(b"\r") for line in bytes(block).split(b"\n")]
        command = lines[0]
        decoded: list[str] = []
        for raw in lines[1:]:
            try:
                decoded.append(raw.decode())
            except UnicodeDecodeError:
                continue
    else:
        if "\r" in text:  # CR LF line ends (the block's last one is cut before its LF)
            text = text.replace("\r\n", "\n").removesuffix("\r")
        command_text, _, rest = text.partition("\n")
        command, decoded = command_text.encode(), rest.split("\n") if rest else []
    headers: dict[str, str] = {}
    for line in decoded:
        key, colon, value = line.partition(":")
        if not colon:
            continue
        if "\\" in line:
            key, value = _unescape(key), _unescape(value)
        if key not in headers:
            headers[key] = value
    length = headers.get("content-length")
    if length is None:  # STOMP names are case-sensitive, but be lenient like stompman
        length = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
    try:
        content_length = int(length) if length is not None else None
    except ValueError:
        content_length = None
    return headers, content_length, command


def dump_frame(frame: AnyClientFrame) -> bytes:
    """The bytes of a client frame (headers sorted, escaped except in CONNECT)."""
    items = sorted(frame.headers.items())
    head = "".join([f"{k}:{v}\n" for k, v in items])
    # Escaping is rarely needed: it is iff a name or value holds one of \\ : LF CR, i.e.
    # iff the joined block has more than one colon and one LF per header, or a \\ or CR.
    if not isinstance(frame, ConnectFrame) and (
            head.count(":") != len(items) or head.count("\n") != len(items)
            or "\\" in head or "\r" in head):
        head = "".join(f"{k.translate(_ESCAPE)}:{str(v).translate(_ESCAPE)}\n" for k, v in items)
    body: bytes = frame.body if isinstance(frame, FRAMES_WITH_BODY) else b""
    return b"".join((FRAMES_TO_COMMANDS[type(frame)], b"\n", head.encode(), b"\n", body, b"\x00"))
