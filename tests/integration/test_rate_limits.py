"""Request limits through the ASGI app: shared by several app instances over a real
Redis, 429 with Retry-After, exempt paths, staff changing limits at run time (admin
only, audited, validated), and the login limit keyed by the right client address."""

from __future__ import annotations

import datetime as dt
import re
import time
import warnings
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.bootstrap import Container, bootstrap
from selfpay.entrypoints.web.app import create_app
from support.web import add_staff, build_container, csrf_of, staff_login

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOW = dt.datetime.now(dt.UTC)
PASSWORDS = {"admin": "admin-pass-1", "operator": "operator-pass-1"}


def site(tmp_path: Path, **settings: object) -> tuple[FastAPI, Container]:
    container = build_container(tmp_path, run_worker=False, **settings)
    add_staff(container, PASSWORDS, NOW)
    return create_app(container=container), container


def second_process(container: Container) -> tuple[FastAPI, Container]:
    """Another web process: its own container (pool, limit store) on the same settings."""
    other = bootstrap(container.settings)
    return create_app(container=other), other


def audit(container: Container, action: str) -> list[tuple[str, str, dict[str, object]]]:
    with container.uow_factory() as uow:
        return [(e.actor, e.target, e.detail) for e in uow.audit.list(action=action).items]


def test_two_processes_share_one_clients_budget_over_redis(tmp_path: Path, redis_url: str,
                                                           prefix: str) -> None:
    app1, c1 = site(tmp_path, redis_url=redis_url, redis_prefix=prefix,
                    rate_limit_per_minute=3)
    app2, c2 = second_process(c1)
    try:
        one = TestClient(app1, client=("198.51.100.2", 5000))
        two = TestClient(app2, client=("198.51.100.2", 5001))
        assert [one.get("/lookup").status_code, two.get("/lookup").status_code,
                one.get("/lookup").status_code] == [200, 200, 200]
        refused = two.get("/lookup")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert one.get("/lookup").status_code == 429
        # another client, and another group of the same client, have their own budgets
        assert TestClient(app2, client=("198.51.100.3", 5002)).get("/lookup").status_code \
            == 200
        assert one.get("/admin/login").status_code == 200
    finally:
        c2.close()
        c1.close()


