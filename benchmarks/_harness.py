"""The benchmark harness: cases, workers, repetitions, ratios, targets, table and JSON.

A *case* is one implementation (unidist or a peer) of one primitive on one backend, run by
``workers`` workers of one kind (``thread`` or ``process``). The case modules register
implementations with :func:`impl` and the targets from the issues with :func:`target`.

How a case runs:

1. ``setup(env)`` runs once in the parent, outside the timed region (create a directory,
   pre-create shared objects for thread workers). Its result (``shared``) goes to the workers;
   for process workers it must pickle.
2. Each worker calls ``worker(env, shared, index)``, which builds its clients, files and
   connections and returns ``run`` (or ``(run, close)``), where ``run(n)`` does ``n``
   operations and returns None (or the number of operations done, for batched peers).
3. Each worker warms up, reports ready, and waits at a barrier; the parent joins the barrier,
   so all workers start together. Each worker runs for ``duration`` seconds in batches whose
   size doubles until a batch takes a few milliseconds, then reports its operation count and
   its start and end times (``perf_counter``: CLOCK_MONOTONIC, shared by all processes).
   The sample is ``sum(ops) / (last end - first start)``.
   Each worker also reports the peak resident set (``VmHWM``) of its process when the case
   ends; the peak is reset (``/proc/self/clear_refs``) when the case starts, so a row's
   ``peak_rss_kb`` is the largest process of that case: the benchmark process itself for
   thread workers (its imports and harness included), the largest worker for process workers.
4. That is repeated ``repeat`` times; the row reports the median with min-max. ``run.py``
   interleaves: the implementations of one block and worker configuration take turns, one
   repetition each, so that drift in the machine's load hits them alike. Process workers are
   a pool of spawned processes kept across cases (a pool is thrown away after any error).

A case that fails (a backend not built yet, a peer missing, a timeout) becomes an error row;
the run goes on. Nothing here asserts a timing: targets are reported, never enforced.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import math
import multiprocessing
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BARRIER_TIMEOUT = 120.0  # seconds a worker or the parent waits at the start barrier
SETUP_TIMEOUT = 120.0  # seconds for all workers to build their clients and warm up
BATCH_TARGET = 0.002  # a measurement batch grows until it takes this long
MAX_BATCH = 1 << 20

Runner = Callable[[int], "int | None"]


# ---------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Impl:
    """One implementation of one benchmarked operation."""

    id: str  # unique, e.g. "locks.file.portalocker"
    group: str  # locks | counters | state | queues
    backend: str  # memory | file | redis
    primitive: str  # what one operation is, e.g. "lock acquire+release"
    label: str  # shown in the table, e.g. "portalocker.Lock"
    role: str  # unidist | peer | limit
    durability: str  # short, per row
    worker: Callable[..., Any]
    setup: Callable[..., Any] | None = None
    teardown: Callable[..., Any] | None = None
    kinds: tuple[str, ...] = ("thread", "process")
    compare_to: str | None = None  # the unidist impl id a peer row's ratio is taken against
    note: str = ""  # longer explanation, printed under the table
    needs: tuple[str, ...] = ()  # services: "redis"


@dataclass(frozen=True)
class Target:
    """A target from an issue, reported next to the ratios (never asserted).

    ``kind``: ``ratio`` (unidist / peer >= factor), ``scaling`` (unidist at a config /
    unidist at ``base`` >= factor) or ``absolute`` (unidist ops/s >= factor).
    """

    unidist: str
    peer: str | None
    factor: float
    source: str  # "#3", "#4", "#11"
    text: str  # e.g. "file lock >= 1.0x portalocker.Lock"
    kind: str = "ratio"
    configs: tuple[tuple[int, str], ...] | None = None  # None: every config both rows have
    base: tuple[int, str] = (1, "thread")


REGISTRY: dict[str, Impl] = {}
TARGETS: list[Target] = []


def impl(**kwargs: Any) -> Impl:
    """Register an implementation (keyword arguments of :class:`Impl`)."""
    item = Impl(**kwargs)
    if item.id in REGISTRY:
        raise ValueError(f"duplicate benchmark implementation id {item.id!r}")
    REGISTRY[item.id] = item
    return item


def target(**kwargs: Any) -> Target:
    item = Target(**kwargs)
    TARGETS.append(item)
    return item


# ---------------------------------------------------------------------------------- env
@dataclass
class Env:
    """What a worker knows about its case. Pickled to process workers."""

    dir: str  # a fresh directory for this case
    tag: str  # a fresh name for this case (memory:// store names, Redis keys)
    workers: int
    kind: str
    redis: dict[str, str] = field(default_factory=dict)  # "plain"/"aof" -> URL
    redis_error: str | None = None
    modules: tuple[str, ...] = ()

    def redis_url(self, which: str = "plain") -> str:
        if which not in self.redis:
            raise RuntimeError(self.redis_error or f"no redis server {which!r} was started")
        return self.redis[which]


# ---------------------------------------------------------------------------------- memory
def peak_rss_kb() -> int | None:
    """Peak resident set of this process in KiB (``VmHWM``; ``ru_maxrss`` where no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return peak // 1024 if sys.platform == "darwin" else peak


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current resident set (Linux 4.0+).

    Returns False where that is not possible; the peak then covers the process's whole life.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def fmt_rss(kb: int | None) -> str:
    if kb is None:
        return "-"
    mb = kb / 1024
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


# ---------------------------------------------------------------------------------- workers
def _split(built: Any) -> tuple[Runner, Callable[[], Any] | None]:
    if isinstance(built, tuple):
        return built[0], built[1]
    return built, None


def _measure(run: Runner, duration: float, n: int) -> tuple[float, float, int, int]:
    """Run batches for ``duration`` seconds; return (start, end, ops, next batch size)."""
    clock = time.perf_counter
    ops = 0
    t0 = clock()
    end = t0 + duration
    while True:
        b0 = clock()
        done = run(n)
        ops += n if done is None else done
        t = clock()
        if t >= end:
            return t0, t, ops, n
        if t - b0 < BATCH_TARGET and n < MAX_BATCH:
            n *= 2


def _worker_case(
    impl_id: str,
    env: Env,
    shared: Any,
    index: int,
    barrier: Any,
    results: Any,
    repeat: int,
    duration: float,
    warmup: float,
) -> None:
    """Body of one worker (thread or process) for one case; reports through ``results``."""
    close = None
    try:
        item = REGISTRY[impl_id]
        run, close = _split(item.worker(env, shared, index))
        n = 1
        if warmup > 0:
            _, _, _, n = _measure(run, warmup, 1)
        results.put(("ready", index))
        for rep in range(repeat):
            barrier.wait(BARRIER_TIMEOUT)
            t0, t1, ops, n = _measure(run, duration, n)
            results.put(("rep", index, rep, t0, t1, ops))
    except threading.BrokenBarrierError:
        results.put(("aborted", index))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))
    finally:
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        results.put(("done", index, peak_rss_kb()))


