"""The kiosk screen's server side on SQLite and PostgreSQL: the "not enrolled" screen, the
billers a device offers, scanned card codes, plates, orders recorded with their device,
outcomes reported once, and receipts by SMS only for paid orders."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.devices import AlarmKind
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.app import create_app
from selfpay.services.demo import seed_demo

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PAID_CODE = "131234567890123456"
DECLINED_CODE = "131234567890120000"


@dataclass
class Kiosk:
    container: Container
    client: TestClient

    def enrol(self, device_id: str, **kwargs: object) -> str:
        devices = self.container.devices
        devices.register(actor="admin", device_id=device_id, name="一号机", site="幸福小区",
                         **kwargs)  # type: ignore[arg-type]
        devices.enroll(device_id, devices.issue_enrolment_code(device_id, actor="admin"))
        return device_id

    def account(self, biller: str = "ELEC", *, owing: bool = True) -> str:
        with self.container.uow_factory() as uow:
            for acc in uow.accounts.search(biller=biller, limit=100).items:
                if bool(uow.bills.open_for(biller, acc.number)) == owing:
                    return str(acc.number)
        raise AssertionError(f"no {biller} account owing={owing}")

    def order(self, device_id: str, account: str, key: str) -> dict[str, object]:
        res = self.client.post(f"/kiosk/{device_id}/api/orders",
                               json={"biller": "ELEC", "account": account},
                               headers={"Idempotency-Key": key})
        assert res.status_code in (200, 201), res.text
        data: dict[str, object] = res.json()
        return data

    def poll(self, device_id: str, order_no: object) -> dict[str, object]:
        res = self.client.get(f"/kiosk/{device_id}/api/orders/{order_no}")
        assert res.status_code == 200, res.text
        data: dict[str, object] = res.json()
        return data


@pytest.fixture
def kiosk(tmp_path: Path, db_url: str) -> Iterator[Kiosk]:
    from selfpay.adapters.db.migrate import upgrade

    settings = load_settings(data_dir=tmp_path, database_url=db_url, env="development",
                             public_base_url="https://pay.example.cn",
                             enabled_channels="sandbox", alert_to="ops@example.cn")
    upgrade(settings.sqlalchemy_url)
    built = bootstrap(settings)
    with built.uow_factory() as uow:
        seed_demo(uow, accounts_per_biller=12, today=dt.date(2026, 11, 15))
    with TestClient(create_app(container=built)) as client:
        yield Kiosk(built, client)
    built.close()


def page_config(text: str) -> dict[str, Any]:
    found = re.search(r'data-config="([^"]*)"', text)
    assert found is not None
    config: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return config


# --- the screen ---------------------------------------------------------------------------

def test_an_unknown_or_revoked_terminal_gets_the_not_enrolled_screen_and_no_flow(
        kiosk: Kiosk) -> None:
    kiosk.enrol("k-0001")
    assert kiosk.client.get("/kiosk/k-0001").status_code == 200
    kiosk.container.devices.revoke("k-0001", actor="admin")
    kiosk.container.devices.register(actor="admin", device_id="k-0002", name="未启用")
    for device_id in ("k-0001", "k-0002", "k-9999", "NOT%20AN%20ID"):
        res = kiosk.client.get(f"/kiosk/{device_id}")
        assert res.status_code == 403
        assert "此终端未登记" in res.text and "This terminal is not enrolled" in res.text
        assert "kiosk.js" not in res.text and "data-config" not in res.text
        assert 'id="kiosk-refused"' in res.text  # the kiosk's own page, not the error page
        api = kiosk.client.post(f"/kiosk/{device_id}/api/scan", json={"payload": "X" * 10})
        assert api.status_code == 403 and api.json()["code"] == "kiosk_refused"


def test_the_billers_come_in_display_order_and_elderly_mode_knows_its_own(
        kiosk: Kiosk) -> None:
    kiosk.enrol("k-0001", billers="PARK, WATER, ELEC")
    config = page_config(kiosk.client.get("/kiosk/k-0001").text)
    billers = config["billers"]
    assert [b["code"] for b in billers] == ["ELEC", "WATER", "PARK"]
    assert [b["code"] for b in billers if b["elderly"]] == ["ELEC", "WATER"]
    park = billers[2]
    assert park["steps"] == ["choose", "identify_plate", "confirm_plate", "confirm", "pay",
                             "receipt"]
    assert park["icon"] == "parking"

    kiosk.enrol("k-0002", elderly_default=True)  # no list: every enabled biller
    with kiosk.container.uow_factory() as uow:
        gas = uow.billers.get("GAS")
        assert gas is not None
        uow.billers.save(replace(gas, enabled=False))
        uow.commit()
    res = kiosk.client.get("/kiosk/k-0002")
    config = page_config(res.text)
    assert [b["code"] for b in config["billers"]] == ["ELEC", "WATER", "PROP", "PARK"]
    assert config["elderly_default"] is True and 'class="kiosk elderly' in res.text
    assert config["idle_s"] == 60 and config["countdown_s"] == 10
    assert config["takes_code"] is True and config["channel"] == "sandbox"
    # the page may reach the terminal's agent (its receipt printer), and nothing else
    assert "connect-src 'self' http://127.0.0.1:8765" in res.headers["content-security-policy"]


def test_a_scanned_card_is_verified_and_a_biller_not_offered_is_refused(kiosk: Kiosk) -> None:
    kiosk.enrol("k-0001", billers="ELEC, WATER")
    c = kiosk.container
    account = kiosk.account("ELEC")
    payload = make_payload(c.code_base, c.keyring, "ELEC", account)
    res = kiosk.client.post("/kiosk/k-0001/api/scan", json={"payload": payload + "\n"})
    assert res.status_code == 200
    assert res.json()["biller"] == "ELEC" and res.json()["account"] == account
    assert res.json()["card"]["name"] == "电费"

    tampered = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    res = kiosk.client.post("/kiosk/k-0001/api/scan", json={"payload": tampered})
    assert res.status_code == 400 and res.json()["code"] == "card_refused"

    other = make_payload(c.code_base, c.keyring, "GAS", kiosk.account("GAS"))
    res = kiosk.client.post("/kiosk/k-0001/api/scan?lang=en", json={"payload": other})
    assert res.status_code == 403 and res.json()["code"] == "biller_not_offered"
    assert "GAS" in res.json()["message"] and "does not take payments" in res.json()["message"]


def test_a_plate_maps_to_its_account_number(kiosk: Kiosk) -> None:
    kiosk.enrol("k-0001")
    res = kiosk.client.post("/kiosk/k-0001/api/plate", json={"biller": "PARK",
                                                             "plate": "粤b·12345"})
    assert res.status_code == 200 and res.json()["account"] == "GD-B12345"
    res = kiosk.client.post("/kiosk/k-0001/api/plate", json={"biller": "PARK",
                                                             "plate": "京AD12345"})
    assert res.json()["account"] == "BJ-AD12345"
    res = kiosk.client.post("/kiosk/k-0001/api/plate", json={"biller": "PARK",
                                                             "plate": "粤BI2345"})
    assert res.status_code == 400 and res.json()["message"] == "车牌号格式不正确"


# --- orders -------------------------------------------------------------------------------

def test_an_order_is_recorded_with_its_device_and_its_code_is_only_shown_there(
        kiosk: Kiosk) -> None:
    from selfpay.adapters.db.kiosk_orders import KioskOrders

    kiosk.enrol("k-0001")
    kiosk.enrol("k-0002")
    account = kiosk.account("ELEC")
    first = kiosk.order("k-0001", account, "intent-1")
    again = kiosk.order("k-0001", account, "intent-1")  # after a network cut: the same
    assert again["order_no"] == first["order_no"]
    assert first["channel"] == "sandbox" and first["takes_code"] is True
    assert first["action"]["kind"] == "code_url"  # type: ignore[index]
    no = str(first["order_no"])
    assert KioskOrders(kiosk.container.engine).device_of(no) == "k-0001"
    with kiosk.container.uow_factory() as uow:
        order = uow.orders.get(no)
        assert order is not None and order.payer == ""  # a terminal remembers no one
        assert uow.payers.count() == 0

    svg = kiosk.client.get(str(first["qr"]))
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text
    assert kiosk.client.get(f"/kiosk/k-0002/orders/{no}/qr.svg").status_code == 404
    assert kiosk.client.get(f"/kiosk/k-0002/api/orders/{no}").status_code == 404
    assert kiosk.client.get(f"/kiosk/k-0001/orders/{no}/receipt-qr.svg").status_code == 404


def test_outcomes_are_reported_once_per_order_and_five_failures_raise_the_alarm(
        kiosk: Kiosk) -> None:
    kiosk.enrol("k-0001")
    account = kiosk.account("ELEC")
    for n in range(1, 6):
        order = kiosk.order("k-0001", account, f"fail-{n}")
        no = order["order_no"]
        for _ in range(3):
            kiosk.client.post(f"/api/v1/orders/{no}/payment-code",
                              json={"auth_code": DECLINED_CODE})
        for _ in range(3):  # the screen polls many times: counted once
            assert kiosk.poll("k-0001", no)["status"] == "failed"
        device = kiosk.container.devices.get("k-0001")
        assert device.payment_failures == n
        with kiosk.container.uow_factory() as uow:
            alarms = [a for a in uow.alarms.open("k-0001")
                      if a.kind is AlarmKind.PAYMENT_FAILURES]
        assert len(alarms) == (1 if n == 5 else 0)

    paid = kiosk.order("k-0001", account, "ok-1")
    res = kiosk.client.post(f"/api/v1/orders/{paid['order_no']}/payment-code",
                            json={"auth_code": PAID_CODE})
    assert res.json()["status"] in ("paid", "posted")
    assert kiosk.container.devices.get("k-0001").payment_failures == 5  # not polled yet
    assert kiosk.poll("k-0001", paid["order_no"])["status"] in ("paid", "posted")
    assert kiosk.container.devices.get("k-0001").payment_failures == 0


def test_a_receipt_goes_by_sms_only_for_a_paid_order_and_not_too_often(kiosk: Kiosk) -> None:
    kiosk.enrol("k-0001")
    order = kiosk.order("k-0001", kiosk.account("ELEC"), "r-1")
    no = order["order_no"]
    url = f"/kiosk/k-0001/api/orders/{no}/receipt"
    res = kiosk.client.post(url, json={"to": "13812345678"})
    assert res.status_code == 409 and res.json()["message"] == "订单尚未支付，暂无凭证"
    kiosk.client.post(f"/api/v1/orders/{no}/payment-code", json={"auth_code": PAID_CODE})

    assert kiosk.client.post(url, json={"to": "not a phone"}).status_code == 400
    for _ in range(3):
        res = kiosk.client.post(url, json={"to": "138 1234 5678"})
        assert res.status_code == 200 and res.json()["to"] == "138****5678"
    res = kiosk.client.post(url, json={"to": "13812345678"})
    assert res.status_code == 429 and res.json()["code"] == "too_many_receipts"
    with kiosk.container.uow_factory() as uow:
        sent = [m for m in uow.messages.list(kind="receipt", limit=50).items
                if m.to == "13812345678"]
    assert len(sent) == 3 and str(no) in sent[0].body and "/receipt/" in sent[0].body
    assert kiosk.client.post(f"/kiosk/k-0001/api/orders/{no}/receipt",
                             json={"to": "pay@example.cn"}).status_code == 429  # per order
    assert kiosk.client.get(f"/kiosk/k-0001/orders/{no}/receipt-qr.svg").status_code == 200


def test_an_offline_kiosk_sends_customers_to_its_standby_partner(kiosk: Kiosk) -> None:
    from selfpay.services.devices import HEADER_SIGNATURE, HEADER_TIMESTAMP, signature

    devices = kiosk.container.devices
    devices.register(actor="admin", device_id="k-east", name="东门一号机", site="幸福小区",
                     location="东门大厅")
    secret = devices.enroll("k-east", devices.issue_enrolment_code("k-east", actor="admin"))
    kiosk.enrol("k-west", standby="k-east")  # never beats: offline
    body = json.dumps({"readings": {"app_version": "1", "uptime_s": 5}}).encode()
    stamp = str(int(dt.datetime.now(dt.UTC).timestamp()))
    devices.heartbeat("k-east", {HEADER_TIMESTAMP: stamp,
                                 HEADER_SIGNATURE: signature(secret, "k-east", stamp, body)},
                      body)
    west = kiosk.client.get("/kiosk/k-west/help").text
    assert 'id="kiosk-offline"' in west and "东门一号机" in west and "东门大厅" in west
    assert 'href="/lookup"' in west
    east = kiosk.client.get("/kiosk/k-east/help").text  # online: nothing to send away for
    assert 'id="kiosk-offline"' not in east
    english = kiosk.client.get("/kiosk/k-west/help?lang=en").text
    assert "Please pay at 东门一号机" in english
