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
median with min-max and unidist.log's median over each peer's. Targets (reported as met or
missed, never asserted):

- issue 5:  unidist.log >= 0.67x plain structlog JSON (structlog at most 1.5x faster);
- issue 11: unidist.log >= 0.67x structlog JSON with the call-site fields added (the same
  fields unidist.log records, so the comparison is at equal output).

Shipping: ``--ship-records`` records (about 310 bytes each) written once to a track file,
then ``--repeat`` ``unidist.log.ship`` passes (no follow, default batch, each into an empty
store with a fresh state file) into a throwaway local redis-server
(``backends/redis/server.py``, no persistence); records per second read and stored (target,
issues 5 and 11: at least 50,000 per host), with the peak resident set of this process
during a pass, and the CPU time per record of the shipper and of redis-server. The shipper
waits for each batch's reply, so on an idle machine a pass takes about the sum of the two
(the "CPU-bound rate"); on a loaded one the wall-clock rate falls below it. No timing is
asserted: this script only reports.

Results: ``benchmarks/results/latest-log.json`` (``--save``: also
``<date>-<N>core-log.json``/``.txt``, for committing).

Usage:
    python benchmarks/bench_log.py [--quick] [--repeat N] [--records N] [--ship-records N]
                                   [--ship-only] [--json PATH] [--save]
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

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _harness import fmt_rss, peak_rss_kb, reset_peak_rss  # noqa: E402

WRITE_TARGET = 1.5  # issue 5: plain structlog JSON / unidist.log <= 1.5 (unidist >= 0.67x)
SITE_TARGET = 0.67  # issue 11: unidist.log / structlog JSON with call-site fields >= 0.67
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


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of process ``pid`` so far; None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_ship_file(records: int) -> Path:
    """A log directory with one track file of ``records`` records (about 310 bytes each)."""
    directory = Path(tempfile.mkdtemp(prefix="unidist-bench-ship-"))
    unidist.log.setup(dir=directory, console="off", rotate="off", stdlib=False)
    log = unidist.log.get_logger("ship")
    for i in range(records):
        log.info("request handled", n=i, user="bob", ms=12.5, path="/api/v1/items")
    unidist.log.reset()
    return directory


