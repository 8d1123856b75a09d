from __future__ import annotations

import csv
import hashlib
import io
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from PIL import Image

from selfpay.adapters.qr import batch
from selfpay.adapters.qr.batch import build_batch_zip
from selfpay.adapters.qr.cards import CardItem, render_cards_pdf
from selfpay.domain.qrcodes import QrKeyring, code_base, make_payload, verify_payload

BASE = code_base("https://pay.example.cn")
KEYRING = QrKeyring({"1": b"a" * 32, "2": b"b" * 32}, "2")
ONE_BILLER = [("ELEC", f"{i:010d}") for i in range(50)]
MIXED = [("ELEC" if i % 3 else "WATER", f"{i:010d}") for i in range(50)]


def decode(image: Image.Image | np.ndarray, *, pure: bool = True) -> list[zxingcpp.Barcode]:
    return zxingcpp.read_barcodes(
        image,
        formats=zxingcpp.BarcodeFormat.QRCode,
        try_rotate=False,
        try_downscale=not pure,
        try_invert=False,
        is_pure=pure,
    )


def manifest_of(zf: zipfile.ZipFile) -> list[dict[str, str]]:
    text = zf.read(batch.MANIFEST_NAME).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def check_zip(data: bytes, items: list[tuple[str, str]], *, subfolders: bool) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        expected = [f"{b}/{a}.png" if subfolders else f"{a}.png" for b, a in items]
        assert zf.namelist() == [*expected, batch.MANIFEST_NAME]
        rows = manifest_of(zf)
        assert [(r["biller"], r["account"]) for r in rows] == items
        for row, name in zip(rows, expected, strict=True):
            info = zf.getinfo(name)
            assert info.compress_type == zipfile.ZIP_STORED
            png = zf.read(name)
            assert row["file"] == name
            assert row["sha256"] == hashlib.sha256(png).hexdigest()
            assert row["payload"] == make_payload(BASE, KEYRING, row["biller"], row["account"])
            (barcode,) = decode(Image.open(io.BytesIO(png)).convert("L"))
            assert barcode.text == row["payload"]
            assert barcode.extra["Version"] == "3" and barcode.extra["ECLevel"] == "M"
            assert verify_payload(BASE, KEYRING, barcode.text).account == row["account"]
        assert zf.getinfo(batch.MANIFEST_NAME).compress_type == zipfile.ZIP_DEFLATED


@pytest.mark.parametrize("items", [ONE_BILLER, MIXED], ids=["one-biller", "mixed"])
@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "pool"])
def test_every_png_in_the_zip_decodes_to_its_manifest_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, items: list[tuple[str, str]], workers: int
) -> None:
    monkeypatch.setattr(batch, "POOL_THRESHOLD", 10)  # use the pool for 50 items,
    monkeypatch.setattr(batch, "MIN_CHUNK", 8)  # in several chunks
    calls: list[tuple[int, int]] = []
    out = tmp_path / "codes.zip"
    result = build_batch_zip(
        items,
        base=BASE,
        keyring=KEYRING,
        out=out,
        workers=workers,
        progress=lambda done, total: calls.append((done, total)),
    )
    data = out.read_bytes()
    assert (result.count, result.size) == (len(items), len(data))
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert [(m.biller, m.account) for m in result.manifest] == items
    check_zip(data, items, subfolders=items is MIXED)
    assert calls[-1] == (len(items), len(items))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    if workers == 2:
        assert len(calls) > 1  # chunks came back one by one


def test_pool_and_in_process_give_the_same_pngs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "POOL_THRESHOLD", 10)
    one = build_batch_zip(MIXED, base=BASE, keyring=KEYRING, out=io.BytesIO(), workers=1)
    two = build_batch_zip(MIXED, base=BASE, keyring=KEYRING, out=io.BytesIO(), workers=2)
    assert one.manifest == two.manifest


