#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types, architecture, tests.
# Tests that need PostgreSQL or Chromium skip with a reason when those are absent;
# SELFPAY_REQUIRE_SERVERS=1 (set by .ci/run) turns those skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "== ruff"; .venv/bin/ruff check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest"; .venv/bin/pytest "$@"