def run_ship(directory: Path, server: Any, run: int) -> dict[str, Any]:
    """One shipping pass of ``directory`` into ``server`` (a fresh key prefix and state file):
    records/s, records stored, peak RSS KiB during the pass, and the CPU microseconds per
    record of the shipper (this process) and of redis-server (None where /proc is missing).
    """
    from unidist.log.shipper import ship

    for old in directory.glob(".ship-state-*"):
        old.unlink()
    pid = server.proc.pid if server.proc is not None else -1
    reset_peak_rss()
    redis_cpu0, cpu0 = _proc_cpu(pid), time.process_time()
    t0 = time.perf_counter()
    stats = ship(f"{server.url}?prefix=bench{run}:", dir=directory)
    elapsed = time.perf_counter() - t0
    cpu, redis_cpu1 = time.process_time() - cpu0, _proc_cpu(pid)
    peak = peak_rss_kb()
    redis_us = (
        None
        if redis_cpu0 is None or redis_cpu1 is None
        else (redis_cpu1 - redis_cpu0) * 1e6 / max(1, stats.records)
    )
    return {
        "rate": stats.records / elapsed,
        "stored": stats.stored,
        "batches": stats.batches,
        "peak_kb": peak,
        "shipper_cpu_us": cpu * 1e6 / max(1, stats.records),
        "redis_cpu_us": redis_us,
    }


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f}  ({min(values):,.0f}-{max(values):,.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer records and repeats")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--records", type=int, default=40_000, help="records per thread")
    parser.add_argument("--ship-records", type=int, default=200_000)
    parser.add_argument("--ship-only", action="store_true", help="only the shipping rows")
    parser.add_argument(
        "--json",
        dest="json_path",
        default=str(HERE / "results" / "latest-log.json"),
        help="write the results here (default results/latest-log.json)",
    )
    parser.add_argument("--save", action="store_true", help="also a dated copy for committing")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.records, args.ship_records = 3, 10_000, 50_000
    out_lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out_lines.append(line)

    say(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"structlog {structlog.__version__}"
    )
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "structlog": structlog.__version__,
        },
        "settings": {
            "repeat": args.repeat,
            "records": args.records,
            "ship_records": args.ship_records,
        },
        "write": {},
        "ship": {},
        "targets": [],
    }
    for threads in () if args.ship_only else (1, 4):
        per_thread = max(1, args.records // threads)
        runs: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.repeat):
            for name, factory in CASES.items():
                runs[name].append(run_write(factory, threads, per_thread))
        say(f"\nwrite, {threads} thread(s), {per_thread * threads:,} records per run")
        say(f"  {'case':<22}{'records/s median (min-max)':>36}  unidist.log/this")
        ours = statistics.median(runs["unidist.log"])
        for name, values in runs.items():
            rel = "" if name == "unidist.log" else f"{ours / statistics.median(values):.2f}x"
            say(f"  {name:<22}{_fmt(values):>36}  {rel}")
        ratio = statistics.median(runs["structlog JSON"]) / ours
        best = max(runs["structlog JSON"]) / max(runs["unidist.log"])
        site = ours / statistics.median(runs["structlog JSON+site"])
        site_best = max(runs["unidist.log"]) / max(runs["structlog JSON+site"])
        plain_ok = ratio <= WRITE_TARGET
        site_ok = site >= SITE_TARGET
        say(
            f"  #5  unidist.log >= {1 / WRITE_TARGET:.2f}x plain structlog JSON: "
            f"{1 / ratio:.2f}x median, {1 / best:.2f}x best: {'met' if plain_ok else 'MISSED'}"
        )
        say(
            f"  #11 unidist.log >= {SITE_TARGET}x structlog JSON with call-site fields: "
            f"{site:.2f}x median, {site_best:.2f}x best: {'met' if site_ok else 'MISSED'}"
        )
        results["write"][str(threads)] = {
            "runs": runs,
            "ratio": ratio,
            "ratio_best": best,
            "unidist_over_structlog_site": site,
            "unidist_over_structlog_site_best": site_best,
        }
        results["targets"] += [
            {"source": "#5", "threads": threads, "text": "unidist.log >= 0.67x structlog JSON",
             "value": 1 / ratio, "met": plain_ok},
            {"source": "#11", "threads": threads,
             "text": "unidist.log >= 0.67x structlog JSON with call-site fields",
             "value": site, "met": site_ok},
        ]  # fmt: skip
    import redis

    from backends.redis.server import RedisServer

    ship_runs: list[dict[str, Any]] = []
    directory = write_ship_file(args.ship_records)
    try:
        with RedisServer() as server:
            for run in range(args.repeat):
                ship_runs.append(run_ship(directory, server, run))
                client = redis.Redis.from_url(server.url)
                client.flushall()  # each pass starts from an empty store
                client.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rates = [r["rate"] for r in ship_runs]
    peaks = [r["peak_kb"] for r in ship_runs if r["peak_kb"] is not None]
    stored = ship_runs[-1]["stored"]
    ship_ok = statistics.median(rates) >= SHIP_TARGET
    peak_kb = max(peaks) if peaks else None
    shipper_us = statistics.median(r["shipper_cpu_us"] for r in ship_runs)
    redis_us_runs = [r["redis_cpu_us"] for r in ship_runs if r["redis_cpu_us"] is not None]
    redis_us = statistics.median(redis_us_runs) if redis_us_runs else None
    say(
        f"\nship {args.ship_records:,} records to redis (one host, one pass each, "
        f"{stored:,} stored, {ship_runs[-1]['batches']} batches)"
    )
    say(
        f"  records/s {_fmt(rates)}  peak RSS {fmt_rss(peak_kb)}  "
        f"(#5/#11 target >= {SHIP_TARGET:,}/s: {'met' if ship_ok else 'MISSED'})"
    )
    if redis_us is not None:
        # The shipper waits for each batch's reply, so a pass takes about the sum of both
        # processes' CPU time (plus one state-file fsync pair per batch) when the machine
        # is otherwise idle: the CPU-bound rate is what an unloaded box would show.
        say(
            f"  CPU per record: shipper {shipper_us:.2f} us, redis-server {redis_us:.2f} us "
            f"-> CPU-bound rate {1e6 / (shipper_us + redis_us):,.0f}/s"
        )
    results["ship"] = {
        "records": args.ship_records,
        "stored": stored,
        "runs": rates,
        "peak_rss_kb": peak_kb,
        "shipper_cpu_us_per_record": shipper_us,
        "redis_cpu_us_per_record": redis_us,
        "batches": ship_runs[-1]["batches"],
    }
    results["targets"].append(
        {"source": "#11", "text": f"shipping >= {SHIP_TARGET:,} records/s into Redis",
         "value": statistics.median(rates), "met": ship_ok}
    )  # fmt: skip
    out = Path(args.json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}", file=sys.stderr)
    if args.save:
        import datetime as dt

        stem = HERE / "results" / f"{dt.date.today().isoformat()}-{os.cpu_count()}core-log"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        stem.with_suffix(".txt").write_text("\n".join(out_lines) + "\n", encoding="utf-8")
        print(f"wrote {stem}.json and .txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
