"""Payload sizes: unidist queues and buckets against their peers at 100 B, 10 KiB and 1 MiB.

Usage (``scripts/bench.sh`` makes the environment; run this with its Python)::

    .venv-bench/bin/python benchmarks/bench_sizes.py                 # 100,10240,1048576 B
    .venv-bench/bin/python benchmarks/bench_sizes.py --quick         # 2 short repetitions
    .venv-bench/bin/python benchmarks/bench_sizes.py --sizes 100,64k --only queues
    .venv-bench/bin/python benchmarks/bench_sizes.py --workers 1,4 --process-workers 4

Rows (one worker thread by default; each worker puts then gets, or sets then gets):

- queues: unidist ``MessageQueue`` get and receive+ack on ``file://`` (``fsync=always`` and
  ``fsync=batch``), ``memory://`` and ``redis://``; persist-queue ``SQLiteAckQueue``,
  ``diskcache.Deque`` (its default, and ``sqlite_synchronous=2``), raw ``LPUSH``+``BRPOP``,
  ``queue.Queue`` (the in-process limit);
- state: unidist ``SharedState`` set+get against ``diskcache.Index`` (default and
  ``sqlite_synchronous=2``), raw ``HSET``+``HGET`` with json, a dict behind a lock with json.

Each peer is compared with the unidist row of equal durability (as in ``run.py``). The table
shows operations per second (a queue operation is one message put and taken), MB/s of
payload (one message of the size per operation; MB = 10^6 bytes), min-max over the
repetitions, the peak resident set of the largest process (the benchmark process for thread
rows; Redis rows do not count the server) and the ratio unidist/this. Nothing is asserted.
Results: ``benchmarks/results/latest-sizes.json`` (``--save``: also
``<date>-<N>core-sizes.json``/``.txt``, for committing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import _harness as h  # noqa: E402
from _common import SIZES_ENV, fmt_size, parse_sizes  # noqa: E402

MODULE = "cases_sizes"
GROUPS = ("queues", "state")


def _ints(text: str, what: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        parser.error(f"{what} takes comma-separated integers, not {text!r}")
    if any(c < 1 for c in counts):
        parser.error(f"{what}: worker counts must be >= 1, got {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="unidist queues and buckets against peers by payload size (ratios only)."
    )
    parser.add_argument(
        "--sizes",
        default="100,10240,1048576",
        help="payload sizes in bytes, comma-separated; k/m suffixes allowed (100,10240,1048576)",
    )
    parser.add_argument("--only", default="", help="queues, state or both (default both)")
    parser.add_argument("--quick", action="store_true", help="2 short repetitions per case")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per case (5)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per repetition")
    parser.add_argument("--workers", default="1", help="thread worker counts (1)")
    parser.add_argument(
        "--process-workers", default="", help="process worker counts (none by default)"
    )
    parser.add_argument("--filter", default="", help="only rows whose id contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--out", default=str(HERE / "results" / "latest-sizes.json"))
    parser.add_argument("--save", action="store_true", help="also a dated copy for committing")
    parser.add_argument("--dir", default=None, help="scratch directory parent (default: TMPDIR)")
    args = parser.parse_args(argv)
    # The case module reads the sizes at import (here and in spawned workers).

    try:
        args.size_list = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(f"--sizes: {exc}")
    os.environ[SIZES_ENV] = ",".join(map(str, args.size_list))
    only = [g.strip() for g in args.only.split(",") if g.strip()]
    bad = [g for g in only if g not in GROUPS]
    if bad:
        parser.error(f"unknown group(s) {', '.join(bad)}; choose from {', '.join(GROUPS)}")
    args.groups = only or list(GROUPS)
    args.workers = _ints(args.workers, "--workers", parser)
    args.process_workers = _ints(args.process_workers, "--process-workers", parser)
    if not args.workers and not args.process_workers:
        parser.error("no worker counts: give --workers and/or --process-workers")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def _mbps(rate: float | None, size: int) -> str:
    if rate is None:
        return "-"
    v = rate * size / 1e6
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def size_of(row_id: str) -> int:
    return int(row_id.rsplit("@", 1)[1])


def render(rows: list[h.Row]) -> str:
    header = ["size", "backend", "implementation", "workers", "ops/s", "MB/s", "min-max",
              "peak RSS", "durability", "unidist/this"]  # fmt: skip
    lines: list[list[str] | str] = []
    prev = None
    for r in rows:
        block = (r.group, r.backend, r.primitive)
        if block != prev:
            lines.append("")
            lines.append(f"# {r.group} / {r.backend}: {r.primitive}")
            prev = block
        size = size_of(r.id)
        label = r.label if r.role != "limit" else f"{r.label} (limit)"
        if r.error:
            lines.append([fmt_size(size), r.backend, label, h.fmt_config(r.workers, r.kind),
                          "ERROR", r.error])  # fmt: skip
            continue
        med = r.median
        lines.append(
            [
                fmt_size(size),
                r.backend,
                label,
                h.fmt_config(r.workers, r.kind),
                h.fmt_rate(med),
                _mbps(med, size),
                f"{h.fmt_rate(min(r.samples))}-{h.fmt_rate(max(r.samples))}" if r.samples else "-",
                h.fmt_rss(r.peak_rss_kb),
                r.durability,
                f"{h.fmt_ratio(r.ratio)}x" if r.ratio is not None else "",
            ]
        )
    widths = [len(c) for c in header]
    for line in lines:
        if isinstance(line, list) and len(line) == len(header):
            widths = [max(w, len(c)) for w, c in zip(widths, line)]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        if isinstance(line, str):
            out.append(line)
        elif len(line) != len(header):
            out.append("  ".join(c.ljust(w) for c, w in zip(line[:5], widths)) + "  " + line[5])
        else:
            out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(out)


def render_ratios(rows: list[h.Row], sizes: list[int]) -> str:
    """unidist/peer by size, one line per peer and worker configuration."""
    table: dict[tuple[str, str, str, int, str], dict[int, float | None]] = {}
    for r in rows:
        if r.role == "unidist" or not r.compare_to:
            continue
        key = (r.group, r.backend, r.label, r.workers, r.kind)
        table.setdefault(key, {})[size_of(r.id)] = r.ratio
    lines = ["unidist/peer by payload size (same durability; >1 means unidist is faster):"]
    head = "  ".join(f"{fmt_size(s):>8}" for s in sizes)
    lines.append(f"  {'':58}{head}")
    for (group, backend, label, w, kind), by in table.items():
        name = f"{group}/{backend} {label}, {h.fmt_config(w, kind)}"
        cells = "  ".join(
            f"{'-' if by.get(s) is None else h.fmt_ratio(by[s]) + 'x':>8}" for s in sizes
        )
        lines.append(f"  {name:58}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    h._import_modules([MODULE])
    settings = h.Settings(repeat=2, duration=0.2, warmup=0.03) if args.quick else h.Settings()
    if args.repeat is not None:
        settings.repeat = args.repeat
    if args.duration is not None:
        settings.duration = args.duration
    items = [
        i
        for i in h.REGISTRY.values()
        if i.id.startswith("sizes.") and i.group in args.groups and args.filter in i.id
    ]
    # Blocks: (group, backend, size); inside a block and worker configuration the
    # implementations take turns, one repetition each.
    blocks: dict[tuple[str, str, str], list[h.Impl]] = {}
    for item in items:
        blocks.setdefault((item.group, item.backend, item.primitive), []).append(item)
    steps: list[tuple[tuple[int, str], list[h.Impl]]] = []
    for block in blocks.values():
        configs: list[tuple[int, str]] = []
        for item in block:
            for c in h.configs_for(item, args.workers, args.process_workers):
                if c not in configs:
                    configs.append(c)
        for c in configs:
            group = [i for i in block if c in h.configs_for(i, args.workers, args.process_workers)]
            steps.append((c, group))
    if args.list:
        for (w, kind), group in steps:
            for item in group:
                print(f"{item.id:44} {h.fmt_config(w, kind):10} {item.durability}")
        return 0

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    runner = h.CaseRunner(settings, [MODULE], args.dir)
    rows: list[h.Row] = []
    started = time.monotonic()
    total = sum(len(g) for _, g in steps)
    try:
        for (w, kind), group in steps:
            group_rows = [h.new_row(item, w, kind) for item in group]
            for _ in range(settings.repeat):
                for item, row in zip(group, group_rows):
                    if row.error is None:
                        runner.run_into(row, item, 1)
            for row in group_rows:
                rows.append(row)
                shown = row.error if row.error else f"{h.fmt_rate(row.median)} ops/s"
                print(
                    f"[{len(rows)}/{total} {time.monotonic() - started:4.0f}s] {row.id} "
                    f"{h.fmt_config(w, kind)}: {shown}",
                    file=sys.stderr,
                    flush=True,
                )
        facts = h.machine_facts(str(runner.base), ROOT, runner.services)
        facts["load_average_at_start"] = load_at_start
    finally:
        runner.close()
    h.analyse(rows, [])
    role_rank = {"unidist": 0, "peer": 1, "limit": 2}
    rows.sort(key=lambda r: (r.group, size_of(r.id), r.backend, r.kind != "thread", r.workers,
                             role_rank.get(r.role, 3)))  # fmt: skip
    elapsed = time.monotonic() - started
    header = (
        f"unidist payload sizes: {facts['cpu_count']} CPUs ({facts['cpu_model']}), "
        f"{facts['kernel']}, {facts['python']}, scratch on {facts['bench_dir_fs']}; "
        f"{settings.repeat} x {settings.duration}s per case; median (min-max); run took "
        f"{elapsed:.0f}s; load average (1 min) {load_at_start[0]} at start, "
        f"{facts['load_average_at_end'][0]} at end"
    )
    text = "\n\n".join(
        [
            header,
            render(rows),
            render_ratios(rows, args.size_list),
            "Notes: a message of N bytes is a JSON string whose encoding is N bytes; a bucket "
            'value of N bytes a JSON object {"pad": ...} of about N bytes (1,000 keys per '
            "worker, fewer for large values: at most 8 MiB of distinct values per worker). "
            "MB/s counts each message once (put+get of one message). queue.Queue and the dict "
            "hold a reference (no copy, no encoding for the queue): a limit, not a peer. See "
            "run.py's notes for what each peer does.",
        ]
    )
    print(text)
    payload: dict[str, Any] = {
        "machine": facts,
        "settings": {
            **vars(settings),
            "sizes": args.size_list,
            "groups": args.groups,
            "filter": args.filter,
            "workers": args.workers,
            "process_workers": args.process_workers,
            "elapsed_s": round(elapsed, 1),
        },
        "rows": [
            {
                **d,
                "size": size_of(d["id"]),
                "mb_per_s": None if d["median"] is None else d["median"] * size_of(d["id"]) / 1e6,
            }
            for d in h.rows_to_json(rows)
        ],
    }
    out = Path(args.out)
    h.write_json(out, payload)
    print(f"\nwrote {out}", file=sys.stderr)
    if args.save:
        stem = HERE / "results" / f"{dt.date.today().isoformat()}-{os.cpu_count()}core-sizes"
        h.write_json(stem.with_suffix(".json"), payload)
        stem.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
        print(f"wrote {stem}.json and .txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
