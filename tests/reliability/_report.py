"""The result block every reliability scenario prints (RELIABILITY.md section 3.9).

Each scenario builds a :class:`Result`, fills in what it measured and calls
:meth:`Result.emit`, which prints the block (visible with ``pytest -s`` and in the soak log)
and appends it as one JSON line to ``$UNIDIST_RELIABILITY_LOG`` when that is set.

Counts scale with :func:`count`: the default test run uses the bounded ``ci`` count, the soak
command (``bash scripts/soak.sh``, which sets ``UNIDIST_SOAK=1``) the large ``soak`` count.
Every scenario takes a seed: ``UNIDIST_SEED`` when set, else a fresh one that is printed, so
any failure can be replayed with the same seed.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

SOAK = os.environ.get("UNIDIST_SOAK", "") not in ("", "0")


def count(ci: int, soak: int) -> int:
    """``soak`` under the soak command, else ``ci``."""
    return soak if SOAK else ci


def seed() -> int:
    """The scenario's seed: ``$UNIDIST_SEED`` or a fresh random one."""
    env = os.environ.get("UNIDIST_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


def _fs_type(path: str) -> str:
    best, kind = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def percentiles(values: list[float]) -> str:
    """``p50/p99/max`` of ``values`` in the caller's unit, 1 decimal (``-`` when empty)."""
    if not values:
        return "-/-/-"
    data = sorted(values)
    p50 = statistics.median(data)
    p99 = data[min(len(data) - 1, round(0.99 * (len(data) - 1)))]
    return f"{p50:.1f}/{p99:.1f}/{data[-1]:.1f}"


@dataclass
class Result:
    """One scenario's figures; ``emit()`` prints the 3.9 block."""

    scenario: str
    backend: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    attempted: int = 0
    ok: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    recovered: int = 0
    corrupt: int = 0
    violations: int = 0
    torn_tails_cut: int = 0
    bytes_cut: int = 0
    timings_ms: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: str = "."

    def timing(self, name: str, ms: float) -> None:
        """Record one sample (milliseconds) of the timing ``name`` (e.g. ``open``)."""
        self.timings_ms.setdefault(name, []).append(ms)

    def block(self) -> str:
        """The result block as text."""
        head = [
            f"scenario={self.scenario}",
            f"backend={self.backend}",
            *(f"{k}={v}" for k, v in self.params.items()),
            f"fs={_fs_type(os.path.abspath(self.path))}",
            f"kernel={platform.release()}",
            f"python={platform.python_version()}",
            f"seed={self.seed}",
        ]
        counts = (
            f"attempted={self.attempted} ok={self.ok} lost={self.lost} "
            f"duplicated={self.duplicated} unexpected={self.unexpected} "
            f"recovered={self.recovered} corrupt={self.corrupt} violations={self.violations}"
        )
        tail = [f"torn_tails_cut={self.torn_tails_cut} bytes_cut={self.bytes_cut}"]
        tail += [f"{k}_ms p50/p99/max={percentiles(v)}" for k, v in self.timings_ms.items()]
        tail += [f"{k}={v}" for k, v in self.extra.items()]
        return "\n".join([" ".join(head), counts, "  ".join(tail)])

    def emit(self) -> str:
        """Print the block (and log it as JSON when ``$UNIDIST_RELIABILITY_LOG`` is set)."""
        text = self.block()
        print(
            "\n" + text, file=sys.stderr if os.environ.get("UNIDIST_REPORT_STDERR") else sys.stdout
        )
        log = os.environ.get("UNIDIST_RELIABILITY_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(
                    json.dumps({"scenario": self.scenario, "backend": self.backend, "block": text})
                    + "\n"
                )
        return text
