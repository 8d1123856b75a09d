"""The receipt as a one-page PDF (reportlab): order number, biller, account, the bills
settled, amount, channel and its transaction id, paid time in the site's time zone,
and a QR code of the receipt's own URL so that a printout can be checked online."""

from __future__ import annotations

import io
from zoneinfo import ZoneInfo

import segno
from reportlab.lib.pagesizes import A5
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from selfpay.domain.money import format_fen
from selfpay.services.receipts import Receipt

__all__ = ["render_receipt_pdf"]

_CJK = "STSong-Light"  # reportlab's built-in CID font: no font file needed
_MONO = "Courier"
_CHANNELS = {"sandbox": "沙箱 Sandbox", "wechatpay": "微信支付 WeChat Pay",
             "alipay": "支付宝 Alipay"}


def _cjk() -> str:
    if _CJK not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(_CJK))
    return _CJK


def _draw_qr(c: Canvas, data: str, x: float, y: float, side: float) -> None:
    qr = segno.make(data, error="m", micro=False)
    rows = list(qr.matrix_iter(scale=1, border=2))
    cell = side / len(rows)
    path = c.beginPath()
    for r, row in enumerate(rows):
        for col, dark in enumerate(row):
            if dark:
                path.rect(x + col * cell, y + side - (r + 1) * cell, cell, cell)
    c.setFillColorRGB(0, 0, 0)
    c.drawPath(path, stroke=0, fill=1)


def render_receipt_pdf(receipt: Receipt, *, url: str, timezone: str = "Asia/Shanghai") -> bytes:
    """`url` is the receipt page; times are shown in `timezone`."""
    zone = ZoneInfo(timezone)
    cjk = _cjk()
    buf = io.BytesIO()
    page_w, page_h = A5
    c = Canvas(buf, pagesize=A5, pageCompression=1)
    c.setTitle(f"Receipt {receipt.order_no}")
    c.setAuthor("selfpay")
    margin = 14 * mm
    right = page_w - margin
    y = page_h - margin - 6 * mm

    c.setFont(cjk, 18)
    c.drawString(margin, y, "缴费凭证")
    c.setFont("Helvetica", 10)
    c.setFillColorRGB(0.4, 0.4, 0.4)
    c.drawString(margin, y - 6 * mm, "Payment receipt")
    qr_side = 28 * mm
    _draw_qr(c, url, right - qr_side, page_h - margin - qr_side, qr_side)
    c.setFillColorRGB(0, 0, 0)

    y -= 20 * mm
    amount = format_fen(receipt.amount_fen)  # ¥856.71, as on every page
    c.setFont(cjk, 9)
    c.setFillColorRGB(0.4, 0.4, 0.4)
    c.drawString(margin, y, "实付金额 Amount paid")
    c.setFillColorRGB(0, 0, 0)
    c.setFont("Helvetica-Bold", 22)
    c.drawString(margin, y - 9 * mm, amount)
    y -= 18 * mm

    paid = receipt.paid_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") \
        if receipt.paid_at else "—"
    rows = [
        ("订单号 Order no.", receipt.order_no, _MONO),
        ("收费单位 Biller", f"{receipt.biller_name} ({receipt.biller})", cjk),
        ("户号 Account", receipt.account, _MONO),
        ("户名 Holder", receipt.masked_name or "—", cjk),
        ("支付渠道 Channel", _CHANNELS.get(receipt.channel, receipt.channel), cjk),
        ("渠道交易号 Transaction id", receipt.channel_txn_id or "—", _MONO),
        ("支付时间 Paid at", f"{paid} ({timezone})", "Helvetica"),
    ]
    c.setLineWidth(0.4)
    c.setStrokeColorRGB(0.8, 0.8, 0.8)
    for label, value, font in rows:
        c.line(margin, y + 4 * mm, right, y + 4 * mm)
        c.setFont(cjk, 8.5)
        c.setFillColorRGB(0.4, 0.4, 0.4)
        c.drawString(margin, y - 1 * mm, label)
        c.setFillColorRGB(0, 0, 0)
        size = 10.0
        width = right - (margin + 48 * mm)
        while size > 6 and pdfmetrics.stringWidth(value, font, size) > width:
            size -= 0.5
        c.setFont(font, size)
        c.drawRightString(right, y - 1 * mm, value)
        y -= 8 * mm

    y -= 4 * mm
    c.setFont(cjk, 11)
    c.drawString(margin, y, "缴清账单 Bills settled")
    y -= 7 * mm
    c.setFont(cjk, 10)
    for line in receipt.lines:
        c.setFont(cjk, 10)
        c.drawString(margin + 2 * mm, y, line.period)
        if line.amount_fen is not None:
            c.setFont("Helvetica", 10)
            c.drawRightString(right, y, format_fen(line.amount_fen))
        y -= 6 * mm
    if not receipt.lines:
        c.drawString(margin + 2 * mm, y, "—")
        y -= 6 * mm
    c.line(margin, y + 3 * mm, right, y + 3 * mm)
    c.setFont(cjk, 10)
    c.drawString(margin + 2 * mm, y - 2 * mm, "合计 Total")
    c.setFont("Helvetica-Bold", 11)
    c.drawRightString(right, y - 2 * mm, format_fen(receipt.amount_fen))

    c.setFont(cjk, 7.5)
    c.setFillColorRGB(0.45, 0.45, 0.45)
    c.drawString(margin, margin,
                 "扫描右上角二维码可在线核验本凭证。Scan the code to check this receipt online.")
    c.setFont("Helvetica", 6.5)
    c.drawString(margin, margin - 4 * mm, url)
    c.showPage()
    c.save()
    return buf.getvalue()
