"""A small local HTTP service that implements the HTTP/JSON billing contract
(adapters/billing/http_json.py) on top of a built-in ledger, as a third-party billing
platform would; it checks the bearer token and counts the postings it is sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.bridge import codec


def billing_service(ledger: LedgerBillingSystem, token: str,
                    posted: list[str] | None = None) -> ThreadingHTTPServer:
    """Not started; `posted` gets the payment id of every POST /payments it answers."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _guarded(self, fn: Callable[[], dict[str, Any]]) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                return self._answer(401, {"error": "unauthorized"})
            try:
                self._answer(200, fn())
            except Exception as exc:  # noqa: BLE001 - the service maps errors to statuses
                code = codec.error_code(exc)
                status = {"account_not_found": 404, "payment_id_conflict": 409}.get(code, 503)
                self._answer(status, {"error": code, "message": str(exc)})

        def do_GET(self) -> None:
            _, _, biller, account = self.path.split("/")
            self._guarded(lambda: codec.summary_to_json(ledger.account_summary(biller, account)))

        def do_POST(self) -> None:
            doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def post() -> dict[str, Any]:
                result = codec.result_to_json(ledger.post_payment(codec.posting_from_json(doc)))
                if posted is not None:
                    posted.append(doc["payment_id"])
                return result

            self._guarded(post)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """Run the service on a thread; its base URL."""
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
