"""Queue depth: fill a queue to 1k and 1M messages, reopen it, and work at that depth.

Usage (``scripts/bench.sh`` makes the environment; run this with its Python)::

    .venv-bench/bin/python benchmarks/bench_depth.py              # depths 1000 and 1000000
    .venv-bench/bin/python benchmarks/bench_depth.py --quick      # depths 1000 and 100000
    .venv-bench/bin/python benchmarks/bench_depth.py --depths 1000,250000 --backends file,pq_ack

For each backend and depth D (100-byte messages, one thread), in fresh processes:

1. **fill**: put D messages into an empty queue; messages/s. What a user would do for a bulk
   load: unidist ``put_many`` of 10,000 messages per call (``file://`` with ``fsync=batch``:
   one journal record per call), persist-queue
   ``SQLiteAckQueue`` one ``put`` per message (it has no batch API and refuses
   ``auto_commit=False``), ``diskcache.Deque`` appends inside ``transact()`` blocks of 10,000.
   A fill stops at ``--fill-limit`` seconds (default 600) and the depth it reached is reported.
2. **open**: a new process opens the queue and receives (and acks) the first message: the
   seconds from creating the queue object to holding that message, and the peak resident set
   of that process (``VmHWM``, the interpreter and imports included; ``base`` is its resident
   set before opening). Issue 4's target for ``file://``: 1M pending messages open in < 2 s
   and < 150 MB RSS (reported as met or missed, judged on the whole process).
3. **steady**: in the same process, put + receive + ack (one message in, one out: the depth
   stays D) for ``--steady`` seconds; operations/s and the peak resident set during it.
   ``file://`` runs with ``fsync=always`` here, ``diskcache.Deque`` with
   ``sqlite_synchronous=2`` and persist-queue with sqlite's default (FULL on most builds): an
   fsync per operation for all three.

``memory://`` keeps its queue in the process: it is filled and worked in one process (no
open step). ``redis://`` uses a throwaway ``redis-server`` without persistence; the server's
memory (``INFO memory``) is reported beside the client's. Nothing is asserted; numbers are
relative to the machine. Results: ``benchmarks/results/latest-depth.json`` (``--save``: also
``<date>-<N>core-depth.json``/``.txt``, for committing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _common import MESSAGE  # noqa: E402
from _harness import (  # noqa: E402
    Services,
    fmt_rate,
    fmt_rss,
    machine_facts,
    peak_rss_kb,
    reset_peak_rss,
    write_json,
)

BACKENDS = ("file", "redis", "memory", "pq_ack", "deque")
LABELS = {
    "file": "unidist file://",
    "redis": "unidist redis://",
    "memory": "unidist memory://",
    "pq_ack": "persist-queue SQLiteAckQueue",
    "deque": "diskcache.Deque",
}
FILL_DURABILITY = {
    "file": "fsync=batch, put_many of 10,000",
    "redis": "no persistence, put_many of 10,000",
    "memory": "in-process, put_many of 10,000",
    "pq_ack": "sqlite default sync, commit per put",
    "deque": "sync=NORMAL, transact() per 10k",
}
STEADY_DURABILITY = {
    "file": "fsync=always",
    "redis": "no persistence",
    "memory": "in-process",
    "pq_ack": "sqlite default sync",
    "deque": "sync=FULL",
}
OPEN_TARGET_S = 2.0  # issue 4: a file:// queue with 1M pending messages opens in < 2 s ...
OPEN_TARGET_MB = 150  # ... and < 150 MB RSS
OPEN_TARGET_DEPTH = 1_000_000
DEQUE_CHUNK = 10_000
QUEUE_NAME = "depth"


# ---------------------------------------------------------------------------------- child
def _rss_now_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _unidist_queue(spec: dict[str, Any], fsync: str) -> Any:
    import unidist

    b = spec["backend"]
    if b == "file":
        url = f"file://{spec['dir']}/unidist?fsync={fsync}"
    elif b == "redis":
        url = spec["redis_url"]
    else:
        url = f"memory://depth-{os.getpid()}"
    return unidist.MessageQueue(QUEUE_NAME, backend=url)


class _Ops:
    """put / take-one (receive+ack) / close for one backend."""

    def __init__(self, spec: dict[str, Any], phase: str) -> None:
        b = spec["backend"]
        self.close: Any = lambda: None
        self.put_chunk: Any = None
        if b in ("file", "redis", "memory"):
            q = _unidist_queue(spec, spec["fill_fsync"] if phase == "fill" else "always")
            self.put = q.put

            def put_many(n: int) -> None:
                q.put_many([MESSAGE] * n)

            self.put_chunk = put_many

            def take() -> None:
                q.receive(timeout=30).ack()

            self.take = take
            self.depth = lambda: q.stats()["ready"]
        elif b == "pq_ack":
            from persistqueue import SQLiteAckQueue

            pq = SQLiteAckQueue(os.path.join(spec["dir"], "pq"), auto_commit=True)
            self.put = pq.put

            def take_pq() -> None:
                pq.ack(pq.get(timeout=30))

            self.take = take_pq
            self.depth = pq.qsize
            self.close = pq.close
        elif b == "deque":
            import diskcache

            kwargs: dict[str, Any] = {"eviction_policy": "none"}
            if phase != "fill":
                kwargs["sqlite_synchronous"] = 2
            cache = diskcache.Cache(os.path.join(spec["dir"], "deque"), **kwargs)
            dq = diskcache.Deque.fromcache(cache)
            self.put = dq.append

            def take_dq() -> None:
                dq.popleft()

            def put_chunk(n: int) -> None:
                with dq.transact():
                    for _ in range(n):
                        dq.append(MESSAGE)

            self.take = take_dq
            self.put_chunk = put_chunk
            self.depth = lambda: len(dq)
            self.close = cache.close
        else:
            raise ValueError(f"unknown backend {b!r}")


def _fill(spec: dict[str, Any], ops: _Ops) -> dict[str, Any]:
    depth, limit = spec["depth"], spec["fill_limit"]
    clock = time.perf_counter
    t0 = clock()
    deadline = t0 + limit
    done = 0
    if ops.put_chunk is not None:
        while done < depth and clock() < deadline:
            n = min(DEQUE_CHUNK, depth - done)
            ops.put_chunk(n)
            done += n
    else:
        put = ops.put
        while done < depth:
            n = min(1000, depth - done)
            for _ in range(n):
                put(MESSAGE)
            done += n
            if clock() >= deadline:
                break
    elapsed = clock() - t0
    return {"filled": done, "fill_s": elapsed, "fill_rate": done / elapsed if elapsed else None}


def _steady(ops: _Ops, seconds: float) -> dict[str, Any]:
    reset_peak_rss()
    clock = time.perf_counter
    put, take = ops.put, ops.take
    n = 0
    t0 = clock()
    end = t0 + seconds
    while True:
        for _ in range(50):
            put(MESSAGE)
            take()
        n += 50
        t = clock()
        if t >= end:
            break
    return {"steady_rate": n / (t - t0), "steady_ops": n, "steady_peak_rss_kb": peak_rss_kb()}


def _import_for(backend: str) -> None:
    import importlib

    importlib.import_module(
        {"pq_ack": "persistqueue", "deque": "diskcache"}.get(backend, "unidist")
    )
    if backend in ("file", "redis"):  # the backend's modules too (imported on first use)
        importlib.import_module(f"unidist.backends.{backend}")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One phase in this (fresh) process; the result is printed as JSON by main."""
    import warnings

    warnings.simplefilter("ignore")
    out: dict[str, Any] = {"base_rss_kb": _rss_now_kb()}
    phase = spec["phase"]
    if phase == "fill":
        ops = _Ops(spec, "fill")
        try:
            out.update(_fill(spec, ops))
            out["fill_peak_rss_kb"] = peak_rss_kb()
            if spec["backend"] == "memory":  # in-process: work at depth now
                out["depth_seen"] = ops.depth()
                out.update(_steady(ops, spec["steady"]))
        finally:
            ops.close()
        return out
    # open: a fresh process opens the filled queue and takes the first message (the
    # library is imported before the clock starts: opening is what is timed)
    _import_for(spec["backend"])
    out["base_rss_kb"] = _rss_now_kb()
    clock = time.perf_counter
    t0 = clock()
    ops = _Ops(spec, "open")
    try:
        ops.take()
        out["open_s"] = clock() - t0
        out["open_peak_rss_kb"] = peak_rss_kb()
        out["depth_seen"] = ops.depth() + 1
        out.update(_steady(ops, spec["steady"]))
    finally:
        ops.close()
    return out


