"""A fake ESC/POS network printer: a TCP server on 127.0.0.1 (a free port) that records
every byte it receives and answers the real-time status requests DLE EOT n at once,
with the status byte the test chose for n, as a real printer does mid-stream.

    with FakeEscposPrinter() as printer:
        printer.status[4] = PAPER_OUT        # the paper sensor's answer
        ... agent prints to printer.address ...
        printer.received                     # every byte, all connections in order

`silent = True` makes it take connections and data but answer nothing (a printer whose
status read-back is broken looks like that); stopping it closes the port (a printer that
is off).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any

DLE_EOT = b"\x10\x04"
OK = 0x12  # bits 1 and 4 are always set in a status answer
COVER_OPEN = OK | 0x04  # DLE EOT 2
PAPER_LOW = OK | 0x0C  # DLE EOT 4: near-end sensor
PAPER_OUT = OK | 0x0C | 0x60  # DLE EOT 4: near-end and end sensors
ONLINE = 0x16  # DLE EOT 1 (bit 2 also set on most printers)


class FakeEscposPrinter:
    def __init__(self) -> None:
        self.status: dict[int, int] = {1: ONLINE, 2: OK, 3: OK, 4: OK}
        self.silent = False
        self.received = bytearray()
        self.connections = 0
        self.queries: list[int] = []  # the n of every DLE EOT n, in order
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler,
                                                       bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> FakeEscposPrinter:
        self._server.server_bind()
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port (a printer switched off); a second call does nothing."""
        if self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread = None

    def __enter__(self) -> FakeEscposPrinter:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self.queries.clear()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        tail = b""  # the last bytes of the previous chunk: DLE EOT n may be split
        conn.settimeout(10)
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.received += chunk
            data = tail + chunk
            start = max(0, len(tail) - 2)  # a request wholly inside `tail` was answered
            answers = bytearray()
            i = data.find(DLE_EOT, start)
            while i != -1 and i + 2 < len(data):
                n = data[i + 2]
                if n in self.status:
                    with self._lock:
                        self.queries.append(n)
                    if not self.silent:
                        answers.append(self.status[n])
                i = data.find(DLE_EOT, i + 3)
            tail = data[-2:]
            if answers:
                try:
                    conn.sendall(bytes(answers))
                except OSError:
                    return
