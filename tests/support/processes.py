"""Real processes for tests: `selfpay` commands in process groups of their own, with their
output in log files, stopped by group; and fresh PostgreSQL databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import make_url

from selfpay.adapters.db.engine import normalize_url


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group: the process dies mid-request, as on a crash."""
        _signal_group(self.popen, signal.SIGKILL)
        self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  {self.name}| {line}" for line in text[-lines:])


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(popen.pid, sig)  # start_new_session: the group id is the pid
    except ProcessLookupError:
        pass


def clean_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment without any SELFPAY_ variable of the caller's, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFPAY_")}
    env.update(settings)
    return env


def start_selfpay(name: str, args: list[str], *, env: Mapping[str, str], cwd: Path) -> Proc:
    """`selfpay ARGS` in a new session (process group), output to cwd/<name>.log."""
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "selfpay.entrypoints.cli", *args], env=dict(env), cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    return Proc(name, popen, log)


def stop_all(procs: list[Proc], timeout_s: float = 10.0) -> None:
    """SIGTERM to every group at once, then SIGKILL to those still running."""
    for p in procs:
        if p.alive:
            _signal_group(p.popen, signal.SIGTERM)
    end = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.popen.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(p.popen, signal.SIGKILL)  # also any child left in the group
        if p.popen.poll() is None:
            p.popen.wait(5)


def wait_until(check: Callable[[], bool], *, within_s: float, what: str,
               procs: Sequence[Proc] = ()) -> None:
    end = time.monotonic() + within_s
    while not check():
        dead = [p for p in procs if not p.alive]
        if dead or time.monotonic() > end:
            why = f"{', '.join(p.name for p in dead)} exited" if dead else f"{within_s:g} s passed"
            tails = "\n".join(p.tail() for p in (dead or procs))
            raise AssertionError(f"waiting for {what}: {why}\n{tails}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def fresh_postgres_database(admin_url: str, label: str) -> Iterator[str]:
    """A new database on the server of `admin_url` (dropped afterwards); yields its URL.
    Raises psycopg.OperationalError when the server cannot be reached."""
    import psycopg

    admin = make_url(normalize_url(admin_url))
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"selfpay_{label}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
