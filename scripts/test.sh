#!/usr/bin/env bash
# The whole test suite, from a fresh machine: sets up .venv and redis-server, then runs the
# quality gates (ruff, mypy) and pytest over every backend. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
VENV=${UNIDIST_VENV:-.venv}
echo "== ruff check"; "$VENV/bin/ruff" check .
echo "== ruff format --check"; "$VENV/bin/ruff" format --check .
echo "== mypy --strict unidist"; "$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/python" -m pytest -n 2 -m "not slow" "$@"
