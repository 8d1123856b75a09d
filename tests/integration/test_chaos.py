"""The short variant of bench/chaos.py: payments while serve, worker, agent and broker
are SIGKILLed at random, with duplicate, late and out-of-order notifications; its checker
must find every paid order posted exactly once, none left open past the TTL, the ledger
equal to the payments, and no message sent twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.bridge import port_open, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]


def test_faults_under_load_change_nothing_but_timing(brokers: dict[str, str],
                                                    postgres_database: str) -> None:
    if not port_open(61614):
        unavailable("ActiveMQ STOMP port 61614 closed (scripts/brokers.sh start)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--short"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    report = result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "all four checks hold" in result.stdout
    assert "chaos: SIGKILL" in result.stdout, "nothing was killed: the run proves nothing"
