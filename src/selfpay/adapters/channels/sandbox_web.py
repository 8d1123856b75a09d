"""The sandbox platform's own web pages and API, mounted under /sandbox.

- GET  /sandbox                              recent sandbox trades (for testers)
- GET  /sandbox/pay/{order_no}               the cashier: 支付成功 / 支付失败
- POST /sandbox/pay/{order_no}               the cashier's buttons (form field `outcome`)
- POST /sandbox/api/orders/{order_no}/pay    scripted: {"outcome", "repeat", "delay_s"}
- GET  /sandbox/api/orders/{order_no}        the trade and its deliveries

The router's lifespan runs the channel's delivery worker while the app runs.
The pages are self-contained (no app template): they stand for another company's site.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Form, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from selfpay.adapters.channels.sandbox import (
    MAX_REPEAT,
    SandboxChannel,
    SandboxConflict,
    SandboxTrade,
    SandboxTradeNotFound,
)
from selfpay.domain.money import format_fen

STATE_LABELS = {"NOTPAY": "待支付", "SUCCESS": "已支付", "PAYERROR": "支付失败",
                "CLOSED": "已关闭"}


class PayScript(BaseModel):
    outcome: Literal["success", "fail"]
    repeat: int = Field(default=1, ge=1, le=MAX_REPEAT)
    delay_s: float = Field(default=0.0, ge=0, le=3600)


def sandbox_router(channel: SandboxChannel, *, run_worker: bool = True) -> APIRouter:
    """The /sandbox routes of `channel`; with run_worker its delivery thread runs for
    the app's lifetime (started and stopped by the app's lifespan)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_worker:
            channel.start()
        try:
            yield
        finally:
            if run_worker:
                await anyio.to_thread.run_sync(channel.stop)

    router = APIRouter(prefix="/sandbox", tags=["sandbox"], lifespan=lifespan)

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        rows = "".join(
            f'<tr><td><a href="/sandbox/pay/{_e(t.order_no)}">{_e(t.order_no)}</a></td>'
            f"<td>{_e(format_fen(t.amount_fen))}</td><td>{_e(STATE_LABELS.get(t.state, t.state))}"
            "</td></tr>"
            for t in channel.recent_trades()
        ) or '<tr><td colspan="3">暂无交易 / no trades yet</td></tr>'
        return _page("沙箱交易", f"<h1>最近的沙箱交易</h1><table>{rows}</table>")

    @router.get("/pay/{order_no}", response_class=HTMLResponse, include_in_schema=False)
    def cashier(order_no: str) -> HTMLResponse:
        return _page("沙箱收银台", _cashier_body(_trade_or_404(channel, order_no)))

    @router.post("/pay/{order_no}", include_in_schema=False)
    def cashier_submit(order_no: str,
                       outcome: Annotated[Literal["success", "fail"], Form()]) -> Response:
        trade = _trade_or_404(channel, order_no)
        try:
            channel.pay(order_no, outcome)
        except SandboxConflict:
            # closed (the merchant replaced or ended the order) or paid already: nothing
            # is taken; the cashier page shows the trade's state, which says why
            return RedirectResponse(f"/sandbox/pay/{order_no}", status_code=303)
        if outcome == "success" and trade.return_url:
            return RedirectResponse(trade.return_url, status_code=303)
        return RedirectResponse(f"/sandbox/pay/{order_no}", status_code=303)

    @router.post("/api/orders/{order_no}/pay")
    def script_pay(order_no: str, script: PayScript) -> dict[str, Any]:
        """Pay or fail a sandbox trade and schedule `repeat` deliveries of its
        notification (same id) after `delay_s` seconds."""
        try:
            result = channel.pay(order_no, script.outcome, repeat=script.repeat,
                                 delay_s=script.delay_s)
        except SandboxTradeNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except SandboxConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"order_no": result.order_no, "state": result.state, "txn_id": result.txn_id,
                "notification_id": result.notification_id, "deliveries": result.deliveries,
                "due_at": result.due_at.isoformat()}

    @router.get("/api/orders/{order_no}")
    def script_status(order_no: str) -> dict[str, Any]:
        trade = channel.trade(order_no)
        if trade is None:
            raise HTTPException(404, f"no sandbox trade {order_no}")
        return {
            "order_no": trade.order_no, "amount_fen": trade.amount_fen, "state": trade.state,
            "txn_id": trade.txn_id, "notify_url": trade.notify_url,
            "deliveries": [
                {"id": d.id, "notification_id": d.notification_id, "attempts": d.attempts,
                 "acked": d.acked, "last_status": d.last_status, "due_at": d.due_at.isoformat()}
                for d in channel.deliveries(order_no)
            ],
        }

    return router


