"""Print-ready A4 payment cards: QR code, biller, account number, masked holder name and
a one-line scan instruction, 2 x 4 cards a page with crop-friendly margins."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import segno
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

__all__ = ["CardItem", "render_cards_pdf"]

CARD_COLUMNS, CARD_ROWS = 2, 4
_CARD_MARGIN = 10 * mm  # outside the grid: printers cannot print to the paper edge
_CARD_PAD = 5 * mm
_CJK_FONT = "STSong-Light"  # reportlab's built-in CID font: no font file needed
_MONO_FONT = "Courier-Bold"
_INSTRUCTION_ZH = "微信或手机相机扫码缴费"
_INSTRUCTION_EN = "Scan with WeChat or your phone camera to pay"


@dataclass(frozen=True, slots=True)
class CardItem:
    biller: str
    biller_name: str
    account: str
    masked_name: str  # already masked (domain.accounts.mask_name): cards are public
    payload: str


def _cjk_font() -> str:
    if _CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(_CJK_FONT))
    return _CJK_FONT


def _draw_qr(c: Canvas, payload: str, x: float, y: float, side: float) -> None:
    """Vector modules (quiet zone included in `side`), one rectangle per dark run."""
    matrix = segno.make_qr(payload, error="m", boost_error=False).matrix
    n = len(matrix) + 8  # 4-module quiet zone each side
    unit = side / n
    path = c.beginPath()
    for r, row in enumerate(matrix):
        top = y + side - (r + 4 + 1) * unit
        col = 0
        while col < len(row):
            if row[col]:
                start = col
                while col < len(row) and row[col]:
                    col += 1
                path.rect(x + (start + 4) * unit, top, (col - start) * unit, unit)
            else:
                col += 1
    c.setFillColorRGB(0, 0, 0)
    c.drawPath(path, stroke=0, fill=1)


def _fit(text: str, font: str, size: float, width: float) -> float:
    """Largest font size <= size at which text fits width."""
    actual = pdfmetrics.stringWidth(text, font, size)
    return size if actual <= width else size * width / actual


def _draw_card(
    c: Canvas, item: CardItem, x: float, y: float, w: float, h: float, english: bool
) -> None:
    cjk = _cjk_font()
    c.setStrokeColorRGB(0.75, 0.75, 0.75)
    c.setLineWidth(0.3)
    c.setDash(2, 2)
    c.rect(x, y, w, h, stroke=1, fill=0)  # cut line
    c.setDash()
    inner_h = h - 2 * _CARD_PAD
    qr_side = min(inner_h - 14 * mm, w * 0.5)
    qr_x, qr_y = x + _CARD_PAD, y + h - _CARD_PAD - qr_side
    _draw_qr(c, item.payload, qr_x, qr_y, qr_side)

    text_x = qr_x + qr_side + 3 * mm
    text_w = x + w - _CARD_PAD - text_x
    top = y + h - _CARD_PAD - 6 * mm
    c.setFillColorRGB(0, 0, 0)
    size = _fit(item.biller_name, cjk, 13, text_w)
    c.setFont(cjk, size)
    c.drawString(text_x, top, item.biller_name)
    c.setFont(cjk, 8)
    c.setFillColorRGB(0.35, 0.35, 0.35)
    c.drawString(text_x, top - 10 * mm, "Account" if english else "户号 Account")
    c.setFillColorRGB(0, 0, 0)
    size = _fit(item.account, _MONO_FONT, 17, text_w)
    c.setFont(_MONO_FONT, size)
    c.drawString(text_x, top - 17 * mm, item.account)
    if item.masked_name:
        c.setFont(cjk, 8)
        c.setFillColorRGB(0.35, 0.35, 0.35)
        c.drawString(text_x, top - 25 * mm, "Holder" if english else "户名 Holder")
        c.setFillColorRGB(0, 0, 0)
        c.setFont(cjk, _fit(item.masked_name, cjk, 12, text_w))
        c.drawString(text_x, top - 31 * mm, item.masked_name)

    line_w = w - 2 * _CARD_PAD
    c.setFont(cjk, _fit(_INSTRUCTION_ZH, cjk, 11, line_w))
    if not english:
        c.drawString(x + _CARD_PAD, y + _CARD_PAD + 4.5 * mm, _INSTRUCTION_ZH)
    c.setFont("Helvetica", _fit(_INSTRUCTION_EN, "Helvetica", 8, line_w))
    c.drawString(x + _CARD_PAD, y + _CARD_PAD + 0.5 * mm, _INSTRUCTION_EN)


def render_cards_pdf(
    items: Sequence[CardItem], out: str | os.PathLike[str] | IO[bytes], *, locale: str = "zh-CN"
) -> int:
    """Print-ready A4 sheets of payment cards (2 x 4 per page). Returns the page count."""
    if not items:
        raise ValueError("no payment cards to print")
    english = locale.lower().startswith("en")
    page_w, page_h = A4
    card_w = (page_w - 2 * _CARD_MARGIN) / CARD_COLUMNS
    card_h = (page_h - 2 * _CARD_MARGIN) / CARD_ROWS
    target = os.fspath(out) if isinstance(out, str | os.PathLike) else out
    c = Canvas(target, pagesize=A4, pageCompression=1)
    c.setTitle("selfpay payment cards")
    per_page = CARD_COLUMNS * CARD_ROWS
    pages = 0
    for start in range(0, len(items), per_page):
        for i, item in enumerate(items[start : start + per_page]):
            col, row = i % CARD_COLUMNS, i // CARD_COLUMNS
            x = _CARD_MARGIN + col * card_w
            y = page_h - _CARD_MARGIN - (row + 1) * card_h
            _draw_card(c, item, x, y, card_w, card_h, english)
        c.showPage()
        pages += 1
    c.save()
    return pages
