"""Throughput of unidist.log: writing track files, and shipping them to Redis.

Writing: records per second into one file, at 1 and 4 threads, for

- ``unidist.log``:          ``log.info("request handled", n=i, user="bob", ms=12.5)`` into a
  track file (JSON line with timestamp, level, event, track, host, pid, thread, script, file,
  line, func and the key/values; rotation checks on, no rotation happening);
- ``structlog JSON``:       plain structlog (``add_log_level``, ``TimeStamper(fmt="iso")``,
  ``JSONRenderer``) writing to a file through ``WriteLogger`` (no call-site fields);
- ``structlog JSON+site``:  the same plus ``CallsiteParameterAdder`` (file, line, func, thread,
  process), i.e. what unidist.log records;
- ``stdlib logging``:       ``logging.FileHandler`` with a plain text format.

Each case runs ``--repeat`` times (cases alternate, so drift affects all); the table shows the
median with min-max and the ratio of plain structlog JSON to unidist.log (target: at most 1.5).

Shipping: ``--ship-records`` records written to a track file, then one ``unidist.log.ship``
pass into a throwaway local redis-server (``backends/redis/server.py``); records per second
(target: at least 50,000 per host). No timing is asserted: this script only reports.

Usage:
    python benchmarks/bench_log.py [--quick] [--repeat N] [--records N] [--ship-records N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist.log  # noqa: E402

WRITE_TARGET = 1.5
SHIP_TARGET = 50_000

Emit = Callable[[int], None]


def case_unidist(directory: Path) -> tuple[Emit, Callable[[], None]]:
    unidist.log.setup(dir=directory, console="off", rotate="1GB", stdlib=False)
    log = unidist.log.get_logger("bench")

    def emit(i: int) -> None:
        log.info("request handled", n=i, user="bob", ms=12.5)

    return emit, unidist.log.reset


def _structlog(directory: Path, callsite: bool) -> tuple[Emit, Callable[[], None]]:
    fh = open(directory / "structlog.log", "a", encoding="utf-8")  # noqa: SIM115
    processors: list[Any] = [structlog.processors.add_log_level]
    if callsite:
        processors.append(
            structlog.processors.CallsiteParameterAdder(
                [
                    structlog.processors.CallsiteParameter.PATHNAME,
                    structlog.processors.CallsiteParameter.LINENO,
                    structlog.processors.CallsiteParameter.FUNC_NAME,
                    structlog.processors.CallsiteParameter.THREAD_NAME,
                    structlog.processors.CallsiteParameter.PROCESS,
                ]
            )
        )
    processors += [
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(),
    ]
    log = structlog.wrap_logger(
        structlog.WriteLogger(fh),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )

    def emit(i: int) -> None:
        log.info("request handled", n=i, user="bob", ms=12.5)

    return emit, fh.close


def case_structlog(directory: Path) -> tuple[Emit, Callable[[], None]]:
    return _structlog(directory, callsite=False)


def case_structlog_site(directory: Path) -> tuple[Emit, Callable[[], None]]:
    return _structlog(directory, callsite=True)


def case_stdlib(directory: Path) -> tuple[Emit, Callable[[], None]]:
    logger = logging.getLogger("bench.stdlib")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(directory / "stdlib.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)

    def emit(i: int) -> None:
        logger.info("request handled n=%d user=%s ms=%s", i, "bob", 12.5)

    def close() -> None:
        logger.removeHandler(handler)
        handler.close()

    return emit, close


CASES: dict[str, Callable[[Path], tuple[Emit, Callable[[], None]]]] = {
    "unidist.log": case_unidist,
    "structlog JSON": case_structlog,
    "structlog JSON+site": case_structlog_site,
    "stdlib logging": case_stdlib,
}


def run_write(factory: Callable[[Path], tuple[Emit, Callable[[], None]]], threads: int,
              per_thread: int) -> float:  # fmt: skip
    """Records per second of one case at ``threads`` threads."""
    directory = Path(tempfile.mkdtemp(prefix="unidist-bench-log-"))
    emit, close = factory(directory)
    start = threading.Barrier(threads + 1)

    def work() -> None:
        start.wait()
        for i in range(per_thread):
            emit(i)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    close()
    shutil.rmtree(directory, ignore_errors=True)
    return threads * per_thread / elapsed


def run_ship(records: int) -> tuple[float, int]:
    """(records/s of one shipping pass, records stored) into a throwaway redis-server."""
    from backends.redis.server import RedisServer
    from unidist.log.shipper import ship

    directory = Path(tempfile.mkdtemp(prefix="unidist-bench-ship-"))
    try:
        unidist.log.setup(dir=directory, console="off", rotate="off", stdlib=False)
        log = unidist.log.get_logger("ship")
        for i in range(records):
            log.info("request handled", n=i, user="bob", ms=12.5, path="/api/v1/items")
        unidist.log.reset()
        with RedisServer() as server:
            t0 = time.perf_counter()
            stats = ship(f"{server.url}?prefix=bench:", dir=directory)
            elapsed = time.perf_counter() - t0
        return stats.records / elapsed, stats.stored
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f}  ({min(values):,.0f}-{max(values):,.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer records and repeats")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--records", type=int, default=40_000, help="records per thread")
    parser.add_argument("--ship-records", type=int, default=200_000)
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.records, args.ship_records = 3, 10_000, 50_000
    print(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"structlog {structlog.__version__}"
    )
    results: dict[str, Any] = {"write": {}, "ship": {}}
    for threads in (1, 4):
        per_thread = max(1, args.records // threads)
        runs: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.repeat):
            for name, factory in CASES.items():
                runs[name].append(run_write(factory, threads, per_thread))
        print(f"\nwrite, {threads} thread(s), {per_thread * threads:,} records per run")
        print(f"  {'case':<22}{'records/s median (min-max)':>36}")
        for name, values in runs.items():
            print(f"  {name:<22}{_fmt(values):>36}")
        ours = statistics.median(runs["unidist.log"])
        ratio = statistics.median(runs["structlog JSON"]) / ours
        best = max(runs["structlog JSON"]) / max(runs["unidist.log"])
        site = statistics.median(runs["structlog JSON+site"]) / ours
        verdict = "ok" if ratio <= WRITE_TARGET else "ABOVE TARGET"
        print(
            f"  ratio structlog JSON / unidist.log: {ratio:.2f} median, {best:.2f} best "
            f"(target <= {WRITE_TARGET}: {verdict}); structlog JSON+site / unidist.log: "
            f"{site:.2f}"
        )
        results["write"][str(threads)] = {"runs": runs, "ratio": ratio, "ratio_best": best}
    rates = []
    for _ in range(max(1, args.repeat // 2)):
        rate, stored = run_ship(args.ship_records)
        rates.append(rate)
    verdict = "ok" if statistics.median(rates) >= SHIP_TARGET else "BELOW TARGET"
    print(f"\nship {args.ship_records:,} records to redis (one host, one pass, {stored:,} stored)")
    print(f"  records/s {_fmt(rates)}  (target >= {SHIP_TARGET:,}: {verdict})")
    results["ship"] = {"records": args.ship_records, "runs": rates}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
