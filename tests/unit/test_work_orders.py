"""Work orders without I/O: validation, ticket numbers, the billing side's words for a
status, and that a report never moves a ticket backwards."""

from __future__ import annotations

import datetime as dt

import pytest

from selfpay.adapters.bridge import codec
from selfpay.domain.errors import InvalidInput
from selfpay.domain.work_orders import (
    MAX_DESCRIPTION,
    WorkOrderKind,
    WorkOrderStatus,
    advance,
    clean_description,
    is_ticket_no,
    new_ticket_no,
    parse_kind,
    status_from_billing,
)
from selfpay.services.lookup import InvalidPhone, normalize_phone
from selfpay.services.ports import WorkOrderRequest, WorkOrderResult

W = WorkOrderStatus


def test_kinds_are_the_three_services_and_nothing_else() -> None:
    assert {k.value for k in WorkOrderKind} == {"meter_fault", "outage", "contact_change"}
    assert parse_kind(" outage ") is WorkOrderKind.OUTAGE
    with pytest.raises(InvalidInput):
        parse_kind("refund")


def test_a_description_is_trimmed_cleaned_and_bounded() -> None:
    assert clean_description("  表计\r\n不走字\x00\x07 ") == "表计\n不走字"
    assert len(clean_description("电" * MAX_DESCRIPTION)) == MAX_DESCRIPTION
    for bad in ("", "   ", "\x00\x01", "电" * (MAX_DESCRIPTION + 1)):
        with pytest.raises(InvalidInput):
            clean_description(bad)


def test_the_contact_phone_must_be_a_mainland_mobile_number() -> None:
    assert normalize_phone("+86 138-1234-5678") == "13812345678"
    for bad in ("12345", "1381234567x", "23812345678", ""):
        with pytest.raises(InvalidPhone):
            normalize_phone(bad)


def test_ticket_numbers_are_unguessable_and_recognisable() -> None:
    tickets = {new_ticket_no() for _ in range(2000)}
    assert len(tickets) == 2000
    assert all(is_ticket_no(t) for t in tickets)
    assert not is_ticket_no("WO0000000000000000")  # 0 is not in the alphabet
    assert not is_ticket_no("SP2026110112345678") and not is_ticket_no("WO123")


@pytest.mark.parametrize(("word", "status"), [
    ("accepted", W.ACCEPTED), ("Received", W.ACCEPTED), ("in-progress", W.IN_PROGRESS),
    ("processing", W.IN_PROGRESS), ("IN PROGRESS", W.IN_PROGRESS), ("done", W.DONE),
    ("closed", W.DONE), ("resolved", W.DONE), ("rejected", W.REJECTED),
    ("cancelled", W.REJECTED), ("something new", None), ("", None),
])
def test_the_billing_sides_words_map_to_our_statuses(word: str,
                                                      status: WorkOrderStatus | None) -> None:
    assert status_from_billing(word) is status


def test_a_report_moves_a_ticket_forwards_only_and_a_closed_one_stays_closed() -> None:
    assert advance(W.QUEUED, W.ACCEPTED) is W.ACCEPTED
    assert advance(W.ACCEPTED, W.IN_PROGRESS) is W.IN_PROGRESS
    assert advance(W.IN_PROGRESS, W.ACCEPTED) is W.IN_PROGRESS  # a late report
    assert advance(W.IN_PROGRESS, W.DONE) is W.DONE
    assert advance(W.ACCEPTED, W.REJECTED) is W.REJECTED
    for closed in (W.DONE, W.REJECTED, W.FAILED):
        for reported in W:
            assert advance(closed, reported) is closed


def test_a_work_order_crosses_the_bridge_as_a_dict_and_back() -> None:
    request = WorkOrderRequest("WO" + "A" * 16, "ELEC", "0012345678", "outage", "停电了",
                               "13812345678", dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC))
    doc = codec.work_order_to_json(request)
    assert isinstance(doc, dict) and doc["ticket_no"] == request.ticket_no
    assert codec.work_order_from_json(doc) == request
    result = WorkOrderResult(request.ticket_no, "LWO-7", "accepted", "ok", duplicate=True)
    assert codec.work_order_result_from_json(codec.work_order_result_to_json(result)) == result
    assert codec.work_order_result_from_json({"id": 9, "status": "received"}).ref == "9"
    with pytest.raises(codec.CodecError):
        codec.work_order_from_json({"ticket_no": "x"})
    assert "work_order_status" in codec.KINDS