def _reset_unidist() -> None:
    """Close and forget unidist's cached backend handles (each case starts afresh)."""
    mod = sys.modules.get("unidist.backends")
    if mod is not None:
        with contextlib.suppress(Exception):
            mod.reset()


def _import_modules(modules: Iterable[str]) -> None:
    for name in modules:
        importlib.import_module(name)


class ProcessPool:
    """``size`` spawned worker processes that run one case at a time."""

    def __init__(self, size: int, modules: Sequence[str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.size = size
        self.barrier = ctx.Barrier(size + 1)
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(size)]
        self.procs = [
            ctx.Process(
                target=_pool_main,
                args=(self.commands[i], self.barrier, self.results, tuple(modules)),
                daemon=True,
                name=f"bench-worker-{i}",
            )
            for i in range(size)
        ]
        for p in self.procs:
            p.start()

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def close(self, *, kill: bool = False) -> None:
        if not kill:
            for q in self.commands:
                with contextlib.suppress(Exception):
                    q.put(None)
            for p in self.procs:
                p.join(5)
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def _pool_main(commands: Any, barrier: Any, results: Any, modules: tuple[str, ...]) -> None:
    import warnings

    warnings.simplefilter("ignore")
    _import_modules(modules)
    while True:
        cmd = commands.get()
        if cmd is None:
            return
        impl_id, env, shared, index, repeat, duration, warmup = cmd
        reset_peak_rss()
        _worker_case(impl_id, env, shared, index, barrier, results, repeat, duration, warmup)
        _reset_unidist()


# ---------------------------------------------------------------------------------- rows
@dataclass
class Row:
    id: str
    group: str
    backend: str
    primitive: str
    label: str
    role: str
    durability: str
    workers: int
    kind: str
    samples: list[float] = field(default_factory=list)
    error: str | None = None
    compare_to: str | None = None
    ratio: float | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_kb: int | None = None  # largest process of the case (see the module docs)

    @property
    def config(self) -> tuple[int, str]:
        return (self.workers, self.kind)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and not self.error else None


def new_row(item: Impl, workers: int, kind: str) -> Row:
    return Row(
        id=item.id,
        group=item.group,
        backend=item.backend,
        primitive=item.primitive,
        label=item.label,
        role=item.role,
        durability=item.durability,
        workers=workers,
        kind=kind,
        compare_to=item.compare_to,
    )


@dataclass
class Settings:
    repeat: int = 5
    duration: float = 0.5
    warmup: float = 0.05


class Services:
    """Throwaway redis-servers (plain and AOF ``appendfsync always``), started on first use."""

    def __init__(self) -> None:
        self.servers: dict[str, Any] = {}
        self.error: str | None = None
        self._tried = False

    def ensure_redis(self) -> None:
        if self._tried:
            return
        self._tried = True
        try:
            from backends.redis.server import RedisServer

            self.servers["plain"] = RedisServer()
            self.servers["aof"] = RedisServer(aof=True)
        except Exception as exc:
            self.error = f"could not start redis-server: {type(exc).__name__}: {exc}"

    @property
    def urls(self) -> dict[str, str]:
        return {k: s.url for k, s in self.servers.items()}

    def redis_version(self) -> str | None:
        try:
            out = subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=False
            ).stdout
        except OSError:
            return None
        return out.strip() or None

    def flush(self) -> None:
        if not self.servers:
            return
        import redis

        for srv in self.servers.values():
            with contextlib.suppress(Exception):
                client = redis.Redis.from_url(srv.url)
                client.flushall()
                client.close()

    def stop(self) -> None:
        for srv in self.servers.values():
            with contextlib.suppress(Exception):
                srv.stop()
        self.servers.clear()


