"""Chinese licence plates, as a parking biller's kiosk takes them, and the account number
a plate stands for.

A plate is a province abbreviation (粤, 京, ...), the issuing city's letter, then
- 5 letters or digits (an ordinary blue or yellow plate: 粤B12345), or
- 6 for a new-energy (green) plate, per GA 36-2018: a small car's is D or F, then a letter
  or digit, then 4 digits (粤BD12345, 粤BF1A234 is refused, 粤BDA1234 is fine); a large
  vehicle's is 5 digits, then D or F (粤B12345D). D: battery electric, F: other.
The letters I and O are never used (they read as 1 and 0). Plates with a trailing Chinese
character (学, 警, 挂, 港, 澳, 领, 使) are not taken: their accounts are kept by hand.

Account numbers allow only 0-9, A-Z and '-', so a plate is mapped to one by a fixed rule:
the province becomes its two-letter ISO 3166-2:CN code, then '-', then the rest as it is:

    粤B12345 -> GD-B12345        京AD12345 -> BJ-AD12345        沪A12345D -> SH-A12345D
"""

from __future__ import annotations

import re
import unicodedata

from selfpay.domain.errors import InvalidInput

# province abbreviation -> ISO 3166-2:CN subdivision code (without "CN-")
PROVINCES: dict[str, str] = {
    "京": "BJ", "津": "TJ", "冀": "HE", "晋": "SX", "蒙": "NM", "辽": "LN", "吉": "JL",
    "黑": "HL", "沪": "SH", "苏": "JS", "浙": "ZJ", "皖": "AH", "闽": "FJ", "赣": "JX",
    "鲁": "SD", "豫": "HA", "鄂": "HB", "湘": "HN", "粤": "GD", "桂": "GX", "琼": "HI",
    "渝": "CQ", "川": "SC", "贵": "GZ", "云": "YN", "藏": "XZ", "陕": "SN", "甘": "GS",
    "青": "QH", "宁": "NX", "新": "XJ",
}
_CODES = {code: abbr for abbr, code in PROVINCES.items()}
_L = "A-HJ-NP-Z"  # letters without I and O
_ORDINARY = re.compile(rf"^[{_L}][{_L}0-9]{{5}}$")
_NEW_ENERGY = re.compile(rf"^[{_L}](?:[DF][{_L}0-9][0-9]{{4}}|[0-9]{{5}}[DF])$")
_SEPARATORS = re.compile(r"[\s·•.\-_]")


class InvalidPlate(InvalidInput):
    default_key = "err.plate.invalid"


def normalize_plate(raw: str) -> str:
    """'粤 b·12345', '粤Ｂ12345' -> '粤B12345'; InvalidPlate unless it is a plate as
    described above (ordinary, or new-energy with its D/F rules)."""
    if not isinstance(raw, str):
        raise InvalidPlate(key="err.plate.invalid", value=type(raw).__name__)
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).upper()
    if len(text) < 2 or text[0] not in PROVINCES:
        raise InvalidPlate(key="err.plate.province", value=text[:10])
    rest = text[1:]
    if not (_ORDINARY.match(rest) or _NEW_ENERGY.match(rest)):
        raise InvalidPlate(key="err.plate.invalid", value=text[:10])
    return text


def is_new_energy(plate: str) -> bool:
    """8 characters: a green new-energy plate (after normalize_plate)."""
    return len(plate) == 8


def plate_account(raw: str) -> str:
    """The account number a plate is kept under: 粤B12345 -> GD-B12345."""
    plate = normalize_plate(raw)
    return f"{PROVINCES[plate[0]]}-{plate[1:]}"


def account_plate(account: str) -> str | None:
    """The plate an account number of that form stands for (GD-B12345 -> 粤B12345), or
    None when the number is not one."""
    code, sep, rest = account.partition("-")
    if not sep or code not in _CODES:
        return None
    try:
        return normalize_plate(_CODES[code] + rest)
    except InvalidPlate:
        return None