# ---------------------------------------------------------------------------------- parent
def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"{spec['phase']} timed out after {timeout:.0f}s"}
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()] or ["no output"]
        return {"error": f"{spec['phase']}: {lines[-1][:300]}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _du_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def _redis_memory(url: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("memory")
    finally:
        client.close()
    return {
        "server_used_memory": info.get("used_memory"),
        "server_used_memory_rss": info.get("used_memory_rss"),
        "server_used_memory_peak": info.get("used_memory_peak"),
    }


def run_case(backend: str, depth: int, args: argparse.Namespace, base: Path,
             redis_url: str | None) -> dict[str, Any]:  # fmt: skip
    case_dir = base / f"{backend}-{depth}"
    case_dir.mkdir(mode=0o700)
    spec: dict[str, Any] = {
        "backend": backend,
        "depth": depth,
        "dir": str(case_dir),
        "fill_fsync": args.fill_fsync,
        "fill_limit": args.fill_limit,
        "steady": args.steady,
        "redis_url": redis_url,
    }
    result: dict[str, Any] = {"backend": backend, "label": LABELS[backend], "depth": depth}
    try:
        if backend == "redis":
            if redis_url is None:
                result["error"] = "no redis-server (is it on PATH?)"
                return result
            import redis

            client = redis.Redis.from_url(redis_url)
            client.flushall()
            client.config_resetstat()
            client.close()
        fill = _run_child({**spec, "phase": "fill"}, args.fill_limit * 2 + 300)
        result.update({k: v for k, v in fill.items() if k != "base_rss_kb"})
        result["fill_base_rss_kb"] = fill.get("base_rss_kb")
        if "error" in fill:
            return result
        if backend != "memory":
            result["disk_bytes"] = _du_bytes(case_dir) if backend != "redis" else None
            opened = _run_child({**spec, "phase": "open"}, 600 + args.steady * 4)
            result.update({k: v for k, v in opened.items() if k != "base_rss_kb"})
            result["open_base_rss_kb"] = opened.get("base_rss_kb")
        if backend == "redis" and redis_url is not None:
            result.update(_redis_memory(redis_url))
    finally:
        if backend == "redis" and redis_url is not None:
            with contextlib.suppress(Exception):
                import redis

                client = redis.Redis.from_url(redis_url)
                client.flushall()
                client.close()
        shutil.rmtree(case_dir, ignore_errors=True)
    return result


def _mb(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.0f} MB" if nbytes >= 1e7 else (
        f"{nbytes / 1e6:.1f} MB"
    )  # fmt: skip


