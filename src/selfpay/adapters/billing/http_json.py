"""A billing system with an HTTP/JSON API (entry point `selfpay.billing: http`).

The contract a billing system (or a small shim in front of a CIS) implements; amounts
are integer fen, dates ISO 8601, bearer token optional (SELFPAY_BILLING_HTTP_TOKEN):

    GET  {base}/accounts/{biller}/{account}
         200 {"biller": "ELEC", "account": "0012345678", "masked_name": "张*丰",
              "balance_fen": 0,
              "open_bills": [{"id": 7, "biller": "ELEC", "account": "0012345678",
                              "period": "2026-10", "amount_fen": 5050, "paid_fen": 0,
                              "status": "open", "due_date": "2026-11-30"}]}
         404 {"error": "account_not_found", "message": "..."}
    POST {base}/payments      body: {"payment_id", "biller", "account", "amount_fen",
                                     "bill_ids": [...], "channel", "channel_txn_id",
                                     "paid_at"}
         200 {"payment_id", "applied": [[bill_id, fen], ...], "surplus_fen",
              "balance_fen", "duplicate": false}
         (the same payment_id again: 200 with the first result and "duplicate": true)
         404 account_not_found | 409 payment_id_conflict | 422 bill_not_open / invalid_*
    POST {base}/work-orders   body: {"ticket_no", "biller", "account", "kind",
                                     "description", "contact_phone", "created_at"}
                              header Idempotency-Key: the ticket_no
         200 {"id": "<your reference>", "status": "accepted", "note": "", "duplicate": false}
         (the same ticket_no again: 200 with the first answer and "duplicate": true)
    GET  {base}/work-orders/{id}
         200 {"id", "status", "note"}; status accepted | in_progress | done | rejected
         (or a synonym such as received, processing, closed, refused)

Any other status, a timeout or a connection error is BillingSystemError (transient:
the agent answers `unavailable` and the DMZ outbox retries).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from selfpay.adapters.bridge import codec
from selfpay.domain.accounts import AccountSummary, PaymentPosting, PostingResult
from selfpay.services.ports import BillingSystemError, WorkOrderRequest, WorkOrderResult

if TYPE_CHECKING:
    from selfpay.config import Settings


def _answer(r: httpx.Response) -> dict[str, Any]:
    """The document of a 200, the domain error of a 404/409/422 that names one, else
    BillingSystemError (transient)."""
    try:
        doc = r.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    if r.status_code == 200:
        return doc
    if r.status_code in (404, 409, 422) and isinstance(doc.get("error"), str):
        codec.raise_error(doc["error"], str(doc.get("message", "")))
    raise BillingSystemError(f"billing system answered HTTP {r.status_code}")


def _unreachable(exc: httpx.HTTPError) -> BillingSystemError:
    return BillingSystemError(f"billing system unreachable: {exc!r}")


def _account_path(biller: str, account: str) -> str:
    return f"/accounts/{quote(biller, safe='')}/{quote(account, safe='')}"


def _summary(doc: dict[str, Any]) -> AccountSummary:
    try:
        return codec.summary_from_json(doc)
    except codec.CodecError as exc:
        raise BillingSystemError(f"billing system sent a bad account: {exc}") from exc


def _result(doc: dict[str, Any]) -> PostingResult:
    try:
        return codec.result_from_json(doc)
    except codec.CodecError as exc:
        raise BillingSystemError(f"billing system sent a bad result: {exc}") from exc


def _work_order_result(doc: dict[str, Any], ticket_no: str) -> WorkOrderResult:
    try:
        result = codec.work_order_result_from_json(doc)
    except codec.CodecError as exc:
        raise BillingSystemError(f"billing system sent a bad work order: {exc}") from exc
    return result if result.ticket_no else replace(result, ticket_no=ticket_no)


class HttpJsonBillingSystem:
    """The contract over a blocking httpx.Client (the web tier without a bridge; an
    agent uses AsyncHttpJsonBillingSystem)."""

    def __init__(self, client: httpx.Client) -> None:
        """`client` has base_url (and auth) set; it is owned and closed by close()."""
        self._client = client

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        return _answer(r)

    def account_summary(self, biller: str, account: str, *,
                        fresh: bool = False) -> AccountSummary:  # always fresh: no copy
        return _summary(self._request("GET", _account_path(biller, account)))

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        return _result(self._request("POST", "/payments", json=codec.posting_to_json(posting)))

    def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        doc = self._request("POST", "/work-orders", json=codec.work_order_to_json(order),
                            headers={"Idempotency-Key": order.ticket_no})
        return _work_order_result(doc, order.ticket_no)

    def work_order_status(self, ref: str) -> WorkOrderResult:
        return _work_order_result(self._request("GET", f"/work-orders/{quote(ref, safe='')}"), "")

    def close(self) -> None:
        self._client.close()


class AsyncHttpJsonBillingSystem:
    """The same contract over httpx.AsyncClient, for the agent (entry point group
    `selfpay.billing_async`): its calls run on the agent's event loop, so many can be
    in flight without a worker thread each and without a thread hand-off per request."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        """`client` has base_url (and auth) set; it is owned and closed by aclose()."""
        self._client = client

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        return _answer(r)

    async def account_summary(self, biller: str, account: str) -> AccountSummary:
        return _summary(await self._request("GET", _account_path(biller, account)))

    async def post_payment(self, posting: PaymentPosting) -> PostingResult:
        return _result(await self._request("POST", "/payments",
                                           json=codec.posting_to_json(posting)))

    async def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        doc = await self._request("POST", "/work-orders", json=codec.work_order_to_json(order),
                                  headers={"Idempotency-Key": order.ticket_no})
        return _work_order_result(doc, order.ticket_no)

    async def work_order_status(self, ref: str) -> WorkOrderResult:
        return _work_order_result(
            await self._request("GET", f"/work-orders/{quote(ref, safe='')}"), "")

    async def aclose(self) -> None:
        await self._client.aclose()


def _client_options(settings: Settings) -> dict[str, Any]:
    if not settings.billing_http_url:
        raise ValueError("SELFPAY_BILLING=http needs SELFPAY_BILLING_HTTP_URL")
    token = settings.billing_http_token.get_secret_value()
    return {"base_url": settings.billing_http_url.rstrip("/"),
            "headers": {"Authorization": f"Bearer {token}"} if token else {},
            "timeout": settings.billing_http_timeout_s}


def build(settings: Settings) -> HttpJsonBillingSystem:
    return HttpJsonBillingSystem(httpx.Client(**_client_options(settings)))


def build_async(settings: Settings) -> AsyncHttpJsonBillingSystem:
    return AsyncHttpJsonBillingSystem(httpx.AsyncClient(**_client_options(settings)))
