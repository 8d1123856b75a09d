"""Work orders: what a customer reports from the page a code opens (a meter fault, an
outage, a change of contact details), and the life of its ticket.

`queued` (stored in the DMZ, not sent yet) -> `submitted` (on its way) -> `accepted`
(the billing side has it) -> `in_progress` -> `done` | `rejected`; `failed` when the
billing side refused it for good or it could not be delivered after many tries.
A status reported by the billing side never moves a ticket backwards: reports may
arrive late or out of order.
"""

from __future__ import annotations

import secrets
import unicodedata
from enum import StrEnum

from selfpay.domain.errors import InvalidInput

MAX_DESCRIPTION = 500
_TICKET_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read out on the phone


class WorkOrderKind(StrEnum):
    METER_FAULT = "meter_fault"
    OUTAGE = "outage"
    CONTACT_CHANGE = "contact_change"


class WorkOrderStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"


W = WorkOrderStatus
TERMINAL = frozenset({W.DONE, W.REJECTED, W.FAILED})
OPEN_AT_BILLING = frozenset({W.ACCEPTED, W.IN_PROGRESS})  # polled for news
_RANK = {W.QUEUED: 0, W.SUBMITTED: 1, W.ACCEPTED: 2, W.IN_PROGRESS: 3, W.DONE: 4,
         W.REJECTED: 4, W.FAILED: 4}

# Words billing systems use for the same few states (an HTTP/JSON system or a plug-in
# need not speak ours); anything else is ignored, never guessed.
_BILLING_WORDS: dict[str, WorkOrderStatus] = {
    **{w: W.ACCEPTED for w in ("accepted", "received", "new", "open", "registered")},
    **{w: W.IN_PROGRESS for w in ("in_progress", "processing", "assigned", "dispatched")},
    **{w: W.DONE for w in ("done", "closed", "resolved", "completed", "finished")},
    **{w: W.REJECTED for w in ("rejected", "refused", "cancelled", "canceled", "invalid")},
}


class UnknownWorkOrderKind(InvalidInput):
    pass


class InvalidDescription(InvalidInput):
    pass


def parse_kind(raw: str) -> WorkOrderKind:
    try:
        return WorkOrderKind(raw.strip())
    except ValueError:
        raise UnknownWorkOrderKind(key="err.wo.kind", value=raw[:32]) from None


def clean_description(raw: str) -> str:
    """Trimmed, NFC, control characters (but line breaks) removed; 1-500 characters."""
    text = unicodedata.normalize("NFC", raw).replace("\r\n", "\n").strip()
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c)[0] != "C")
    if not text:
        raise InvalidDescription(key="err.wo.description_empty")
    if len(text) > MAX_DESCRIPTION:
        raise InvalidDescription(key="err.wo.description_long", max=MAX_DESCRIPTION)
    return text


def new_ticket_no() -> str:
    """'WO' + 16 characters of a 32-letter alphabet (80 bits): unguessable, like an
    order number, and still short enough to read out to a call centre."""
    return "WO" + "".join(secrets.choice(_TICKET_ALPHABET) for _ in range(16))


def is_ticket_no(text: str) -> bool:
    return (len(text) == 18 and text.startswith("WO")
            and all(c in _TICKET_ALPHABET for c in text[2:]))


def status_from_billing(raw: str) -> WorkOrderStatus | None:
    """Our status for a billing system's word for it; None when we do not know it."""
    return _BILLING_WORDS.get(raw.strip().lower().replace("-", "_").replace(" ", "_"))


def advance(current: WorkOrderStatus, reported: WorkOrderStatus) -> WorkOrderStatus:
    """The status after a report: forwards only, and a closed ticket stays closed."""
    if current in TERMINAL or _RANK[reported] <= _RANK[current]:
        return current
    return reported
