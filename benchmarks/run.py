"""unidist against its peers: locks, counters, state buckets and queues, in one run.

Usage (``scripts/bench.sh`` makes the environment with the peers and runs this)::

    python benchmarks/run.py                   # everything, 5 repetitions (~10 min on 2 cores)
    python benchmarks/run.py --quick           # 2 short repetitions (~2 min)
    python benchmarks/run.py --only locks      # locks|counters|state|queues|batch (comma-separated)
    python benchmarks/run.py --repeat 7 --duration 1
    python benchmarks/run.py --filter redis    # rows whose id contains a substring
    python benchmarks/run.py --save            # also results/<date>-<N>core.json and .txt
    python benchmarks/run.py --curves          # scaling: 1,2,4,8 threads and processes,
                                               # unidist rows and the main peers only

Each row is one implementation with 1 or 4 threads or 4 spawned processes; the table shows
the median ops/s with min-max over the repetitions, the peak resident set of the largest
process of the case (the benchmark process for threads, the largest worker for processes;
Redis rows do not count the server), the durability each row runs with, the
ratio unidist/this row at the same worker configuration, and the targets from the issues
(reported, never asserted). Results go to benchmarks/results/latest.json (with machine facts
and package versions). Redis rows use throwaway redis-servers on loopback ports, one without
persistence and one with AOF ``appendfsync always``; they are stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import _harness as h  # noqa: E402

# The peers drawn in the scaling curves (--curves) beside every unidist row: the closest
# competitor at equal durability and the machine's limit where the row has one.
CURVE_PEERS = frozenset(
    {
        "locks.memory.threading",
        "locks.file.portalocker",
        "locks.file.flock",
        "locks.redis.redispy",
        "counters.memory.dict_lock",
        "counters.file.diskcache_full",
        "counters.file.write_fsync",
        "counters.redis.incr",
        "state.memory.dict_lock_json",
        "state.file.diskcache_index_full",
        "state.file.write_fsync",
        "state.redis.hset_hget",
        "queues.memory.stdlib",
        "queues.file.pq_ack",
        "queues.file.deque_full",
        "queues.redis.lpush_brpop",
        "queues.redis.streams",
    }
)
CURVE_WORKERS = "1,2,4,8"

GROUPS = {
    "locks": "cases_locks",
    "counters": "cases_counters",
    "state": "cases_state",
    "queues": "cases_queues",
    "batch": "cases_batch",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="unidist benchmarks against peer libraries (ratios, never asserts)."
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated groups to run: " + ", ".join(GROUPS) + " (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="2 short repetitions per case")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per case (5)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per repetition")
    parser.add_argument(
        "--workers", default=None, help="thread worker counts, e.g. 1,2,4,8 (default 1,4)"
    )
    parser.add_argument(
        "--process-workers",
        default=None,
        help="process worker counts, e.g. 1,2,4,8; empty for none (default 4)",
    )
    parser.add_argument(
        "--curves",
        action="store_true",
        help="scaling curves: unidist rows and the main peers at "
        f"{CURVE_WORKERS} threads and processes (worker options still apply)",
    )
    parser.add_argument("--filter", default="", help="only rows whose id contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON output path (default results/latest.json; with --curves latest-curves.json)",
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help="also write results/<date>-<N>core.json and .txt (for committing)",
    )
    parser.add_argument(
        "--no-interleave",
        dest="interleave",
        action="store_false",
        help="run all repetitions of a case in a row (default: cases take turns)",
    )
    parser.add_argument("--dir", default=None, help="scratch directory parent (default: TMPDIR)")
    args = parser.parse_args(argv)
    only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in only if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    args.groups = only or list(GROUPS)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    default_threads, default_procs = (CURVE_WORKERS, CURVE_WORKERS) if args.curves else ("1,4", "4")
    for name, default in (("workers", default_threads), ("process_workers", default_procs)):
        text = getattr(args, name)
        try:
            counts = _ints(default if text is None else text)
        except ValueError:
            parser.error(f"--{name.replace('_', '-')} takes comma-separated integers, not {text!r}")
        if any(c < 1 for c in counts):
            parser.error(f"--{name.replace('_', '-')}: worker counts must be >= 1, got {text!r}")
        setattr(args, name, counts)
    if not args.workers and not args.process_workers:
        parser.error("no worker counts: give --workers and/or --process-workers")
    return args


def _ints(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    default_name = "latest-curves.json" if args.curves else "latest.json"
    warnings.simplefilter("ignore")
    modules = [GROUPS[g] for g in args.groups]
    h._import_modules(modules)
    settings = h.Settings(repeat=2, duration=0.15, warmup=0.03) if args.quick else h.Settings()
    if args.repeat is not None:
        settings.repeat = args.repeat
    if args.duration is not None:
        settings.duration = args.duration
    groups = set(args.groups)
    items = [i for i in h.REGISTRY.values() if i.group in groups and args.filter in i.id]
    if args.curves:
        items = [i for i in items if i.role == "unidist" or i.id in CURVE_PEERS]
    workers, pworkers = args.workers, args.process_workers

    # Inside each (group, backend, operation) block and worker configuration, the cases take
    # turns: repetition 1 of every implementation, then repetition 2, ... so that drift in
    # the machine's load hits unidist and its peers alike (--no-interleave: all repetitions of
    # a case in a row, with one set of workers, which is faster).
    blocks: dict[tuple[str, str, str], list[h.Impl]] = {}
    for item in items:
        blocks.setdefault((item.group, item.backend, item.primitive), []).append(item)
    steps: list[tuple[tuple[int, str], list[h.Impl]]] = []
    for block in blocks.values():
        configs: list[tuple[int, str]] = []
        for item in block:
            for c in h.configs_for(item, workers, pworkers):
                if c not in configs:
                    configs.append(c)
        for c in configs:
            steps.append((c, [i for i in block if c in h.configs_for(i, workers, pworkers)]))
    plan = [(item, *c) for c, group in steps for item in group]
    if args.list:
        for item, w, kind in plan:
            print(f"{item.id:40} {h.fmt_config(w, kind):10} {item.durability}")
        return 0

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    runner = h.CaseRunner(settings, modules, args.dir)
    rows: list[h.Row] = []
    started = time.monotonic()
    done = 0
    try:
        for (w, kind), group in steps:
            group_rows = [h.new_row(item, w, kind) for item in group]
            rounds = settings.repeat if args.interleave else 1
            per_case = 1 if args.interleave else settings.repeat
            for _ in range(rounds):
                for item, row in zip(group, group_rows):
                    if row.error is None:
                        runner.run_into(row, item, per_case)
            for row in group_rows:
                done += 1
                shown = row.error if row.error else f"{h.fmt_rate(row.median)} ops/s"
                print(
                    f"[{done}/{len(plan)} {time.monotonic() - started:4.0f}s] {row.id} "
                    f"{h.fmt_config(w, kind)}: {shown}",
                    file=sys.stderr,
                    flush=True,
                )
            rows.extend(group_rows)
        facts = h.machine_facts(str(runner.base), ROOT, runner.services)
        facts["load_average_at_start"] = load_at_start
    finally:
        runner.close()

    order = {(i.id, w, k): n for n, (i, w, k) in enumerate(plan)}
    # Table order: block, config, then unidist rows first.
    role_rank = {"unidist": 0, "peer": 1, "limit": 2}
    block_rank = {key: n for n, key in enumerate(blocks)}
    rows.sort(
        key=lambda r: (
            block_rank[(r.group, r.backend, r.primitive)],
            (r.kind != "thread", r.workers),
            role_rank.get(r.role, 3),
            order[(r.id, r.workers, r.kind)],
        )
    )
    summary = h.analyse(rows, [t for t in h.TARGETS if t.unidist in {i.id for i in items}])
    elapsed = time.monotonic() - started
    header = (
        f"unidist benchmarks: {facts['cpu_count']} CPUs ({facts['cpu_model']}), "
        f"{facts['kernel']}, {facts['python']}, scratch on {facts['bench_dir_fs']}; "
        f"{settings.repeat} x {settings.duration}s per case; median ops/s (min-max); "
        f"run took {elapsed:.0f}s; load average (1 min) {load_at_start[0]} at start, "
        f"{facts['load_average_at_end'][0]} at end"
    )
    text = "\n\n".join(
        [
            header,
            h.render_table(rows),
            h.render_targets(summary),
            h.render_notes(items),
            "Package versions: " + ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v),
        ]
    )
    print(text)
    payload = {
        "machine": facts,
        "settings": {
            **vars(settings),
            "groups": args.groups,
            "filter": args.filter,
            "interleave": args.interleave,
            "curves": args.curves,
            "workers": workers,
            "process_workers": pworkers,
            "elapsed_s": round(elapsed, 1),
        },
        "rows": h.rows_to_json(rows),
        "targets": summary,
    }
    out = Path(args.out if args.out else HERE / "results" / default_name)
    h.write_json(out, payload)
    out.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    print(f"\nwrote {out}", file=sys.stderr)
    charts = [out.with_suffix(".png")]
    if args.save:
        stem = f"{dt.date.today().isoformat()}-{os.cpu_count()}core" + (
            "-curves" if args.curves else ""
        )
        h.write_json(HERE / "results" / f"{stem}.json", payload)
        (HERE / "results" / f"{stem}.txt").write_text(text + "\n", encoding="utf-8")
        print(f"wrote {HERE / 'results' / stem}.json and .txt", file=sys.stderr)
        charts.append(HERE / "results" / f"{stem}.png")
    _charts(payload, charts)
    return 0


def _charts(payload: dict[str, object], paths: list[Path]) -> None:
    """Render the run as PNG charts (needs matplotlib, part of the bench extra)."""
    try:
        from chart import render
    except ImportError as exc:
        print(f"no chart: {exc} (install the bench extra)", file=sys.stderr)
        return
    for path in paths:
        try:
            render(payload, path)
            print(f"wrote {path}", file=sys.stderr)
        except ValueError as exc:
            print(f"no chart: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
