"""Which address a request is counted by: the socket peer, or, behind a trusted proxy,
the first untrusted hop of X-Forwarded-For; which route group a path is limited in; and
how often a process reads the limits staff set."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.adapters.ratelimit import client_key
from selfpay.config import Settings, parse_networks
from selfpay.entrypoints.web.deps import client_ip, forwarded_client
from selfpay.entrypoints.web.ratelimit import group_of
from selfpay.services.ports import RateLimitOverride
from selfpay.services.rate_limits import LimitTable

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PROXIES = parse_networks("10.0.0.1, 10.8.0.0/16, fd00::/64")


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    # no trusted peer: X-Forwarded-For is ignored entirely
    ("203.0.113.7", ["1.2.3.4"], "203.0.113.7"),
    ("203.0.113.7", [], "203.0.113.7"),
    # a trusted proxy: its client
    ("10.0.0.1", ["198.51.100.2"], "198.51.100.2"),
    # from the right, past every trusted proxy, to the first untrusted hop; what the
    # client wrote further left (a forged "1.1.1.1") is never reached
    ("10.0.0.1", ["1.1.1.1, 198.51.100.2, 10.8.3.4"], "198.51.100.2"),
    # several headers are one list, in order
    ("10.0.0.1", ["1.1.1.1, 198.51.100.2", "10.8.3.4"], "198.51.100.2"),
    # every hop trusted: the leftmost one
    ("10.0.0.1", ["10.8.0.9, 10.8.0.7"], "10.8.0.9"),
    # trusted peer, no header: the peer
    ("10.0.0.1", [], "10.0.0.1"),
    # a malformed entry stops the walk at the last good hop
    ("10.0.0.1", ["198.51.100.2, bogus, 10.8.3.4"], "10.8.3.4"),
    ("10.0.0.1", ["198.51.100.2, unknown"], "10.0.0.1"),
    ("10.0.0.1", ["1.2.3.4:5678"], "10.0.0.1"),
    ("10.0.0.1", [""], "10.0.0.1"),
    # IPv6 proxies and clients, in one spelling
    ("fd00::5", ["2001:DB8:0:0::1"], "2001:db8::1"),
    ("fd00::5", ["2001:db8::1, fd00::9"], "2001:db8::1"),
    ("fd00:0:0:1::5", ["2001:db8::1"], "fd00:0:0:1::5"),  # outside fd00::/64
    # an IPv4-mapped peer is its IPv4 address
    ("::ffff:10.0.0.1", ["198.51.100.2"], "198.51.100.2"),
    ("::ffff:203.0.113.7", ["198.51.100.2"], "203.0.113.7"),
    # a peer that is not an IP (a test client, a Unix socket) stays as it is
    ("testclient", ["198.51.100.2"], "testclient"),
])
def test_forwarded_client(peer: str, xff: list[str], expected: str) -> None:
    assert forwarded_client(peer, xff, PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert forwarded_client("10.0.0.1", ["198.51.100.2"], ()) == "10.0.0.1"


def _echo_app(trusted: str) -> FastAPI:
    app = FastAPI()
    app.state.trusted_proxies = parse_networks(trusted)

    @app.get("/ip")
    def ip(request: Request) -> str:
        return client_ip(request)

    return app


def test_client_ip_reads_the_proxies_of_the_app() -> None:
    trusting = TestClient(_echo_app("10.0.0.1"), client=("10.0.0.1", 4000))
    assert trusting.get("/ip", headers={"X-Forwarded-For": "198.51.100.2"}).json() == \
        "198.51.100.2"
    direct = TestClient(_echo_app("10.0.0.1"), client=("203.0.113.7", 4000))
    for forged in ("1.1.1.1", "2.2.2.2"):
        assert direct.get("/ip", headers={"X-Forwarded-For": forged}).json() == "203.0.113.7"
    untrusting = TestClient(_echo_app(""), client=("10.0.0.1", 4000))
    assert untrusting.get("/ip", headers={"X-Forwarded-For": "198.51.100.2"}).json() == \
        "10.0.0.1"


def test_trusted_proxies_setting_takes_addresses_and_networks() -> None:
    s = Settings(_env_file=None, trusted_proxies=" 10.0.0.1 ,10.8.0.0/16,, fd00::/8 ")  # type: ignore[call-arg]
    assert [str(n) for n in s.trusted_proxy_networks()] == [
        "10.0.0.1/32", "10.8.0.0/16", "fd00::/8"]
    assert Settings(_env_file=None).trusted_proxy_networks() == ()  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["10.0.0.300", "proxy.local", "10.0.0.1/33",
                                 "10.0.0.1/8", "fd00::/200", "10.0.0.1;10.0.0.2"])
def test_bad_trusted_proxies_are_refused_naming_the_entry(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, trusted_proxies=f"10.0.0.2,{bad}")  # type: ignore[call-arg]
    message = str(info.value)
    assert "SELFPAY_TRUSTED_PROXIES" in message and repr(bad) in message


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "x" * 65])
def test_redis_prefix_is_a_plain_name(bad: str) -> None:
    with pytest.raises(ValidationError, match="SELFPAY_REDIS_PREFIX"):
        Settings(_env_file=None, redis_prefix=bad)  # type: ignore[call-arg]


def test_negative_rate_limit_setting_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, rate_limit_per_minute=-1)  # type: ignore[call-arg]


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") \
        == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("198.51.100.2") == "198.51.100.2"
    assert client_key("::ffff:198.51.100.2") == "198.51.100.2"
    assert client_key("testclient") == "testclient"


@pytest.mark.parametrize(("path", "group"), [
    ("/q/ELEC/1/x", "pages"), ("/Q/ELEC/0012345678/1ABC", "pages"), ("/pay/SP1", "pages"),
    ("/receipt/SP1", "pages"), ("/lookup", "pages"), ("/lookup/phone", "pages"),
    ("/my", "pages"), ("/workorders/WO1", "pages"), ("/wechat/oauth", "pages"),
    ("/api/v1/orders", "api"), ("/api/v1/billers/E/accounts/1", "api"),
    ("/admin", "admin"), ("/admin/rate-limits", "admin"), ("/kiosk/1", "kiosk"),
    # never limited
    ("/api/v1/notify/wechatpay", None), ("/api/v1/notify", None), ("/healthz", None),
    ("/readyz", None), ("/metrics", None), ("/static/app.css", None), ("/sandbox", None),
    ("/sandbox/pay/SP1", None),
    # whole segments only
    ("/query", None), ("/adminx", None), ("/api/v1x", None), ("/mystery", None),
    ("/api/v1/notifyx", "api"),
])
def test_route_groups(path: str, group: str | None) -> None:
    assert group_of(path) == group


class FakeLimitRepo:
    def __init__(self) -> None:
        self.rows: dict[str, RateLimitOverride] = {}
        self.reads = 0

    def all(self) -> dict[str, RateLimitOverride]:
        self.reads += 1
        return dict(self.rows)


class FakeUow:
    def __init__(self, repo: FakeLimitRepo) -> None:
        self.rate_limits = repo

    def __enter__(self) -> FakeUow:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_each_process_reads_the_limits_at_most_every_5_s() -> None:
    repo = FakeLimitRepo()
    now = [100.0]
    table = LimitTable(lambda: FakeUow(repo), default=500, clock=lambda: now[0])  # type: ignore[arg-type, return-value]
    assert table.stale
    table.refresh()
    assert table.per_minute("pages") == 500 and repo.reads == 1
    repo.rows["pages"] = RateLimitOverride("pages", 7, "admin", dt.datetime.now(dt.UTC))
    now[0] += 4.9
    assert not table.stale
    table.refresh()
    assert table.per_minute("pages") == 500 and repo.reads == 1  # still the memo
    now[0] += 0.1
    assert table.stale
    table.refresh()
    assert table.per_minute("pages") == 7 and table.per_minute("api") == 500
    assert repo.reads == 2
    table.invalidate()
    assert table.stale


def test_a_failed_read_keeps_the_last_limits_and_retries_later() -> None:
    repo = FakeLimitRepo()
    repo.rows["api"] = RateLimitOverride("api", 9, "admin", dt.datetime.now(dt.UTC))
    now = [0.0]
    table = LimitTable(lambda: FakeUow(repo), default=500, clock=lambda: now[0])  # type: ignore[arg-type, return-value]
    table.refresh()

    def broken() -> dict[str, RateLimitOverride]:
        raise ConnectionError("database down")

    repo.all = broken  # type: ignore[method-assign]
    now[0] += 5
    table.refresh()
    assert table.per_minute("api") == 9
    assert not table.stale  # no read storm while the database is down
