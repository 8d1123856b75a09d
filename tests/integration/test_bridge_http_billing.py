"""The generic HTTP/JSON billing adapter against a small local HTTP service that
implements the documented contract on top of the built-in ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from selfpay.adapters.billing import http_json
from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.bridge import load_agent_billing_adapter, load_billing_adapter
from selfpay.config import Settings
from selfpay.domain.accounts import PaymentPosting
from selfpay.domain.errors import AccountNotFound
from selfpay.domain.ledger_errors import PaymentIdConflict
from selfpay.services.ports import BillingSystemError
from support.billing_http import billing_service, serving
from support.bridge import run_async


@pytest.fixture
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cis') / 'ledger.db'}"


@pytest.fixture
def service(uow_factory, seeded) -> Iterator[str]:  # noqa: ARG001
    with serving(billing_service(LedgerBillingSystem(uow_factory), "s3cret")) as url:
        yield url


def test_the_http_adapter_reads_accounts_and_posts_payments_once(service, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, billing="http", billing_http_url=service,
                        billing_http_token="s3cret")  # type: ignore[arg-type]
    billing = load_billing_adapter(settings)
    assert isinstance(billing, http_json.HttpJsonBillingSystem)
    try:
        assert billing.account_summary("ELEC", "0012345678").total_due_fen == 15050
        with pytest.raises(AccountNotFound):
            billing.account_summary("ELEC", "404")
        posting = PaymentPosting("H-1", "ELEC", "0012345678", 10000)
        assert not billing.post_payment(posting).duplicate
        assert billing.post_payment(posting).duplicate
        with pytest.raises(PaymentIdConflict):
            billing.post_payment(PaymentPosting("H-1", "ELEC", "0012345678", 1))
        assert billing.account_summary("ELEC", "0012345678").total_due_fen == 5050
    finally:
        billing.close()


def test_a_wrong_token_or_a_dead_service_is_billing_unavailable(service, tmp_path) -> None:
    bad = http_json.build(Settings(data_dir=tmp_path, billing_http_url=service,
                                   billing_http_token="wrong"))  # type: ignore[arg-type]
    dead = http_json.build(Settings(data_dir=tmp_path, billing_http_url="http://127.0.0.1:9",
                                    billing_http_timeout_s=1))  # type: ignore[arg-type]
    try:
        with pytest.raises(BillingSystemError, match="HTTP 401"):
            bad.account_summary("ELEC", "0012345678")
        with pytest.raises(BillingSystemError, match="unreachable"):
            dead.account_summary("ELEC", "0012345678")
    finally:
        bad.close()
        dead.close()


def test_an_agent_gets_the_async_http_adapter_and_it_keeps_the_contract(service,
                                                                        tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, billing="http", billing_http_url=service,
                        billing_http_token="s3cret")  # type: ignore[arg-type]
    billing = load_agent_billing_adapter(settings)
    assert isinstance(billing, http_json.AsyncHttpJsonBillingSystem)
    bad = http_json.build_async(settings.model_copy(
        update={"billing_http_token": SecretStr("wrong")}))
    dead = http_json.build_async(settings.model_copy(
        update={"billing_http_url": "http://127.0.0.1:9", "billing_http_timeout_s": 1}))

    async def scenario() -> None:
        try:
            assert (await billing.account_summary("ELEC", "0012345678")).total_due_fen == 15050
            with pytest.raises(AccountNotFound):
                await billing.account_summary("ELEC", "404")
            posting = PaymentPosting("HA-1", "ELEC", "0012345678", 10000)
            assert not (await billing.post_payment(posting)).duplicate
            assert (await billing.post_payment(posting)).duplicate
            with pytest.raises(PaymentIdConflict):
                await billing.post_payment(PaymentPosting("HA-1", "ELEC", "0012345678", 1))
            with pytest.raises(BillingSystemError, match="HTTP 401"):
                await bad.account_summary("ELEC", "0012345678")
            with pytest.raises(BillingSystemError, match="unreachable"):
                await dead.account_summary("ELEC", "0012345678")
        finally:
            for b in (billing, bad, dead):
                await b.aclose()  # type: ignore[union-attr]

    run_async(scenario)


def test_an_adapter_without_an_async_twin_is_the_blocking_one(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, billing="ledger")  # type: ignore[arg-type]
    billing = load_agent_billing_adapter(settings)
    assert isinstance(billing, LedgerBillingSystem)


def test_an_agent_from_settings_serves_the_http_billing_system_and_closes_its_client(
        service, tmp_path) -> None:
    """SELFPAY_BILLING=http behind the bridge: the agent awaits the async adapter on its
    loop and closes that adapter's client when it stops."""
    from selfpay.adapters.bridge import build_billing
    from selfpay.adapters.bridge.agent_thread import AgentThread
    from selfpay.adapters.db.engine import make_engine
    from selfpay.adapters.db.migrate import upgrade

    dmz_url = f"sqlite:///{tmp_path / 'dmz.db'}"
    upgrade(dmz_url)
    engine = make_engine(dmz_url)
    settings = Settings(data_dir=tmp_path, transport="embedded", database_url=dmz_url,
                        billing="http", billing_http_url=service,
                        billing_http_token="s3cret")  # type: ignore[arg-type]
    agent = AgentThread.from_settings(settings, engine=engine)
    client = build_billing(settings.model_copy(update={"billing_http_url": ""}), engine=engine)
    try:
        agent.start()
        assert agent.agent is not None and agent.agent.awaits_billing
        assert client.account_summary("ELEC", "0012345678").total_due_fen == 15050
        assert not client.post_payment(PaymentPosting("HB-1", "ELEC", "0012345678", 50)).duplicate
    finally:
        client.close()  # type: ignore[attr-defined]
        agent.stop()
        engine.dispose()
    adapter = agent.billing
    assert isinstance(adapter, http_json.AsyncHttpJsonBillingSystem)
    assert adapter._client.is_closed