class CaseRunner:
    """Runs cases: owns the process pools, the services and the scratch directory."""

    def __init__(self, settings: Settings, modules: Sequence[str], base_dir: str | None) -> None:
        self.settings = settings
        self.modules = tuple(modules)
        self.base = Path(tempfile.mkdtemp(prefix="unidist-bench-", dir=base_dir))
        self.services = Services()
        self.pools: dict[int, ProcessPool] = {}
        self._repeat = settings.repeat

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        self.services.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _pool(self, size: int) -> ProcessPool:
        pool = self.pools.get(size)
        if pool is None or not pool.alive():
            if pool is not None:
                pool.close(kill=True)
            pool = ProcessPool(size, self.modules)
            self.pools[size] = pool
        return pool

    def _drop_pool(self, size: int) -> None:
        pool = self.pools.pop(size, None)
        if pool is not None:
            pool.close(kill=True)

    def run(self, item: Impl, workers: int, kind: str, repeat: int | None = None) -> Row:
        """Run one case ``repeat`` times (default: the settings) with one set of workers."""
        row = new_row(item, workers, kind)
        self.run_into(row, item, repeat)
        return row

    def run_into(self, row: Row, item: Impl, repeat: int | None = None) -> None:
        """Run one case and add its samples to ``row`` (or set ``row.error``)."""
        workers, kind = row.workers, row.kind
        self._repeat = self.settings.repeat if repeat is None else repeat
        case_dir = self.base / f"{item.id}-{workers}{kind[0]}-{uuid.uuid4().hex[:6]}"
        case_dir.mkdir(mode=0o700)
        if "redis" in item.needs:
            self.services.ensure_redis()
        env = Env(
            dir=str(case_dir),
            tag=f"b{uuid.uuid4().hex[:10]}",
            workers=workers,
            kind=kind,
            redis=self.services.urls,
            redis_error=self.services.error,
            modules=self.modules,
        )
        shared = None
        try:
            if kind == "thread":
                reset_peak_rss()
            if item.setup is not None:
                shared = item.setup(env)
            if kind == "thread":
                samples, row.error, rss = self._run_threads(item, env, shared)
            else:
                samples, row.error, rss = self._run_processes(item, env, shared)
            row.samples.extend(samples)
            if rss is not None:
                row.peak_rss_kb = max(rss, row.peak_rss_kb or 0)
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"
        finally:
            if item.teardown is not None:
                with contextlib.suppress(Exception):
                    item.teardown(env, shared)
            _reset_unidist()
            if "redis" in item.needs:
                self.services.flush()
            shutil.rmtree(case_dir, ignore_errors=True)

    def _args(self) -> tuple[int, float, float]:
        s = self.settings
        return self._repeat, s.duration, s.warmup

    def _run_threads(
        self, item: Impl, env: Env, shared: Any
    ) -> tuple[list[float], str | None, int | None]:
        barrier = threading.Barrier(env.workers + 1)
        results: queue.Queue[tuple[Any, ...]] = queue.Queue()
        threads = [
            threading.Thread(
                target=_worker_case,
                args=(item.id, env, shared, i, barrier, results, *self._args()),
                daemon=True,
                name=f"bench-{i}",
            )
            for i in range(env.workers)
        ]
        for t in threads:
            t.start()
        samples, error, rss = self._drive(env.workers, barrier, results)
        for t in threads:
            t.join(5)
        if error is None and any(t.is_alive() for t in threads):
            error = "a worker thread did not finish"
        return samples, error, rss

    def _run_processes(
        self, item: Impl, env: Env, shared: Any
    ) -> tuple[list[float], str | None, int | None]:
        pool = self._pool(env.workers)
        for i in range(env.workers):
            pool.commands[i].put((item.id, env, shared, i, *self._args()))
        samples, error, rss = self._drive(env.workers, pool.barrier, pool.results)
        if error is not None:
            self._drop_pool(env.workers)
        return samples, error, rss

    def _drive(
        self, workers: int, barrier: Any, results: Any
    ) -> tuple[list[float], str | None, int | None]:
        """Parent side of one case: wait until ready, release each repetition, collect."""
        repeat, duration, _ = self._args()
        # A fast worker may report its next message (e.g. "done") before a slow one reports
        # this repetition: keep what arrives early for the collect() that wants it.
        early: list[tuple[Any, ...]] = []

        def collect(what: str, timeout: float) -> tuple[list[tuple[Any, ...]], str | None]:
            got = [m for m in early if m[0] == what][:workers]
            for m in got:
                early.remove(m)
            deadline = time.monotonic() + timeout
            while len(got) < workers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return got, f"timeout waiting for workers ({what})"
                try:
                    msg = results.get(timeout=left)
                except queue.Empty:
                    continue
                if msg[0] == what:
                    got.append(msg)
                elif msg[0] == "error":
                    return got, _short_error(msg[2])
                elif msg[0] == "aborted":
                    return got, "aborted"
                else:
                    early.append(msg)
            return got, None

        def fail(err: str) -> tuple[list[float], str, None]:
            with contextlib.suppress(Exception):
                barrier.abort()
            # Let the workers unwind (close their clients) before the next case.
            collect("done", 10.0)
            return [], err, None

        _, err = collect("ready", SETUP_TIMEOUT)
        if err:
            return fail(err)
        samples: list[float] = []
        for _ in range(repeat):
            try:
                barrier.wait(BARRIER_TIMEOUT)
            except threading.BrokenBarrierError:
                return fail("start barrier broken")
            reps, err = collect("rep", duration * 4 + 60)
            if err:
                return fail(err)
            start = min(r[3] for r in reps)
            end = max(r[4] for r in reps)
            ops = sum(r[5] for r in reps)
            samples.append(ops / (end - start) if end > start else math.nan)
        done, err = collect("done", 30.0)
        peaks = [m[2] for m in done if len(m) > 2 and m[2] is not None]
        return samples, err, max(peaks) if peaks else None