class WriteOnly(io.RawIOBase):
    """A pipe-like output: no seek, no read."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def test_file_objects_seekable_or_not_get_a_valid_zip_and_its_hash() -> None:
    buf = io.BytesIO(b"prefix")
    buf.seek(0, io.SEEK_END)
    result = build_batch_zip(ONE_BILLER[:5], base=BASE, keyring=KEYRING, out=buf)
    written = buf.getvalue()[len(b"prefix") :]
    assert result.sha256 == hashlib.sha256(written).hexdigest()
    assert result.size == len(written)

    pipe = WriteOnly()
    result = build_batch_zip(ONE_BILLER[:5], base=BASE, keyring=KEYRING, out=pipe)
    assert result.sha256 == hashlib.sha256(pipe.data).hexdigest()
    check_zip(bytes(pipe.data), ONE_BILLER[:5], subfolders=False)


def test_duplicate_or_unnormalized_items_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        build_batch_zip(
            [("ELEC", "1"), ("ELEC", "1")], base=BASE, keyring=KEYRING, out=io.BytesIO()
        )
    with pytest.raises(ValueError, match="normalized"):
        build_batch_zip([("elec", "1")], base=BASE, keyring=KEYRING, out=io.BytesIO())


def cards(n: int) -> list[CardItem]:
    return [
        CardItem(
            "ELEC", "城南供电所", account, "张*丰", make_payload(BASE, KEYRING, "ELEC", account)
        )
        for _, account in ONE_BILLER[:n]
    ]


@pytest.mark.parametrize(("n", "pages"), [(1, 1), (8, 1), (9, 2), (17, 3)])
def test_cards_pdf_has_eight_cards_a_page(n: int, pages: int) -> None:
    buf = io.BytesIO()
    assert render_cards_pdf(cards(n), buf) == pages
    assert buf.getvalue().startswith(b"%PDF-")
    assert buf.getvalue().count(b"/Type /Page\n") + buf.getvalue().count(b"/Type /Page ") >= pages


def test_no_cards_is_an_error() -> None:
    with pytest.raises(ValueError):
        render_cards_pdf([], io.BytesIO())


def test_card_codes_decode_from_the_printed_page(tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: cards not decoded")
    items = cards(8)
    render_cards_pdf(items, tmp_path / "cards.pdf")
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "150",
            "-gray",
            "-png",
            str(tmp_path / "cards.pdf"),
            str(tmp_path / "p"),
        ],
        check=True,
    )
    (page,) = tmp_path.glob("p*.png")
    found = {b.text for b in decode(Image.open(page).convert("L"), pure=False)}
    assert found == {item.payload for item in items}


def test_zip64_records_are_written_past_65535_entries() -> None:
    buf = io.BytesIO()
    stream = batch._ZipStream(buf, batch.dt.datetime(2025, 3, 1, 12, 30, 58))
    for i in range(70_000):
        data = str(i).encode()
        stream.add(f"{i}.txt", data, zlib.crc32(data))
    stream.close()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        infos = zf.infolist()
        assert len(infos) == 70_000
        assert infos[-1].date_time == (2025, 3, 1, 12, 30, 58)
        assert zf.read("69999.txt") == b"69999"


def test_an_account_that_looks_like_a_formula_is_text_in_the_manifest(tmp_path: Path) -> None:
    """'-12+3' is a valid account number; in manifest.csv Excel would compute it."""
    items = [("ELEC", "-12+3".replace("+", "-")), ("ELEC", "0012345678")]
    out = tmp_path / "codes.zip"
    build_batch_zip(items, base=BASE, keyring=KEYRING, out=out, workers=1)
    with zipfile.ZipFile(out) as zf:
        rows = manifest_of(zf)
    assert [r["account"] for r in rows] == ["'-12-3", "0012345678"]
    assert rows[0]["payload"] == make_payload(BASE, KEYRING, "ELEC", "-12-3")  # code exact
    assert [batch.spreadsheet_safe(c) for c in ("=1", "+1", "@x", "A-1", "")] == [
        "'=1", "'+1", "'@x", "A-1", ""]