def open_verdict(r: dict[str, Any]) -> str | None:
    """Issue 4's target for a 1M-message file:// queue, or None where it does not apply."""
    if r["backend"] != "file" or r.get("filled") != OPEN_TARGET_DEPTH or "open_s" not in r:
        return None
    peak_mb = (r.get("open_peak_rss_kb") or 0) / 1024
    t_ok = r["open_s"] < OPEN_TARGET_S
    m_ok = peak_mb < OPEN_TARGET_MB
    return (
        f"issue 4 target (1M pending file:// messages open in < {OPEN_TARGET_S:g} s and "
        f"< {OPEN_TARGET_MB} MB RSS): open {r['open_s']:.2f} s {'met' if t_ok else 'MISSED'}, "
        f"peak RSS {peak_mb:.0f} MB {'met' if m_ok else 'MISSED'} (whole process; "
        f"{(r.get('open_base_rss_kb') or 0) / 1024:.0f} MB before opening)"
    )


def render(results: list[dict[str, Any]]) -> str:
    header = ["depth", "implementation", "fill msgs/s", "fill (durability)", "open+1st s",
              "open peak RSS", "steady ops/s", "steady (durability)", "steady peak RSS",
              "disk / server"]  # fmt: skip
    lines: list[list[str]] = []
    errors: list[str] = []
    for r in results:
        depth = f"{r['depth']:,}"
        if r.get("filled") is not None and r["filled"] != r["depth"]:
            depth += f" (reached {r['filled']:,})"
        if "error" in r:
            errors.append(f"{r['depth']:,} {r['label']}: ERROR {r['error']}")
        extra = (
            f"server {_mb(r.get('server_used_memory_peak'))} peak"
            if r["backend"] == "redis"
            else _mb(r.get("disk_bytes"))
        )
        if r["backend"] == "memory":
            open_s, open_rss = "n/a (in-process)", fmt_rss(r.get("fill_peak_rss_kb"))
        else:
            open_s = f"{r['open_s']:.3f}" if "open_s" in r else "-"
            open_rss = fmt_rss(r.get("open_peak_rss_kb"))
        lines.append(
            [
                depth,
                r["label"],
                fmt_rate(r.get("fill_rate")),
                FILL_DURABILITY[r["backend"]],
                open_s,
                open_rss,
                fmt_rate(r.get("steady_rate")),
                STEADY_DURABILITY[r["backend"]],
                fmt_rss(r.get("steady_peak_rss_kb")),
                extra,
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    prev = None
    for r, line in zip(results, lines):
        if prev is not None and r["depth"] != prev:
            out.append("")
        prev = r["depth"]
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    out += errors
    ratios = ["unidist/peer, steady put+receive+ack at depth (fsync per op for all three):"]
    for depth in sorted({r["depth"] for r in results}):
        by = {r["backend"]: r for r in results if r["depth"] == depth}
        f = by.get("file", {}).get("steady_rate")
        for peer in ("pq_ack", "deque"):
            p = by.get(peer, {}).get("steady_rate")
            if f and p:
                ratios.append(f"  {depth:>9,}  file:// / {LABELS[peer]}: {f / p:.2f}x")
    if len(ratios) == 1:
        ratios = []  # no file:// and peer pair at one depth in this run
    verdicts = [v for v in (open_verdict(r) for r in results) if v]
    return "\n".join(
        [*out, *(["", *ratios] if ratios else []), *(["", *verdicts] if verdicts else [])]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Queue depth: fill, reopen and work at 1k / 1M messages (reports only)."
    )
    parser.add_argument("--depths", default=None, help="comma-separated (1000,1000000)")
    parser.add_argument("--quick", action="store_true", help="depths 1000,100000; 1 s steady")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated, from " + ", ".join(BACKENDS) + " (all)",
    )
    parser.add_argument("--steady", type=float, default=None, help="seconds of steady work (3)")
    parser.add_argument(
        "--fill-limit", type=float, default=600.0, help="stop a fill after this many seconds"
    )
    parser.add_argument(
        "--fill-fsync",
        default="batch",
        choices=("always", "batch", "never"),
        help="file:// fsync mode for the fill (batch)",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "latest-depth.json"))
    parser.add_argument("--save", action="store_true", help="also a dated copy for committing")
    parser.add_argument("--dir", default=None, help="scratch directory parent (default: TMPDIR)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return args
    depths = args.depths or ("1000,100000" if args.quick else "1000,1000000")
    try:
        args.depth_list = sorted({int(x) for x in depths.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--depths takes comma-separated integers, not {depths!r}")
    if not args.depth_list or any(d < 1 for d in args.depth_list):
        parser.error(f"--depths must be integers >= 1, got {depths!r}")
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backend_list if b not in BACKENDS]
    if bad or not args.backend_list:
        parser.error(f"--backends: unknown {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
    if args.steady is None:
        args.steady = 1.0 if args.quick else 3.0
    if args.steady <= 0 or args.fill_limit <= 0:
        parser.error("--steady and --fill-limit must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    base = Path(tempfile.mkdtemp(prefix="unidist-bench-depth-", dir=args.dir))
    server = None
    redis_url = None
    results: list[dict[str, Any]] = []
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    services = Services()  # only for the redis-server version in the machine facts
    try:
        if "redis" in args.backend_list:
            try:
                from backends.redis.server import RedisServer

                server = RedisServer()
                redis_url = server.url
            except Exception as exc:
                print(f"no redis-server: {exc}", file=sys.stderr)
        for depth in args.depth_list:
            for backend in args.backend_list:
                t0 = time.monotonic()
                r = run_case(backend, depth, args, base, redis_url)
                results.append(r)
                opened = f"{r['open_s']:.2f}s" if "open_s" in r else "n/a"
                shown = r.get("error") or (
                    f"fill {fmt_rate(r.get('fill_rate'))}/s, open {opened}, steady "
                    f"{fmt_rate(r.get('steady_rate'))}/s"
                )
                print(
                    f"[{time.monotonic() - started:5.0f}s] {LABELS[backend]} depth {depth:,}: "
                    f"{shown} ({time.monotonic() - t0:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
        facts = machine_facts(str(base), ROOT, services)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    facts["load_average_at_start"] = load_at_start
    elapsed = time.monotonic() - started
    header = (
        f"unidist queue depth: {facts['cpu_count']} CPUs ({facts['cpu_model']}), "
        f"{facts['kernel']}, {facts['python']}, scratch on {facts['bench_dir_fs']}; "
        f"100-byte messages, 1 thread, steady {args.steady:g}s; run took {elapsed:.0f}s; load "
        f"average (1 min) {load_at_start[0]} at start, {facts['load_average_at_end'][0]} at end"
    )
    text = "\n\n".join([header, render(results), "Notes: see the top of bench_depth.py."])
    print(text)
    payload = {
        "machine": facts,
        "settings": {
            "depths": args.depth_list,
            "backends": args.backend_list,
            "steady_s": args.steady,
            "fill_limit_s": args.fill_limit,
            "fill_fsync": args.fill_fsync,
            "elapsed_s": round(elapsed, 1),
        },
        "results": results,
        "open_target": [v for v in (open_verdict(r) for r in results) if v],
    }
    out = Path(args.out)
    write_json(out, payload)
    print(f"\nwrote {out}", file=sys.stderr)
    if args.save:
        stem = HERE / "results" / f"{dt.date.today().isoformat()}-{os.cpu_count()}core-depth"
        write_json(stem.with_suffix(".json"), payload)
        stem.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
        print(f"wrote {stem}.json and .txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
