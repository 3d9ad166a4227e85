"""Helpers of the job-manager tests: a job that records its own runs, and ssh configs.

:func:`recording_job` is a real remote command: it appends ``start NAME NODE`` and ``end NAME
NODE`` to ``<logdir>/runs.log`` (``NODE`` is the ssh alias it was reached through, set by
the test sshd), and measures how many jobs run at once on its node by counting marker files
in ``<logdir>/active/<node>/`` (``<logdir>/concurrency.log``).
"""

from __future__ import annotations

import collections
from pathlib import Path

_SCRIPT = r"""
d=$1; n=$2; s=$3; p=$4; h=${UNIDIST_TEST_NODE:-unknown}
echo "start $n $h" >> "$d/runs.log"
mkdir -p "$d/active/$h"
: > "$d/active/$h/$n"
m=0; i=0
while :; do
  set -- "$d/active/$h"/*
  [ "$#" -gt "$m" ] && m=$#
  [ "$#" -ge "$p" ] || [ "$i" -ge 30 ] && break
  i=$((i + 1)); sleep 0.1
done
sleep "$s"
set -- "$d/active/$h"/*
[ "$#" -gt "$m" ] && m=$#
echo "$h $m" >> "$d/concurrency.log"
rm -f "$d/active/$h/$n"
echo "out $n $UNIDIST_JOB $UNIDIST_JOB_HOST"
echo "err $n" >&2
echo "end $n $h" >> "$d/runs.log"
"""


def recording_job(logdir: Path, name: str, sleep: float, peers: int = 1) -> list[str]:
    """The argv of a job that records its run under ``logdir`` (see the module docstring).

    With ``peers`` > 1 the job first waits (up to 3 s) until that many jobs run on its node,
    so that a test can see the slots of a host really used at once despite connection-time
    jitter; the most it saw (at its start, while waiting, and at its end) goes to
    ``concurrency.log``."""
    return ["sh", "-c", _SCRIPT, "job", str(logdir), name, f"{sleep:g}", str(peers)]


def runs(logdir: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """How often each job started and ended, from ``runs.log``."""
    starts: collections.Counter[str] = collections.Counter()
    ends: collections.Counter[str] = collections.Counter()
    path = logdir / "runs.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, name, _node = line.split()
        (starts if kind == "start" else ends)[name] += 1
    return starts, ends


def max_concurrency(logdir: Path) -> dict[str, int]:
    """The most jobs seen running at once per node, measured by the jobs themselves."""
    most: dict[str, int] = {}
    path = logdir / "concurrency.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        node, count = line.split()
        most[node] = max(most.get(node, 0), int(count))
    return most


def failing_config(config_path: str, down_port: int, flag: Path, out: Path) -> Path:
    """A copy of the test ssh config in which ``node3`` reaches the closed ``down_port`` once
    ``flag`` exists (``Match ... exec``), and ``down2``/``down3`` are always unreachable."""
    text = Path(config_path).read_text()
    head = (
        f'Match originalhost node3 exec "test -e {flag}"\n'
        f"    Port {down_port}\n"
        "Host down2 down3\n"
        "    HostName 127.0.0.1\n"
        f"    Port {down_port}\n"
    )
    out.write_text(head + text)
    return out
