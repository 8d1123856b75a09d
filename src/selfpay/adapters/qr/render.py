"""Render one QR payload as PNG, SVG or PDF.

PNG is the batch hot path: libzint (zint-bindings) encodes at level M with its standard
automatic mask choice, and the PNG is written here by hand. SVG and PDF go through
segno, whose vector writers are fine at interactive speed.

Measured on the 2-core build VM for a 55-character version 3 payload (µs per code):
zint encode with automatic mask 100 (a fixed mask would be 9: the mask evaluation is
~90 % of encoding), scanlines 14, zlib 21, chunks + CRCs ~3. segno's own PNG writer
takes ~1,900 µs, PIL's ~1,100 µs.
"""

from __future__ import annotations

import binascii
import io
import struct
import zlib
from pathlib import PurePath
from typing import Literal

import numpy as np
import segno
import zint

Format = Literal["png", "svg", "pdf"]
FORMATS: tuple[Format, ...] = ("png", "svg", "pdf")

# Over 5,000 different v3 codes: level 1 takes 21 µs for 502 B, level 2 24 µs / 478 B,
# level 6 87 µs / 363 B. Level 1: the zip is stored, a few % of size is not worth
# 15 % more PNG time. (Smaller windows/memLevels were all slower, not faster.)
PNG_ZLIB_LEVEL = 1

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", binascii.crc32(b"IEND"))

# zint packs a symbol row LSB-first, 1 = dark. At scale 8 one module is exactly one
# byte of a 1-bit scanline (0x00 dark, 0xFF light), so a 256-entry table expands
# eight modules at a time without numpy's per-call overhead.
_EXPAND8 = [bytes(0x00 if (v >> i) & 1 else 0xFF for i in range(8)) for v in range(256)]


class _Encoder:
    """One reusable zint symbol per process: creating a Symbol per code costs ~3 µs."""

    def __init__(self) -> None:
        self.symbol = zint.Symbol()
        self.symbol.symbology = zint.Symbology.QRCODE
        self.symbol.option_1 = 2  # ECC level M; option_3 stays 0 = automatic mask

    def encode(self, payload: str) -> zint.Symbol:
        symbol = self.symbol
        # zint only sets bits in encoded_data; without clear() the previous code's
        # dark modules stay in the matrix and the result does not decode.
        symbol.clear()
        symbol.encode(payload)
        return symbol


_encoder: _Encoder | None = None


def _symbol(payload: str) -> zint.Symbol:
    global _encoder
    if _encoder is None:
        _encoder = _Encoder()
    return _encoder.encode(payload)


def _module_rows(symbol: zint.Symbol) -> tuple[int, int, bytes]:
    """(size, bytes per packed row, packed rows) of the symbol zint just encoded."""
    size = int(symbol.width)
    per_row = (size + 7) // 8
    packed = np.asarray(symbol.encoded_data)[: symbol.rows, :per_row].tobytes()
    return size, per_row, packed


def _scanlines_scale8(size: int, per_row: int, packed: bytes, border: int) -> bytes:
    width = size + 2 * border
    quiet = b"\xff" * border
    # Filter 2 (Up) makes the 7 repeated scanlines of a module row all zero bytes.
    repeat = (b"\x02" + b"\x00" * width) * 7
    white = ((b"\x00" + b"\xff" * width) + repeat) * border
    expanded = b"".join(map(_EXPAND8.__getitem__, packed))
    lead = b"\x00" + quiet
    tail = quiet + repeat
    step = per_row * 8
    rows = [lead + expanded[i : i + size] + tail for i in range(0, len(expanded), step)]
    return white + b"".join(rows) + white


def _scanlines_any(size: int, per_row: int, packed: bytes, scale: int, border: int) -> bytes:
    rows = np.frombuffer(packed, dtype=np.uint8).reshape(-1, per_row)
    modules = np.unpackbits(rows, axis=1, bitorder="little")[:, :size]
    modules = np.pad(modules, border)
    pixels = np.repeat(modules, scale, axis=1) if scale > 1 else modules
    line = np.packbits(pixels, axis=1)  # MSB first, as PNG wants
    np.invert(line, out=line)  # PNG grey: 1 = white
    height = modules.shape[0] * scale
    out = np.zeros((height, line.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 2  # Up: repeated scanlines become zeros
    out[::scale, 0] = 0
    out[::scale, 1:] = line
    return out.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", binascii.crc32(data, binascii.crc32(kind)))
    )


def _png(size: int, per_row: int, packed: bytes, scale: int, border: int) -> bytes:
    if scale == 8:
        raw = _scanlines_scale8(size, per_row, packed, border)
    else:
        raw = _scanlines_any(size, per_row, packed, scale, border)
    side = (size + 2 * border) * scale
    # 1-bit greyscale, no interlace: the smallest PNG a scanner reads. Written by hand
    # because segno/PIL/pypng all take >1 ms per code to get from a matrix to this.
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, PNG_ZLIB_LEVEL))
        + _IEND
    )


def render_png(payload: str, *, scale: int = 8, border: int = 4) -> bytes:
    if scale < 1 or border < 0:
        raise ValueError(f"scale must be >= 1 and border >= 0, got {scale} and {border}")
    size, per_row, packed = _module_rows(_symbol(payload))
    return _png(size, per_row, packed, scale, border)


def qr_version(payload: str) -> int:
    """Version of the symbol zint builds for this payload at level M (size = 17 + 4v)."""
    return (int(_symbol(payload).width) - 17) // 4


def _segno(payload: str) -> segno.QRCode:
    # boost_error=False keeps level M, the same symbol class as the PNG path.
    return segno.make_qr(payload, error="m", boost_error=False)


def render_svg(payload: str, *, scale: int = 8, border: int = 4) -> bytes:
    buf = io.BytesIO()
    _segno(payload).save(buf, kind="svg", scale=scale, border=border, xmldecl=True)
    return buf.getvalue()


def render_pdf(payload: str, *, scale: int = 8, border: int = 4) -> bytes:
    buf = io.BytesIO()
    _segno(payload).save(buf, kind="pdf", scale=scale, border=border)
    return buf.getvalue()


def render(payload: str, fmt: Format) -> bytes:
    if fmt == "png":
        return render_png(payload)
    if fmt == "svg":
        return render_svg(payload)
    if fmt == "pdf":
        return render_pdf(payload)
    raise ValueError(f"unknown QR image format {fmt!r}; use one of: {', '.join(FORMATS)}")


def format_for_path(path: str | PurePath) -> Format:
    """'card.PNG' -> 'png'; anything but .png/.svg/.pdf is a ValueError naming them."""
    suffix = PurePath(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        shown = f"'.{suffix}'" if suffix else "no suffix"
        raise ValueError(
            f"cannot tell the QR image format of {str(path)!r} ({shown}); "
            "end the file name with .png, .svg or .pdf"
        )
    return suffix
