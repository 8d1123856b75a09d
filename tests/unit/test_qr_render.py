"""Every code these tests make is decoded with zxing-cpp; no golden image bytes, because
libraries legitimately choose different masks."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from PIL import Image

from selfpay.adapters.qr.render import (
    format_for_path,
    qr_version,
    render,
    render_pdf,
    render_png,
    render_svg,
)
from selfpay.domain.qrcodes import QrKeyring, code_base, make_payload

BASE = code_base("https://pay.example.cn")
KEYRING = QrKeyring({"1": b"k" * 32}, "1")
PAYLOAD = make_payload(BASE, KEYRING, "ELEC", "0012345678")


def decode(image: Image.Image | np.ndarray, *, pure: bool = True) -> list[zxingcpp.Barcode]:
    return zxingcpp.read_barcodes(
        image,
        formats=zxingcpp.BarcodeFormat.QRCode,
        try_rotate=False,
        try_downscale=not pure,
        try_invert=False,
        is_pure=pure,
    )


def decode_png(png: bytes) -> list[zxingcpp.Barcode]:
    return decode(Image.open(io.BytesIO(png)).convert("L"))


def assert_small_and_at_least_m(barcode: zxingcpp.Barcode) -> None:
    assert int(barcode.extra["Version"]) <= 3
    assert barcode.extra["ECLevel"] in {"M", "Q", "H"}  # segno may boost; never below M


def test_png_decodes_to_the_exact_payload_at_version_3_level_m() -> None:
    (barcode,) = decode_png(render_png(PAYLOAD))
    assert barcode.text == PAYLOAD
    assert barcode.extra["Version"] == "3"
    assert barcode.extra["ECLevel"] == "M"
    assert qr_version(PAYLOAD) == 3


def test_png_is_a_1_bit_greyscale_image_with_quiet_zone() -> None:
    image = Image.open(io.BytesIO(render_png(PAYLOAD)))
    assert image.mode == "1"
    assert image.size == ((29 + 2 * 4) * 8,) * 2
    pixels = np.asarray(image.convert("L"))
    assert pixels[: 4 * 8].min() == 255 and pixels[:, : 4 * 8].min() == 255  # quiet zone
    assert pixels[4 * 8, 4 * 8] == 0  # finder pattern corner


@pytest.mark.parametrize(("scale", "border"), [(1, 4), (2, 1), (3, 2), (5, 4), (8, 0), (10, 6)])
def test_png_decodes_at_any_scale_and_border(scale: int, border: int) -> None:
    image = Image.open(io.BytesIO(render_png(PAYLOAD, scale=scale, border=border))).convert("L")
    assert image.size == ((29 + 2 * border) * scale,) * 2
    if border == 0:  # zxing wants some quiet zone; add it around the image
        image = Image.fromarray(np.pad(np.asarray(image), 4 * scale, constant_values=255))
    if scale < 3:  # zxing needs a few pixels per module
        image = image.resize((image.width * 4, image.height * 4), Image.Resampling.NEAREST)
    (barcode,) = decode(image)
    assert barcode.text == PAYLOAD


def test_consecutive_codes_do_not_share_modules() -> None:
    # zint reuses its symbol; a previous code's modules must not leak into the next.
    long = BASE + "ELEC/" + "9" * 32 + "/1AAAAAAAAAAAAA"
    short = make_payload(BASE, KEYRING, "W", "1")
    for payload in (long, short, long, PAYLOAD, short):
        (barcode,) = decode_png(render_png(payload))
        assert barcode.text == payload


def test_invalid_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        render_png(PAYLOAD, scale=0)


def _svg_modules(svg: bytes) -> np.ndarray:
    """Rasterize segno's 'h'-line path at one pixel per module."""
    text = svg.decode()
    side = int(re.search(r'width="(\d+)"', text).group(1)) // 8  # type: ignore[union-attr]
    path = re.search(r' d="([^"]+)"', text).group(1)  # type: ignore[union-attr]
    grid = np.full((side, side), 255, dtype=np.uint8)
    x = y = 0.0
    for cmd, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        else:
            grid[int(y), int(x) : int(x + float(a))] = 0
            x += float(a)
    return grid


def test_svg_has_the_module_count_of_version_3_and_decodes() -> None:
    svg = render_svg(PAYLOAD)
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    assert b'width="296"' in svg  # (29 modules + 2 x 4 quiet) x 8
    grid = _svg_modules(svg)
    assert grid.shape == (37, 37)
    big = np.repeat(np.repeat(grid, 8, axis=0), 8, axis=1)
    (barcode,) = decode(big)
    assert barcode.text == PAYLOAD
    assert_small_and_at_least_m(barcode)


def test_pdf_is_a_pdf_whose_rendering_decodes(tmp_path: Path) -> None:
    pdf = render_pdf(PAYLOAD)
    assert pdf.startswith(b"%PDF-")
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: PDF not decoded")
    (tmp_path / "code.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "150", "-gray", "-png", str(tmp_path / "code.pdf"), str(tmp_path / "p")],
        check=True,
    )
    (page,) = tmp_path.glob("p*.png")
    (barcode,) = decode(Image.open(page).convert("L"), pure=False)
    assert barcode.text == PAYLOAD
    assert_small_and_at_least_m(barcode)


def test_render_dispatches_on_format() -> None:
    assert render(PAYLOAD, "png").startswith(b"\x89PNG\r\n\x1a\n")
    assert render(PAYLOAD, "svg").startswith(b"<?xml")
    assert render(PAYLOAD, "pdf").startswith(b"%PDF-")
    with pytest.raises(ValueError, match="png, svg, pdf"):
        render(PAYLOAD, "gif")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "fmt"), [("a.png", "png"), ("dir/A.PNG", "png"), ("c.svg", "svg"), ("d.Pdf", "pdf")]
)
def test_format_comes_from_the_suffix(path: str, fmt: str) -> None:
    assert format_for_path(path) == fmt
    assert format_for_path(Path(path)) == fmt


@pytest.mark.parametrize("path", ["code.jpg", "code", "code.png.txt"])
def test_unknown_suffix_names_the_accepted_ones(path: str) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        format_for_path(path)
