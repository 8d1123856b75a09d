"""Security headers on every page, the console never cached, the API explorer off in
production unless asked for, and no inline script for the CSP to block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfpay.domain.accounts import Account, Bill
from selfpay.entrypoints.web.app import STATIC_DIR, create_app
from support.web import TestClient, build_container, code_path

TEMPLATES = STATIC_DIR.parent / "templates"


@pytest.fixture
def site(tmp_path: Path):  # noqa: ANN201
    container = build_container(tmp_path, run_worker=False,
                                accounts=[Account("ELEC", "0012345678", "张三丰", "")],
                                bills=[Bill(None, "ELEC", "0012345678", "2026-10", 5050, None)])
    try:
        yield container, TestClient(create_app(container=container))
    finally:
        container.close()


def test_every_kind_of_page_carries_the_security_headers(site) -> None:  # noqa: ANN001
    container, client = site
    for path, status in ((code_path(container, "ELEC", "0012345678"), 200),
                         ("/admin/login", 200), ("/api/v1/orders/SPX", 404), ("/nope", 404),
                         ("/static/app.css", 200), ("/healthz", 200)):
        r = client.get(path)
        assert r.status_code == status, path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY", path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp, path
        assert "strict-transport-security" not in r.headers  # not production: no TLS promise
    code_page = client.get(code_path(container, "ELEC", "0012345678"))
    assert code_page.headers["referrer-policy"] == "no-referrer"  # the page's own, kept
    assert client.get("/admin/login").headers["cache-control"] == "no-store"


def test_production_sends_hsts_and_hides_the_api_explorer(tmp_path: Path) -> None:
    from selfpay.bootstrap import bootstrap
    from selfpay.config import load_settings

    base = dict(env="production", secret_key="x" * 40, qr_keys="1:" + "A" * 43 + "=",
                database_url=f"sqlite:///{tmp_path / 'p.db'}", enabled_channels="",
                run_worker=False)
    for api_docs, visible in ((None, False), (True, True)):
        settings = load_settings(**base, api_docs=api_docs)
        container = bootstrap(settings)
        try:
            client = TestClient(create_app(container=container))
            r = client.get("/healthz")
            assert r.headers["strict-transport-security"].startswith("max-age=")
            assert (client.get("/openapi.json").status_code == 200) is visible
            assert (client.get("/docs").status_code == 200) is visible
        finally:
            container.close()


def test_no_template_or_script_relies_on_inline_script() -> None:
    """script-src 'self' blocks inline handlers, javascript: links and inline scripts."""
    offenders = []
    for path in [*TEMPLATES.rglob("*.html"), *STATIC_DIR.rglob("*.js")]:
        text = path.read_text(encoding="utf-8")
        for pattern in (r"\son[a-z]+=\"", r"javascript:",
                        r"<script(?![^>]*(src=|application/json))"):
            if re.search(pattern, text):
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []
