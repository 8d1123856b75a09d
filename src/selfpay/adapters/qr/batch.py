"""Build a zip of one PNG QR code per account, fast, on every core.

Where the time goes (2-core VM, v3 codes, µs per code on one core): zint encode with
its automatic mask choice ~100, PNG scanlines + zlib + chunks ~30-45, payload HMAC ~4,
PNG sha256 + CRC ~1; in the parent, zip entry ~3 (ZipFile.writestr: ~20) and
unpickling ~2. Encoding dominates, so workers do payload + encode + PNG + hashes for a
chunk of items and send back only bytes; the parent only appends to the zip, in order.

The MAC keys reach the workers through the pool initializer (pickled once per worker
process, never per task) and are never logged.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import multiprocessing
import os
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import IO

from selfpay.adapters.qr.render import render_png
from selfpay.domain.accounts import ACCOUNT_RE, BILLER_RE
from selfpay.domain.qrcodes import QrKeyring, make_payload

__all__ = ["BatchResult", "ManifestRow", "build_batch_zip"]

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("account", "biller", "payload", "sha256", "file")
POOL_THRESHOLD = 200  # below this, starting worker processes costs more than it saves
CHUNK_SIZE = 500  # ~250 KB of PNGs per result message; large enough to hide IPC cost
MIN_CHUNK = 50

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ManifestRow:
    account: str
    biller: str
    payload: str
    sha256: str  # of the PNG bytes
    file: str  # name inside the zip


@dataclass(frozen=True, slots=True)
class BatchResult:
    count: int
    sha256: str  # of the whole zip file
    manifest: list[ManifestRow]
    size: int  # bytes of the zip file


# --- worker side -------------------------------------------------------------------------

_worker_base: str | None = None
_worker_keyring: QrKeyring | None = None


def _init_worker(base: str, keyring: QrKeyring) -> None:
    global _worker_base, _worker_keyring
    _worker_base, _worker_keyring = base, keyring


def _clear_worker() -> None:
    global _worker_base, _worker_keyring
    _worker_base, _worker_keyring = None, None


Rendered = tuple[str, bytes, str, int]  # payload, PNG, sha256 hex of the PNG, CRC-32


def _render_chunk(chunk: Sequence[tuple[str, str]]) -> list[Rendered]:
    """What the zip needs for each (biller, account), in order."""
    base, keyring = _worker_base, _worker_keyring
    if base is None or keyring is None:
        raise RuntimeError("QR batch worker used before _init_worker")
    out = []
    for biller, account in chunk:
        payload = make_payload(base, keyring, biller, account)
        png = render_png(payload)
        out.append((payload, png, hashlib.sha256(png).hexdigest(), zlib.crc32(png)))
    return out


# --- parent side -------------------------------------------------------------------------


def _check_items(items: Sequence[tuple[str, str]]) -> None:
    seen: set[tuple[str, str]] = set()
    for biller, account in items:
        if not BILLER_RE.match(biller) or not ACCOUNT_RE.match(account):
            raise ValueError(f"not a normalized (biller, account): {(biller, account)!r}")
        if (biller, account) in seen:
            raise ValueError(f"duplicate item {(biller, account)!r}; deduplicate first")
        seen.add((biller, account))


def _chunks(items: Sequence[tuple[str, str]], size: int) -> Iterator[Sequence[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _mp_context() -> BaseContext:
    # fork starts workers in milliseconds, but forking a process that runs other
    # threads (a web server) can deadlock in the child; spawn is safe everywhere.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _rendered(
    items: Sequence[tuple[str, str]], *, base: str, keyring: QrKeyring, workers: int
) -> Iterator[tuple[int, list[Rendered]]]:
    """(items done so far, results of the next chunk), in item order."""
    done = 0
    if workers <= 1 or len(items) < POOL_THRESHOLD:
        _init_worker(base, keyring)
        try:
            for chunk in _chunks(items, CHUNK_SIZE // 2):
                results = _render_chunk(chunk)
                done += len(results)
                yield done, results
        finally:
            _clear_worker()  # do not leave the keys in a module global
        return
    # Small enough chunks that both workers stay busy until the end.
    size = max(MIN_CHUNK, min(CHUNK_SIZE, len(items) // (workers * 4)))
    with _mp_context().Pool(workers, initializer=_init_worker, initargs=(base, keyring)) as pool:
        for results in pool.imap(_render_chunk, _chunks(items, size)):
            done += len(results)
            yield done, results


class _ZipStream:
    """A zip written strictly front to back: every entry's CRC and size are known
    before it is written, so no local header is patched afterwards.

    Why not zipfile: ZipFile.writestr costs ~20 µs an entry in the parent (it seeks
    back to rewrite each local header), a fifth of a worker's time per code, and it
    cannot hash an output it seeks in. This writer costs ~3 µs and hashes as it goes.
    ZIP64 records are added when the archive needs them (> 65,535 entries or > 4 GiB).
    """

    _LOCAL = struct.Struct("<IHHHHHIIIHH")
    _CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")

    def __init__(self, raw: IO[bytes], when: dt.datetime) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.offset = 0
        self.count = 0
        self.central: list[bytes] = []
        self.dos_time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
        self.dos_date = ((max(when.year, 1980) - 1980) << 9) | (when.month << 5) | when.day

    def _write(self, data: bytes) -> None:
        self.raw.write(data)
        self.digest.update(data)
        self.offset += len(data)

    def add(
        self, name: str, data: bytes, crc: int, *, size: int | None = None, deflated: bool = False
    ) -> None:
        """`data` as stored (raw deflate if `deflated`); `size` and `crc` of the original."""
        encoded = name.encode("ascii")  # account numbers and biller codes are ASCII
        plain = len(data) if size is None else size
        if plain >= 0xFFFFFFFF or len(data) >= 0xFFFFFFFF:
            raise ValueError(f"zip entry {name} is too large")
        method = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
        offset = self.offset
        needed = 45 if offset >= 0xFFFFFFFF else 20
        extra = struct.pack("<HHQ", 1, 8, offset) if needed == 45 else b""
        self._write(
            self._LOCAL.pack(
                0x04034B50,
                20,
                0,
                method,
                self.dos_time,
                self.dos_date,
                crc,
                len(data),
                plain,
                len(encoded),
                0,
            )
            + encoded
        )
        self._write(data)
        self.central.append(
            self._CENTRAL.pack(
                0x02014B50,
                (3 << 8) | needed,
                needed,
                0,
                method,
                self.dos_time,
                self.dos_date,
                crc,
                len(data),
                plain,
                len(encoded),
                len(extra),
                0,
                0,
                0,
                0o100644 << 16,
                min(offset, 0xFFFFFFFF),
            )
            + encoded
            + extra
        )
        self.count += 1

    def close(self) -> None:
        start = self.offset
        for entry in self.central:
            self._write(entry)
        size = self.offset - start
        count = self.count
        if count >= 0xFFFF or start >= 0xFFFFFFFF or size >= 0xFFFFFFFF:
            end64 = self.offset
            self._write(
                struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, size, start)
            )
            self._write(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
        self._write(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                min(count, 0xFFFF),
                min(count, 0xFFFF),
                min(size, 0xFFFFFFFF),
                min(start, 0xFFFFFFFF),
                0,
            )
        )
        self.raw.flush()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet will not run: one that starts like a formula ("-12+3" is an
    account number here, and Excel would compute it) gets a leading apostrophe, which
    Excel and LibreOffice show as text and do not display (OWASP's CSV injection rule)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _manifest_bytes(rows: list[ManifestRow]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows((spreadsheet_safe(r.account), r.biller, r.payload, r.sha256, r.file)
                     for r in rows)
    # BOM so that Excel opens it as UTF-8; the text itself is exact for machines.
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _write_zip(
    raw: IO[bytes],
    items: Sequence[tuple[str, str]],
    *,
    base: str,
    keyring: QrKeyring,
    workers: int,
    progress: Progress | None,
) -> BatchResult:
    subfolders = len({biller for biller, _ in items}) > 1
    zf = _ZipStream(raw, dt.datetime.now())
    manifest: list[ManifestRow] = []
    total = len(items)
    for done, results in _rendered(items, base=base, keyring=keyring, workers=workers):
        for (biller, account), (payload, png, digest, crc) in zip(
            items[done - len(results) : done], results, strict=True
        ):
            name = f"{biller}/{account}.png" if subfolders else f"{account}.png"
            # PNGs are deflated already: storing is 3x faster than deflating them
            # again and the archive does not get larger.
            zf.add(name, png, crc)
            manifest.append(ManifestRow(account, biller, payload, digest, name))
        if progress is not None:
            progress(done, total)
    text = _manifest_bytes(manifest)
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate, as zip stores it
    zf.add(
        MANIFEST_NAME,
        packer.compress(text) + packer.flush(),
        zlib.crc32(text),
        size=len(text),
        deflated=True,
    )
    zf.close()
    return BatchResult(len(manifest), zf.digest.hexdigest(), manifest, zf.offset)


def build_batch_zip(
    items: Sequence[tuple[str, str]],
    *,
    base: str,
    keyring: QrKeyring,
    out: str | os.PathLike[str] | IO[bytes],
    workers: int | None = None,
    progress: Progress | None = None,
) -> BatchResult:
    """Write `<account>.png` per (biller, account) — under `<biller>/` when billers
    mix — plus manifest.csv, to `out` (a path or a binary file, written front to back
    without seeking). Items must be normalized and unique (sheets.validate_batch_rows
    gives such a list)."""
    _check_items(items)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if isinstance(out, str | os.PathLike):
        with Path(out).open("wb", buffering=1 << 20) as fh:
            return _write_zip(
                fh, items, base=base, keyring=keyring, workers=n_workers, progress=progress
            )
    return _write_zip(out, items, base=base, keyring=keyring, workers=n_workers, progress=progress)
