"""The dashboard's payment health: flagged and disputed orders, in both languages."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from selfpay.domain.accounts import Account, Bill
from selfpay.domain.devices import Alarm, AlarmKind
from selfpay.domain.orders import Flag, Order, OrderStatus
from selfpay.entrypoints.web.app import create_app
from selfpay.services.ports import AuditEntry
from support.web import add_staff, build_container, staff_login

NOW = dt.datetime.now(dt.UTC)


def order(no: str, status: OrderStatus, flag: Flag | None) -> Order:
    o = Order(order_no=no, idempotency_key=no, request_hash="h", biller="ELEC",
              account="0012345678", bill_ids=(1,), amount_fen=10000, channel="sandbox",
              created_at=NOW, expires_at=NOW + dt.timedelta(minutes=30), status=status,
              channel_txn_id=f"T-{no}", settled=True)
    if flag is not None:
        o = dataclasses.replace(o, flag=flag.value, flagged_at=NOW)
    return o


def test_the_dashboard_lists_disputed_and_flagged_orders_in_the_page_language(
        tmp_path: Path) -> None:
    container = build_container(
        tmp_path, accounts=[Account("ELEC", "0012345678", "张三", "", "")],
        bills=[Bill(None, "ELEC", "0012345678", "2026-10", 10000, dt.date(2026, 11, 30))])
    with container.uow_factory() as uow:
        uow.orders.add(order("SPDISPUTED0000000001", OrderStatus.DISPUTED, Flag.OVERPAYMENT))
        uow.orders.add(order("SPLATE00000000000001", OrderStatus.POSTED, Flag.LATE))
        uow.orders.add(order("SPOLDFLAG00000000001", OrderStatus.POSTED, None))
        uow.commit()
    add_staff(container, {"auditor": "correct horse battery"}, NOW)
    app = create_app(container=container)
    staff = staff_login(app, "auditor", "correct horse battery")
    page = staff.get("/admin").text
    disputed = page.split('id="disputed-flag"')[1].split("</div>")[0]
    assert "SPDISPUTED0000000001" in disputed and "¥100.00" in disputed
    flagged = page.split('id="flagged-orders"')[1].split("</div>")[0]
    assert "SPLATE00000000000001" in flagged and "关闭后付款" in flagged
    assert "SPDISPUTED0000000001" in flagged and "SPOLDFLAG00000000001" not in page
    with container.uow_factory() as uow:  # the recent activity reads as words, not keys
        uow.audit.record(AuditEntry(None, NOW, "auditor", "qr.batch.download", "7", {}, ""))
        uow.commit()
    feed = staff.get("/admin").text.split('class="feed"')[1].split("</ul>")[0]
    assert "qr.batch.download" not in feed.replace('title="qr.batch.download"', "")
    english = staff.get("/admin?lang=en").text
    assert "ELEC · Electricity" in english and "电费" not in english
    assert "overpaid" in english and "To refund" in english
    container.close()


def test_open_kiosk_alarms_show_on_the_dashboard(tmp_path: Path) -> None:
    container = build_container(tmp_path)
    container.devices.register(actor="admin", device_id="k-0001", name="一号机")
    with container.uow_factory() as uow:
        device = uow.devices.get("k-0001")
        assert device is not None
        uow.alarms.add(Alarm(None, "k-0001", AlarmKind.PAPER_OUT, "paper_out", NOW))
        uow.commit()
    add_staff(container, {"operator": "correct horse battery"}, NOW)
    staff = staff_login(create_app(container=container), "operator", "correct horse battery")
    banner = staff.get("/admin").text.split('id="device-alarms-flag"')[1].split("</div>")[0]
    assert "k-0001" in banner and "/admin/alarms" in banner
    container.close()