def test_failed_logins_are_counted_across_processes_over_redis(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    app1, c1 = site(tmp_path, redis_url=redis_url, redis_prefix=prefix)
    app2, c2 = second_process(c1)
    try:
        peer = ("198.51.100.9", 6000)
        codes = [_fail_login(TestClient(app, client=peer), {})
                 for app in (app1, app2, app1, app2, app1, app2)]
        assert codes == [401] * 5 + [429]
        # counted per user name: another name from the same address is not blocked
        other_user = [_fail_login(TestClient(app2, client=peer), {}, username="admin")]
        assert other_user == [401]
    finally:
        c2.close()
        c1.close()


def test_refusal_is_429_with_retry_after_in_json_or_html(tmp_path: Path, prefix: str) -> None:
    app, c = site(tmp_path, rate_limit_per_minute=1, redis_prefix=prefix)
    try:
        client = TestClient(app, client=("198.51.100.2", 5000))
        assert client.get("/lookup").status_code == 200
        html = client.get("/lookup")
        assert html.status_code == 429
        assert html.headers["content-type"].startswith("text/html")
        assert re.fullmatch(r"[1-9][0-9]*", html.headers["retry-after"])
        assert "请求过于频繁" in html.text and "<h1>429</h1>" in html.text
        assert "set-cookie" not in html.headers  # nothing behind the limit ran
        en = client.get("/lookup?lang=en")
        assert en.status_code == 429 and "Too many requests" in en.text
        assert "set-cookie" not in en.headers  # the locale middleware did not run either
        as_json = client.get("/lookup", headers={"Accept": "application/json"})
        assert as_json.status_code == 429 and "detail" in as_json.json()

        api = TestClient(app, client=("198.51.100.3", 5000))
        assert api.get("/api/v1/billers/ELEC/accounts/0012345678").status_code != 429
        r = api.get("/api/v1/billers/ELEC/accounts/0012345678")
        assert r.status_code == 429 and "detail" in r.json()
        assert int(r.headers["retry-after"]) >= 1
    finally:
        c.close()


def test_exempt_paths_are_never_limited(tmp_path: Path) -> None:
    app, c = site(tmp_path, rate_limit_per_minute=1)
    try:
        client = TestClient(app, client=("198.51.100.2", 5000))
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            assert client.get("/static/app.css").status_code == 200
            assert client.get("/sandbox").status_code != 429
            # a payment platform's callback: refused for its content, never for its rate
            assert client.post("/api/v1/notify/sandbox", content=b"{}").status_code != 429
    finally:
        c.close()


def test_zero_turns_the_request_limits_off(tmp_path: Path) -> None:
    app, c = site(tmp_path, rate_limit_per_minute=0)
    try:
        client = TestClient(app, client=("198.51.100.2", 5000))
        assert all(client.get("/lookup").status_code == 200 for _ in range(20))
    finally:
        c.close()


def admin_client(app: FastAPI) -> tuple[TestClient, str]:
    client = staff_login(app, "admin", PASSWORDS["admin"],
                         client=TestClient(app, client=("192.0.2.10", 7000)))
    return client, csrf_of(client.get("/admin/rate-limits").text)


def test_an_admin_change_takes_effect_without_restart_and_is_audited(tmp_path: Path) -> None:
    app, c = site(tmp_path)
    other_app, other = second_process(c)
    try:
        customer = TestClient(app, client=("198.51.100.2", 5000))
        elsewhere = TestClient(other_app, client=("198.51.100.4", 5000))
        assert [customer.get("/lookup").status_code for _ in range(4)] == [200] * 4
        assert elsewhere.get("/lookup").status_code == 200  # reads the limits now

        admin, token = admin_client(app)
        page = admin.get("/admin/rate-limits")
        assert page.status_code == 200 and 'href="/admin/rate-limits"' in page.text
        r = admin.post("/admin/rate-limits", data={"group": "pages", "per_minute": "2",
                                                   "csrf_token": token})
        assert r.status_code == 200 and r.url.path == "/admin/rate-limits"
        assert "500" in r.text and "admin" in r.text
        assert audit(c, "rate_limit.set") == [("admin", "pages", {"old": 500, "new": 2})]

        fresh = TestClient(app, client=("198.51.100.3", 5000))
        assert [fresh.get("/lookup").status_code for _ in range(3)] == [200, 200, 429]
        assert admin.get("/admin/rate-limits").status_code == 200  # admin group untouched

        # another process reads the change when its memo (5 s) runs out
        assert [elsewhere.get("/lookup").status_code for _ in range(3)] == [200] * 3
        time.sleep(other.rate_limits.ttl_s)
        assert [elsewhere.get("/lookup").status_code for _ in range(3)] == [200, 200, 429]

        r = admin.post("/admin/rate-limits", data={"group": "pages", "per_minute": "0",
                                                   "csrf_token": token})
        assert r.status_code == 200
        assert all(fresh.get("/lookup").status_code == 200 for _ in range(5))
        assert audit(c, "rate_limit.set")[0] == ("admin", "pages", {"old": 2, "new": 0})
    finally:
        other.close()
        c.close()


def test_only_an_admin_may_change_limits(tmp_path: Path) -> None:
    app, c = site(tmp_path)
    try:
        operator = staff_login(app, "operator", PASSWORDS["operator"])
        token = csrf_of(operator.get("/admin").text)
        assert 'href="/admin/rate-limits"' not in operator.get("/admin").text
        assert operator.get("/admin/rate-limits").status_code == 403
        r = operator.post("/admin/rate-limits", data={"group": "pages", "per_minute": "1",
                                                      "csrf_token": token})
        assert r.status_code == 403
        admin, token = admin_client(app)
        r = admin.post("/admin/rate-limits", data={"group": "pages", "per_minute": "1"})
        assert r.status_code == 403  # no CSRF token
        with c.uow_factory() as uow:
            assert uow.rate_limits.all() == {}
        assert audit(c, "rate_limit.set") == []
    finally:
        c.close()


@pytest.mark.parametrize(("group", "value", "message"), [
    ("pages", "-1", "0 到 1000000"), ("pages", "abc", "0 到 1000000"),
    ("pages", "1.5", "0 到 1000000"), ("pages", "", "0 到 1000000"),
    ("pages", "１０", "0 到 1000000"), ("pages", "99999999", "0 到 1000000"),
    ("nope", "10", "没有这个页面组"),
])
def test_bad_input_is_refused_clearly_and_changes_nothing(tmp_path: Path, group: str,
                                                          value: str, message: str) -> None:
    app, c = site(tmp_path)
    try:
        admin, token = admin_client(app)
        r = admin.post("/admin/rate-limits", data={"group": group, "per_minute": value,
                                                   "csrf_token": token})
        assert r.status_code == 400 and message in r.text
        with c.uow_factory() as uow:
            assert uow.rate_limits.all() == {}
        assert audit(c, "rate_limit.set") == []
    finally:
        c.close()


def _fail_login(client: TestClient, headers: dict[str, str], username: str = "ghost") -> int:
    page = client.get("/admin/login", headers=headers)
    return client.post("/admin/login", headers=headers, data={
        "username": username, "password": "wrong-guess", "csrf_token": csrf_of(page.text),
    }).status_code


def test_rotating_x_forwarded_for_does_not_reset_the_login_limit(tmp_path: Path) -> None:
    app, c = site(tmp_path, trusted_proxies="10.0.0.1")
    try:
        client = TestClient(app, client=("203.0.113.7", 5000))  # not a trusted proxy
        codes = [_fail_login(client, {"X-Forwarded-For": f"198.51.100.{i}"})
                 for i in range(6)]
        assert codes == [401] * 5 + [429]
    finally:
        c.close()


def test_through_a_trusted_proxy_logins_are_limited_per_forwarded_client(
        tmp_path: Path) -> None:
    app, c = site(tmp_path, trusted_proxies="10.0.0.0/24")
    try:
        proxy = TestClient(app, client=("10.0.0.1", 5000))
        a = {"X-Forwarded-For": "198.51.100.2"}
        b = {"X-Forwarded-For": "198.51.100.3"}
        assert [_fail_login(proxy, a) for _ in range(6)] == [401] * 5 + [429]
        assert _fail_login(proxy, b) == 401  # another customer behind the same proxy
        # the client's own forged hops left of the proxy's entry change nothing
        assert _fail_login(proxy, {"X-Forwarded-For": "1.1.1.1, 198.51.100.2"}) == 429
        with c.uow_factory() as uow:
            ips = {e.ip for e in uow.audit.list(action="user.login.failed").items}
        assert ips == {"198.51.100.2", "198.51.100.3"}
    finally:
        c.close()