def _trade_or_404(channel: SandboxChannel, order_no: str) -> SandboxTrade:
    trade = channel.trade(order_no)
    if trade is None:
        raise HTTPException(404, "no such sandbox trade")
    return trade


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def _cashier_body(trade: SandboxTrade) -> str:
    order = _e(trade.order_no)
    head = (
        f'<p class="label">收款方 selfpay · 订单 <span class="mono">{order}</span></p>'
        f'<p class="amount" data-amount-fen="{trade.amount_fen}">'
        f"{_e(format_fen(trade.amount_fen))}</p>"
        f'<p class="desc">{_e(trade.description)}</p>'
    )
    back = (f'<p><a class="back" href="{_e(trade.return_url)}">返回商户 / Back to merchant</a></p>'
            if trade.return_url else "")
    if trade.state == "SUCCESS":
        return head + f'<p class="state ok">已支付 · 交易号 {_e(trade.txn_id)}</p>' + back
    if trade.state == "CLOSED":
        return head + '<p class="state bad">订单已关闭，不能支付 / Closed</p>' + back
    note = ('<p class="state bad">上次支付失败，可以再试 / The last attempt failed</p>'
            if trade.state == "PAYERROR" else "")
    return head + note + (
        f'<form method="post" action="/sandbox/pay/{order}">'
        '<button class="pay" name="outcome" value="success">支付成功 / Pay</button>'
        '<button class="fail" name="outcome" value="fail">支付失败 / Fail</button>'
        "</form>"
        '<p class="hint">这是模拟支付，不会扣款。选择结果后，沙箱像真实渠道一样'
        "通过 HTTP 回调通知商户。</p>"
    ) + back


_CSS = """
*{box-sizing:border-box}body{margin:0;font-family:-apple-system,"PingFang SC",
"Microsoft YaHei","Noto Sans CJK SC",sans-serif;background:#f2f2f2;color:#222}
.banner{background:#b45309;color:#fff;text-align:center;padding:.5rem;font-weight:700;
letter-spacing:.05em}main{max-width:420px;margin:0 auto;padding:1.2rem}
.card{background:#fff;border-radius:12px;padding:1.4rem;box-shadow:0 2px 10px #0001;
text-align:center}.label,.hint{color:#666;font-size:.85rem}.mono{font-family:monospace}
.amount{font-size:2.4rem;font-weight:700;margin:.4rem 0}.desc{margin:.2rem 0 1.2rem}
button{display:block;width:100%;font-size:1.1rem;padding:.9rem;margin:.6rem 0;border:0;
border-radius:8px;cursor:pointer}.pay{background:#07a35a;color:#fff}
.fail{background:#eee;color:#b91c1c}.state{font-weight:600}.ok{color:#07a35a}
.bad{color:#b91c1c}table{width:100%;border-collapse:collapse;background:#fff}
td{padding:.4rem;border-bottom:1px solid #eee}.back{display:inline-block;margin-top:.6rem}
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{_e(title)} · 沙箱 SANDBOX</title><style>{_CSS}</style></head><body>"
        '<div class="banner">沙箱 SANDBOX · 模拟支付，不产生真实扣款</div>'
        f'<main><div class="card">{body}</div></main></body></html>'
    )


def mount_sandbox(app: FastAPI, channels: Mapping[str, object], *,
                  run_worker: bool = True) -> None:
    """Add the /sandbox routes when the `sandbox` channel is enabled; with run_worker its
    delivery thread runs during the app's lifespan (else call channel.deliver_due())."""
    channel = channels.get("sandbox")
    if isinstance(channel, SandboxChannel):
        app.include_router(sandbox_router(channel, run_worker=run_worker))