def _short_error(tb: str) -> str:
    lines = [line for line in tb.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "error"
    return last[:300]


# ---------------------------------------------------------------------------------- analysis
def configs_for(item: Impl, workers: Sequence[int], process_workers: Sequence[int]) -> list:
    out = [(w, "thread") for w in workers if "thread" in item.kinds]
    out += [(w, "process") for w in process_workers if "process" in item.kinds]
    return out


def _index(rows: Iterable[Row]) -> dict[tuple[str, int, str], Row]:
    return {(r.id, r.workers, r.kind): r for r in rows}


def analyse(rows: list[Row], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """Fill each row's ratio and target results; return the target summary."""
    idx = _index(rows)
    for r in rows:
        if r.role == "unidist" or not r.compare_to:
            continue
        u = idx.get((r.compare_to, r.workers, r.kind))
        if u is not None and u.median and r.median:
            r.ratio = u.median / r.median
    summary = []
    for t in targets:
        results = []
        for r in rows:
            if r.id != t.unidist or (t.configs is not None and r.config not in t.configs):
                continue
            value = None
            ref: Row | None = None
            if t.kind == "ratio":
                ref = idx.get((t.peer or "", r.workers, r.kind))
                if ref is None:
                    continue
                if r.median and ref.median:
                    value = r.median / ref.median
            elif t.kind == "scaling":
                if r.config == t.base:
                    continue
                ref = idx.get((t.unidist, *t.base))
                if ref is None:
                    continue
                if r.median and ref.median:
                    value = r.median / ref.median
            else:  # absolute
                value = r.median
            met = None if value is None else value >= t.factor
            res = {
                "workers": r.workers,
                "kind": r.kind,
                "value": value,
                "met": met,
            }
            results.append(res)
            cell = {"text": target_text(t), "source": t.source, "value": value, "met": met}
            shown_on = ref if (t.kind == "ratio" and ref is not None) else r
            shown_on.targets.append(cell)
        summary.append({**asdict_target(t), "results": results})
    return summary


def asdict_target(t: Target) -> dict[str, Any]:
    d = asdict(t)
    d["configs"] = [list(c) for c in t.configs] if t.configs else None
    d["base"] = list(t.base)
    return d


def target_text(t: Target) -> str:
    if t.kind == "absolute":
        return f">={fmt_rate(t.factor)}/s"
    return f">={t.factor:.2g}x"


# ---------------------------------------------------------------------------------- output
def fmt_rate(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            v = x / div
            return f"{v:.3g}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def fmt_config(workers: int, kind: str) -> str:
    if kind == "thread":
        return f"{workers} thread" + ("s" if workers != 1 else "")
    return f"{workers} proc" + ("s" if workers != 1 else "")


def _met(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


def render_table(rows: list[Row]) -> str:
    header = [
        "group",
        "backend",
        "implementation",
        "workers",
        "ops/s",
        "min-max",
        "peak RSS",
        "durability",
        "unidist/this",
        "targets (unidist/this vs target)",
    ]
    body: list[list[str]] = []
    prev_block = None
    for r in rows:
        block = (r.group, r.backend, r.primitive)
        if block != prev_block:
            if body:
                body.append([])
            body.append([f"# {r.group} / {r.backend}: {r.primitive}"])
            prev_block = block
        if r.error:
            stat, rng = "ERROR", r.error
        else:
            stat = fmt_rate(r.median)
            rng = f"{fmt_rate(min(r.samples))}-{fmt_rate(max(r.samples))}" if r.samples else "-"
        ratio = f"{fmt_ratio(r.ratio)}x" if r.ratio is not None else ""
        tcells = "; ".join(
            f"{_fmt_value(c)} vs {c['text']} {c['source']} {_met(c['met'])}" for c in r.targets
        )
        label = r.label if r.role != "limit" else f"{r.label} (limit)"
        body.append(
            [
                r.group,
                r.backend,
                label,
                fmt_config(r.workers, r.kind),
                stat,
                rng,
                fmt_rss(r.peak_rss_kb),
                r.durability,
                ratio,
                tcells,
            ]
        )
    widths = [len(h) for h in header]
    for line in body:
        if len(line) == len(header):
            for i, cell in enumerate(line[:-1]):
                if not (line[4] == "ERROR" and i == 5):
                    widths[i] = max(widths[i], len(cell))
    out = [_join(header, widths), _join(["-" * w for w in widths], widths)]
    for line in body:
        if len(line) != len(header):
            out.append(line[0] if line else "")
        elif line[4] == "ERROR":
            out.append(_join([*line[:5], ""], widths[:6]).rstrip() + "  " + line[5])
        else:
            out.append(_join(line, widths).rstrip())
    return "\n".join(out)


def _fmt_value(c: dict[str, Any]) -> str:
    v = c["value"]
    if v is None:
        return "-"
    if c["text"].startswith(">=") and c["text"].endswith("/s"):
        return f"{fmt_rate(v)}/s"
    return f"{fmt_ratio(v)}x"


def fmt_ratio(v: float) -> str:
    return f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"


def _join(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths))


def render_targets(summary: list[dict[str, Any]]) -> str:
    lines = ["Targets from the issues (reported, never asserted):"]
    met = missed = 0
    for t in summary:
        parts = []
        for res in t["results"]:
            v = res["value"]
            if t["kind"] == "absolute":
                vs = "-" if v is None else f"{fmt_rate(v)}/s"
            else:
                vs = "-" if v is None else f"{fmt_ratio(v)}x"
            parts.append(f"{fmt_config(res['workers'], res['kind'])} {vs} {_met(res['met'])}")
            met += res["met"] is True
            missed += res["met"] is False
        body = ", ".join(parts) if parts else "not measured in this run"
        lines.append(f"  {t['source']:>4} {t['text']}: {body}")
    lines.append(f"  -> {met} met, {missed} missed (per target and worker configuration)")
    return "\n".join(lines)


def render_notes(items: Iterable[Impl]) -> str:
    lines = ["Notes (what each row does, durability details):"]
    for item in items:
        if item.note:
            lines.append(f"  {item.label} [{item.backend}]: {item.note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- facts
PACKAGES = (
    "unidist",
    "redis",
    "hiredis",
    "portalocker",
    "filelock",
    "diskcache",
    "pottery",
    "python-redis-lock",
    "persist-queue",
    "sqlitedict",
)


def _fs_type(path: str) -> str | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    best = (-1, "")
    target_path = str(Path(path).resolve())
    for fields in mounts:
        if "-" not in fields:
            continue
        mp = fields[4]
        fstype = fields[fields.index("-") + 1]
        if (target_path == mp or target_path.startswith(mp.rstrip("/") + "/")) and len(mp) > best[
            0
        ]:
            best = (len(mp), fstype)
    return best[1] or None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_facts(bench_dir: str, repo: Path, services: Services) -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import sqlite3

    uname = platform.uname()
    dirty = _git(repo, "status", "--porcelain", "--", "unidist")
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "kernel": f"{uname.system} {uname.release}",
        "machine": uname.machine,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "redis_server": services.redis_version(),
        "bench_dir_fs": _fs_type(bench_dir),
        "git_commit": _git(repo, "rev-parse", "HEAD"),
        "unidist_tree_dirty": bool(dirty) if dirty is not None else None,
        "packages": versions,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rows_to_json(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = asdict(r)
        d["median"] = r.median
        d["min"] = min(r.samples) if r.samples and not r.error else None
        d["max"] = max(r.samples) if r.samples and not r.error else None
        out.append(d)
    return out
