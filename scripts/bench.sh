#!/usr/bin/env bash
# Benchmarks of unidist against its peer libraries, in one run, with ratios.
# Creates its own environment (.venv-bench: unidist in editable mode plus the `bench` extra),
# starts throwaway redis-servers on loopback ports, prints a table and writes
# benchmarks/results/latest.json. Arguments go to benchmarks/run.py, e.g.:
#   scripts/bench.sh --quick              # about 2 minutes
#   scripts/bench.sh --only locks         # one group: locks|counters|state|queues
#   scripts/bench.sh --repeat 7
#   scripts/bench.sh --curves             # 1,2,4,8 threads and processes (unidist + main peers)
# The other benchmarks run in the same environment when named first:
#   scripts/bench.sh sizes --quick        # benchmarks/bench_sizes.py (100 B, 10 KiB, 1 MiB)
#   scripts/bench.sh depth --quick        # benchmarks/bench_depth.py (1k and 1M messages)
#   scripts/bench.sh log --quick          # benchmarks/bench_log.py (track files, shipping)
#   scripts/bench.sh threadsafe           # benchmarks/bench_threadsafe.py
#   scripts/bench.sh handover             # benchmarks/bench_lock_handover.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${UNIDIST_BENCH_VENV:-.venv-bench}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "the benchmarks need Python 3.10 or newer as '$PY' (set PYTHON=/path/to/python3)." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  # Keep the environment out of git without touching the project's .gitignore.
  printf '*\n' >"$VENV/.gitignore"
fi
stamp="$VENV/.unidist-bench-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[bench]'
  touch "$stamp"
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "note: redis-server is not on PATH; the Redis rows will be reported as errors" >&2
  echo "      (scripts/bootstrap.sh --dev installs it)." >&2
fi
script=benchmarks/run.py
case "${1:-}" in
  sizes | depth | log | threadsafe)
    script="benchmarks/bench_$1.py"
    shift
    ;;
  handover)
    script=benchmarks/bench_lock_handover.py
    shift
    ;;
esac
exec "$VENV/bin/python" "$script" "$@"
