"""A paid order's receipt as the bytes of one ESC/POS print job.

The layout (zh-CN first, with English): a title, the biller, the masked holder, the
account, one line per bill with its amount, the total as ￥123.45, the channel and its
transaction id, the order number, the time of payment in the terminal's time zone, a
QR code of the receipt page drawn by the printer itself (GS ( k, python-escpos
`qr(native=True)`), then a cut.

Chinese text is sent as GB18030 bytes that we encode, after the commands that put the
printer in its Chinese character mode (ESC @, then FS &), and not through python-escpos
3.1's `text()`, which mangles it (checked on its output bytes):

- a line with a character in U+4E00..U+9FA5 is written as raw GB18030, but the Chinese
  mode is never selected;
- any other line goes through its code-page search: `2026-10  ¥50.50` becomes
  ESC t 0 and CP437 byte 0x9D for the ¥, which a printer in Chinese mode reads as the
  first byte of a two-byte character (the digit after it vanishes); a line of
  full-width punctuation only (`：`) comes out as `?`;
- its double-size text (`set(double_width=...)`) uses ESC !, which does not enlarge
  Chinese characters; GS ! does (`set(custom_size=True, ...)`).

The yuan sign is printed as the full-width ￥ (U+FFE5, GB18030 A3 A4, in every Chinese
printer font): the narrow ¥ (U+00A5) is a four-byte GB18030 sequence (81 30 84 36) that
printers with GB2312/GBK fonts, most of them, print as garbage.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from selfpay.domain.money import format_fen

ENCODING = "gb18030"
INIT = b"\x1b@"  # ESC @: forget the previous job's modes
CHINESE_MODE = b"\x1c&"  # FS &: two-byte (GB18030) characters from here on
QR_DOT_SIZE = 6  # module size in dots: about 25 mm for a receipt URL at 203 dpi
CHANNELS = {"wechatpay": "微信支付 WeChat Pay", "alipay": "支付宝 Alipay",
            "unionpay": "云闪付 UnionPay", "sandbox": "沙箱 Sandbox"}


def yuan(fen: int) -> str:
    """12345 -> '￥123.45' (module docstring: the full-width sign)."""
    return format_fen(fen).replace("¥", "￥")


def width(text: str) -> int:
    """Columns on the printer: a Chinese character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def columns(left: str, right: str, line_chars: int) -> str:
    """`left` and `right` on one line, `right` flush right; on two lines when too long."""
    gap = line_chars - width(left) - width(right)
    if gap >= 1:
        return left + " " * gap + right
    return left + "\n" + " " * max(0, line_chars - width(right)) + right


def local_time(raw: object, timezone: str) -> str:
    """An ISO time from the server (UTC) as 'YYYY-MM-DD HH:MM:SS' where the terminal is;
    the machine's own zone when `timezone` is unknown here (Windows without tzdata)."""
    if not isinstance(raw, str) or not raw:
        return "-"
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return raw[:32]
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        local = when.astimezone(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        local = when.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S")


class _Job:
    """Bytes of a job; text encoded by us, commands by python-escpos's Dummy printer."""

    def __init__(self) -> None:
        from escpos.printer import Dummy

        self.p = Dummy()
        self.p._raw(INIT + CHINESE_MODE)

    def line(self, text: str = "") -> None:
        self.p._raw(text.encode(ENCODING, "replace") + b"\n")

    def set(self, **style: Any) -> None:
        self.p.set(**style)

    def bytes(self) -> bytes:
        output: bytes = self.p.output
        return output


def render_receipt(receipt: Mapping[str, Any], *, timezone: str = "Asia/Shanghai",
                   line_chars: int = 32) -> bytes:
    """The print job of a receipt as GET /api/v1/orders/{no}/receipt returns it."""
    job = _Job()
    rule = "-" * line_chars
    job.set(align="center", bold=True, custom_size=True, width=2, height=2)
    job.line("缴费凭证")
    job.set(bold=False, custom_size=True, width=1, height=1)
    job.line("PAYMENT RECEIPT")
    job.set(align="left")
    job.line(rule)
    biller = " ".join(x for x in (str(receipt.get("biller_name") or ""),
                                  str(receipt.get("biller_name_en") or "")) if x)
    job.line(f"缴费项目 Biller: {biller}")
    job.line(f"户名 Name: {receipt.get('masked_name') or '-'}")
    job.line(f"户号 Account: {receipt.get('account') or '-'}")
    job.line(rule)
    job.line(columns("账期 Period", "金额 Amount", line_chars))
    for item in receipt.get("lines") or []:
        amount = item.get("amount_fen")
        job.line(columns(str(item.get("period") or "-"),
                         yuan(amount) if isinstance(amount, int) else "-", line_chars))
    job.line(rule)
    job.set(bold=True)
    job.line(columns("合计 Total", yuan(int(receipt["amount_fen"])), line_chars))
    job.set(bold=False)
    channel = str(receipt.get("channel") or "-")
    job.line(f"支付方式 Paid by: {CHANNELS.get(channel, channel)}")
    job.line(f"交易号 Transaction: {receipt.get('channel_txn_id') or '-'}")
    job.line(f"订单号 Order: {receipt.get('order_no') or '-'}")
    job.line(f"时间 Time: {local_time(receipt.get('paid_at'), timezone)}")
    url = str(receipt.get("receipt_url") or "")
    if url:
        job.line()
        job.set(align="center")
        job.p.qr(url, native=True, size=QR_DOT_SIZE)
        job.line("扫码查看电子凭证")
        job.line("Scan for the e-receipt")
        job.set(align="left")
    job.p.cut()
    return job.bytes()
