#!/usr/bin/env bash
# The reliability soak: every scenario of tests/reliability at its large count (F1 with 1,000
# kill cycles, L1 with 50, fuzzing with 100k inputs, ...). Prints each scenario's result block
# and collects them in reliability-soak.log. Takes a long time (hours); extra arguments go to
# pytest, e.g. `bash scripts/soak.sh -k F1`. UNIDIST_SEED=N replays one seed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
VENV=${UNIDIST_VENV:-.venv}
export UNIDIST_SOAK=1
export UNIDIST_RELIABILITY_LOG=${UNIDIST_RELIABILITY_LOG:-$PWD/reliability-soak.log}
: >"$UNIDIST_RELIABILITY_LOG"
status=0
"$VENV/bin/python" -m pytest tests/reliability -s -o timeout=0 -m "" "$@" || status=$?
echo "== result blocks (also in $UNIDIST_RELIABILITY_LOG)"
"$VENV/bin/python" -c 'import json,sys
for line in open(sys.argv[1]): print(json.loads(line)["block"]); print()' "$UNIDIST_RELIABILITY_LOG"
exit $status
