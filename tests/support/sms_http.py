"""A small local SMS gateway that speaks the contract of adapters/sms.py, as a site's relay
would: it checks the signature with its own code (written from the documented scheme,
not by calling the adapter's), refuses replays, and records every request it is sent."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the gateway saw it."""

    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    doc: dict[str, Any] = field(default_factory=dict)


@dataclass
class Gateway:
    """What the handler does; tests change it between requests."""

    key: bytes
    received: list[Received] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)  # per request, first first
    refuse_numbers: set[str] = field(default_factory=set)  # answered 422 invalid_number
    max_skew_s: int = 300
    seen_nonces: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        """The documented check: HMAC-SHA256(key, timestamp "\\n" nonce "\\n" body), the
        timestamp within max_skew_s of our clock, a nonce never seen before."""
        timestamp = headers.get("x-selfpay-timestamp", "")
        nonce = headers.get("x-selfpay-nonce", "")
        given = headers.get("x-selfpay-signature", "")
        if not timestamp.isdigit() or len(nonce) != 32 or not given.startswith("v1="):
            return False
        expected = hmac.new(self.key, timestamp.encode() + b"\n" + nonce.encode() + b"\n"
                            + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given[3:]):
            return False
        if abs(time.time() - int(timestamp)) > self.max_skew_s:
            return False
        with self.lock:
            if nonce in self.seen_nonces:
                return False
            self.seen_nonces.add(nonce)
        return True

    @property
    def accepted(self) -> list[dict[str, Any]]:
        return [r.doc for r in self.received if r.signature_ok]


def sms_gateway(gateway: Gateway) -> ThreadingHTTPServer:
    """Not started (see `serving`)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:  # the client gave up waiting (timeout tests)
                pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            ok = gateway.verify(headers, body)
            doc = json.loads(body) if ok else {}
            with gateway.lock:
                gateway.received.append(Received(headers, body, ok, doc))
                delay = gateway.delays_s.pop(0) if gateway.delays_s else 0.0
            if delay:
                time.sleep(delay)
            if not ok:
                return self._answer(401, {"error": "bad_signature"})
            if doc.get("to") in gateway.refuse_numbers:
                return self._answer(422, {"error": "invalid_number",
                                          "message": f"no such number; text was {doc['text']}"})
            self._answer(200, {"accepted": doc["id"]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """Run the gateway on a thread; its URL."""
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sms"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
