#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types, architecture, tests.
# Tests that need PostgreSQL, a broker or Chromium skip with a reason when those are absent;
# SELFPAY_REQUIRE_SERVERS=1 (set by .ci/run) turns those skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
# ActiveMQ (self-contained under .brokers/) and RabbitMQ's STOMP plugin for the bridge
# tests; where this cannot run (not root, no apt), those tests skip with the reason.
scripts/brokers.sh start || echo "brokers not started: bridge tests will say why" >&2
# Network UPS Tools for the kiosk agent's UPS tests (a self-contained upsd per test run)
scripts/nut.sh install || echo "NUT not installed: UPS tests will say why" >&2
# espeak-ng for the kiosk's spoken prompts (tests/integration/test_voice.py)
scripts/voice.sh install || echo "espeak-ng not installed: voice tests will say why" >&2
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "== ruff"; .venv/bin/ruff check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest"; .venv/bin/pytest "$@"
