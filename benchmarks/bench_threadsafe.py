"""Throughput of ThreadSafeDict against a plain dict guarded by a threading.Lock.

Measures operations per second for three operations, at 1 and 4 threads sharing one object:

- ``get``:       ``d[k]``                    vs ``with lock: d[k]``
- ``set``:       ``d[k] = i``                vs ``with lock: d[k] = i``
- ``transform``: ``d.transform(k, incr, 0)`` vs ``with lock: d[k] = d.get(k, 0) + 1``
  (``incr`` is a plain Python function, ``def incr(v): return v + 1``)
- ``transform-fn``: the same ``d.transform(k, incr, 0)`` vs ``with lock: d[k] =
  incr(d.get(k, 0))``: both call ``incr`` under the lock (with several threads, a thread may
  be switched out inside that call while it holds the lock, which the inline ``+ 1`` never is)

Each case is repeated (plain and ThreadSafe runs alternate, so drift affects both); the table
shows the median with min-max, and the ratio plain/ThreadSafe of the medians (1.0 means equal
speed, 1.5 means ThreadSafeDict does a third fewer operations per second). Targets: a ratio of
medians of at most 1.5 (the first issue), and ThreadSafeDict at 0.8x the plain rate or better,
i.e. a ratio of at most 1.25 (issue #11). The ratio of the best runs is shown too: it is
steadier when other processes load the machine (the header prints the load average). No
timing is asserted: this script only reports.

What stays above the plain dict+Lock (CPython 3.11, profiled): one Python call per operation
(``d[k] = v`` goes through the type's ``__setitem__`` slot, a call from C that costs more
than the inlined call ``d[k]`` gets), the ``RLock`` (reentrant for ``locked()`` and for
callbacks) instead of a ``Lock``, and for ``transform`` the call of ``fn`` itself (the plain
loop adds 1 inline). None of these can go without dropping a documented guarantee.

Usage:
    python benchmarks/bench_threadsafe.py [--quick] [--repeat N] [--ops N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from unidist.threadsafe import ThreadSafeDict

TARGET_RATIO = 1.5
TARGET_RATIO_11 = 1.25  # issue #11: ThreadSafeDict >= 0.8x a dict guarded by a lock
N_KEYS = 1000
KEYS = [f"key-{i}" for i in range(N_KEYS)]

Worker = Callable[[int], None]


def incr(v: int) -> int:
    return v + 1


# -- case factories: each builds the shared object, returns a per-thread worker ----------------
# A worker does `rounds` passes over KEYS, one operation per key.


def plain_get() -> Worker:
    d = dict.fromkeys(KEYS, 0)
    lock = threading.Lock()

    def work(rounds: int) -> None:
        for _ in range(rounds):
            for k in KEYS:
                with lock:
                    d[k]

    return work


def ts_get() -> Worker:
    d = ThreadSafeDict.fromkeys(KEYS, 0)

    def work(rounds: int) -> None:
        for _ in range(rounds):
            for k in KEYS:
                d[k]

    return work


def plain_set() -> Worker:
    d = dict.fromkeys(KEYS, 0)
    lock = threading.Lock()

    def work(rounds: int) -> None:
        for i in range(rounds):
            for k in KEYS:
                with lock:
                    d[k] = i

    return work


def ts_set() -> Worker:
    d = ThreadSafeDict.fromkeys(KEYS, 0)

    def work(rounds: int) -> None:
        for i in range(rounds):
            for k in KEYS:
                d[k] = i

    return work


def plain_transform() -> Worker:
    d: dict[str, int] = {}
    lock = threading.Lock()

    def work(rounds: int) -> None:
        for _ in range(rounds):
            for k in KEYS:
                with lock:
                    d[k] = d.get(k, 0) + 1

    return work


def plain_transform_fn() -> Worker:
    d: dict[str, int] = {}
    lock = threading.Lock()

    def work(rounds: int) -> None:
        for _ in range(rounds):
            for k in KEYS:
                with lock:
                    d[k] = incr(d.get(k, 0))

    return work


def ts_transform() -> Worker:
    d: ThreadSafeDict[str, int] = ThreadSafeDict()

    def work(rounds: int) -> None:
        for _ in range(rounds):
            for k in KEYS:
                d.transform(k, incr, 0)

    return work


CASES: dict[str, tuple[Callable[[], Worker], Callable[[], Worker]]] = {
    "get": (plain_get, ts_get),
    "set": (plain_set, ts_set),
    "transform": (plain_transform, ts_transform),
    "transform-fn": (plain_transform_fn, ts_transform),
}


def run_once(factory: Callable[[], Worker], threads: int, total_ops: int) -> float:
    """Run one case with `threads` threads sharing one object; return operations per second."""
    rounds = max(1, total_ops // (threads * N_KEYS))
    work = factory()
    barrier = threading.Barrier(threads + 1)

    def target() -> None:
        barrier.wait()
        work(rounds)

    pool = [threading.Thread(target=target) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    return rounds * N_KEYS * threads / elapsed


def fmt_rate(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med / 1e6:6.2f} M [{min(values) / 1e6:.2f}-{max(values) / 1e6:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer operations and repeats")
    parser.add_argument("--repeat", type=int, default=None, help="runs per case (default 5)")
    parser.add_argument("--ops", type=int, default=None, help="operations per run (all threads)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    repeat = args.repeat or (3 if args.quick else 5)
    total_ops = args.ops or (100_000 if args.quick else 400_000)

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}, "
        f"GIL {'on' if gil else 'off'}), {os.cpu_count()} CPUs, {platform.system()}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{total_ops:,} operations per run over {N_KEYS} keys, {repeat} runs per case, "
        f"load average {load:.2f}\n"
    )

    header = (
        f"{'op':<12} {'threads':>7}  {'plain dict+Lock ops/s':<26} "
        f"{'ThreadSafeDict ops/s':<26} {'ratio':>6} {'best':>6}  target"
    )
    print(header)
    print("-" * len(header))

    results: list[dict[str, Any]] = []
    for op, (plain_factory, ts_factory) in CASES.items():
        for threads in args.threads:
            plain_rates: list[float] = []
            ts_rates: list[float] = []
            run_once(plain_factory, threads, total_ops // 10)  # warm-up
            run_once(ts_factory, threads, total_ops // 10)
            for i in range(repeat):
                order = [(plain_factory, plain_rates), (ts_factory, ts_rates)]
                if i % 2:
                    order.reverse()
                for factory, rates in order:
                    rates.append(run_once(factory, threads, total_ops))
            ratio = statistics.median(plain_rates) / statistics.median(ts_rates)
            best_ratio = max(plain_rates) / max(ts_rates)
            met = ratio <= TARGET_RATIO
            met_11 = ratio <= TARGET_RATIO_11
            print(
                f"{op:<12} {threads:>7}  {fmt_rate(plain_rates):<26} {fmt_rate(ts_rates):<26} "
                f"{ratio:5.2f}x {best_ratio:5.2f}x  {'met' if met else 'MISSED'}"
                f" / #11 {1 / ratio:.2f}x {'met' if met_11 else 'MISSED'}"
            )
            results.append(
                {
                    "op": op,
                    "threads": threads,
                    "plain_ops_per_s": plain_rates,
                    "threadsafe_ops_per_s": ts_rates,
                    "plain_median": statistics.median(plain_rates),
                    "threadsafe_median": statistics.median(ts_rates),
                    "ratio_plain_over_threadsafe": ratio,
                    "best_run_ratio": best_ratio,
                    "target_met": met,
                    "threadsafe_over_plain": 1 / ratio,
                    "target_11_met": met_11,
                }
            )

    all_met = all(r["target_met"] for r in results)
    worst = max(r["ratio_plain_over_threadsafe"] for r in results)
    print(
        f"\nTarget (ThreadSafeDict within {TARGET_RATIO}x of dict+Lock): "
        f"{'met in every case' if all_met else 'MISSED in some cases'} (worst ratio {worst:.2f}x)"
    )
    met_11 = sum(r["target_11_met"] for r in results)
    print(
        f"Target #11 (ThreadSafeDict >= {1 / TARGET_RATIO_11:.1f}x dict+Lock): met in {met_11} of "
        f"{len(results)} cases (worst {1 / worst:.2f}x)"
    )
    if args.json:
        payload = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "gil": gil,
            "cpus": os.cpu_count(),
            "load_average": load,
            "ops_per_run": total_ops,
            "repeat": repeat,
            "target_ratio": TARGET_RATIO,
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
