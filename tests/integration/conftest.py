"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

import pytest

from support.bridge import start_brokers


@pytest.fixture(scope="session")
def brokers() -> dict[str, str]:
    """The test brokers, started once; ActiveMQ's credentials."""
    return start_brokers()
