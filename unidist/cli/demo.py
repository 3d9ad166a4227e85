"""``unidist demo``: a small worker fleet sharing every primitive, one worker killed midway.

The demo puts numbered jobs on a :class:`~unidist.MessageQueue` and starts worker processes
(threads on ``memory://``, which is shared by one process only). Each worker receives a job
(at-least-once), passes a "slow" job through a :class:`~unidist.SharedSemaphore` of two
slots, then, inside a critical section guarded by a :class:`~unidist.SharedLock`, applies
the job exactly once: it records the job in a :class:`~unidist.SharedState` bucket unless it
is already there, and adds the job's weight to a :class:`~unidist.SharedCounter`. Then it
acks the message and logs ``job_done`` to the ``demo-worker`` log track.

Midway, the worker that picked up the middle job is killed with SIGKILL while that job is in
flight (a thread worker simulates the crash by vanishing without an ack). A replacement
worker is started, the message's visibility timeout passes, and the job is redelivered to
another worker. At the end the demo checks that every job was applied exactly once, the
killed worker's job was redelivered, no counter update was lost, the lock and semaphore
limits held, every job was logged and nothing is left behind; it exits 0 only if all pass.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

import click

import unidist
import unidist.log
from unidist.cli._common import table
from unidist.cli.main import EXIT_ERROR, EXIT_OK, Context

VISIBILITY: Final = 1.5
"""Seconds before an unacked message is redelivered (short, so the demo sees it happen)."""
DEADLINE: Final = 60.0
"""Seconds after which the demo gives up waiting for the jobs (a failed check, not a hang)."""
LOCK_TTL: Final = 30.0
WORKER_TRACK: Final = "demo-worker"
DEMO_TRACK: Final = "demo"


def _at_least(n: int) -> Any:
    return lambda m: max(m, n)


def _apply(worker: str) -> Any:
    def fn(entry: Any) -> Any:
        entry = dict(entry) if isinstance(entry, dict) else {}
        entry["applied"] = int(entry.get("applied", 0)) + 1
        return entry

    return fn


def _worker(url: str, ns: str, worker: str, log_dir: str | None) -> None:
    """Process jobs until told to stop; ``log_dir`` set means "configure logging here"."""
    be = unidist.connect(url)
    if log_dir is not None:
        unidist.log.setup(dir=log_dir, console="off", stdlib=False)
    log = unidist.log.get_logger(track=WORKER_TRACK, worker=worker)
    q = be.queue(f"{ns}.jobs", visibility_timeout=VISIBILITY)
    applied = be.counter(f"{ns}.applied")
    total = be.counter(f"{ns}.total")
    inside = be.counter(f"{ns}.inside")
    inside_slow = be.counter(f"{ns}.inside-slow")
    results = be.state(f"{ns}.results")
    roster = be.state(f"{ns}.workers")
    control = be.state(f"{ns}.control")
    books = be.lock(f"{ns}.books", ttl=LOCK_TTL)
    slots = be.semaphore(f"{ns}.slow", limit=2, ttl=LOCK_TTL)
    roster[worker] = {"pid": os.getpid(), "applied": 0}
    log.info("worker_started")
    while True:
        try:
            msg = q.receive(timeout=0.2)
        except unidist.Empty:
            if control.get("stop"):
                log.info("worker_stopped")
                return
            continue
        job = msg.body
        assert isinstance(job, dict)
        n = int(job["n"])  # type: ignore[arg-type]
        if job.get("hold") and msg.attempts == 1:
            # The victim: announce the in-flight job, then wait to be killed.
            control["held"] = {"worker": worker, "pid": os.getpid(), "job": n, "id": msg.id}
            log.info("job_held", job=n)
            while control.get("kill") != worker:
                time.sleep(0.02)
            return  # a thread worker "crashes": the message is never acked
        if job.get("slow"):
            with slots:
                peak = control.transform("slow_peak", _at_least(inside_slow.incr()), default=0)
                time.sleep(0.002)
                inside_slow.decr()
                del peak
        with books:
            if inside.incr() != 1:
                control["violation"] = f"{worker} found someone else in the critical section"
            first = results.compare_and_set(
                str(n), None, {"worker": worker, "attempts": msg.attempts}
            )
            if first:
                total.incr(int(job["weight"]))  # type: ignore[arg-type]
                applied.incr()
            inside.decr()
        if first:
            roster.transform(worker, _apply(worker), default={})
        msg.ack()
        log.info("job_done", job=n, attempts=msg.attempts)


class _Fleet:
    """Starts workers as processes or threads and kills one."""

    def __init__(self, url: str, ns: str, log_dir: str, processes: bool) -> None:
        self.url = url
        self.ns = ns
        self.log_dir = log_dir
        self.processes = processes
        self.ctx = multiprocessing.get_context("spawn")
        self.runners: dict[str, Any] = {}

    def start(self, worker: str) -> None:
        runner: Any
        if self.processes:
            runner = self.ctx.Process(
                target=_worker, args=(self.url, self.ns, worker, self.log_dir), daemon=True
            )
        else:
            runner = threading.Thread(
                target=_worker, args=(self.url, self.ns, worker, None), daemon=True
            )
        runner.start()
        self.runners[worker] = runner

    def kill(self, worker: str, pid: int, control: Any) -> None:
        if self.processes:
            os.kill(pid, signal.SIGKILL)
            self.runners[worker].join(10)
        control["kill"] = worker

    def alive(self) -> int:
        return sum(1 for r in self.runners.values() if r.is_alive())

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for r in self.runners.values():
            r.join(max(0.1, deadline - time.monotonic()))
        if self.processes:
            for r in self.runners.values():
                if r.is_alive():
                    r.kill()
                    r.join(5)

    def status(self, worker: str) -> str:
        r = self.runners[worker]
        if self.processes:
            code = r.exitcode
            if code is None:
                return "running"
            if code < 0:
                return f"killed ({signal.Signals(-code).name})"
            return f"exit {code}"
        return "running" if r.is_alive() else "stopped"


def _logged_jobs(log_dir: str) -> set[int]:
    seen: set[int] = set()
    for path in Path(log_dir).glob(f"{WORKER_TRACK}.log*"):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") == "job_done" and isinstance(rec.get("job"), int):
                    seen.add(rec["job"])
    return seen


def _supervise(
    fleet: _Fleet,
    control: Any,
    applied: Any,
    jobs: int,
    workers: int,
    progress: bool,
    t0: float,
    log: Any,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Watch progress; kill the worker holding the middle job; start its replacement."""
    events: list[str] = []
    killed: dict[str, Any] | None = None
    bar_cm: Any = (
        click.progressbar(length=jobs, label="jobs", show_pos=True, width=30)
        if progress
        else contextlib.nullcontext(None)
    )
    with bar_cm as bar:
        shown = 0
        while True:
            done = applied.get()
            if bar is not None and done > shown:
                bar.update(done - shown)
                shown = done
            if killed is None:
                held = control.get("held")
                if isinstance(held, dict):
                    killed = dict(held)
                    fleet.kill(str(held["worker"]), int(held["pid"]), control)
                    killed["at_done"] = done
                    events.append(
                        f"killed   {held['worker']} (pid {held['pid']}) with job "
                        f"{held['job']} in flight, after {done} jobs"
                    )
                    log.warning("worker_killed", **killed)
                    replacement = f"w{workers + 1}"
                    fleet.start(replacement)
                    events.append(f"started  {replacement} to replace it")
            if done >= jobs or time.monotonic() - t0 > DEADLINE:
                break
            if fleet.alive() == 0:
                events.append("all workers died")
                break
            time.sleep(0.05)
    return killed, events


def run_demo(
    url: str,
    jobs: int,
    workers: int,
    echo: Any,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the demo on ``url`` and return the result record (``ok`` says if checks passed).

    Args:
        url: backend URL; ``memory://`` runs thread workers, others worker processes.
        jobs: number of jobs (>= 1).
        workers: number of workers (>= 1); one more is started to replace the killed one.
        echo: called with each line of running commentary.
        progress: show a progress bar (for a terminal).
    """
    be = unidist.connect(url)
    ns = f"demo-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="unidist-demo-"))
    log_dir = str(workdir / "log")
    unidist.log.setup(dir=log_dir, console="off", stdlib=False)
    log = unidist.log.get_logger(track=DEMO_TRACK)
    use_processes = be.scope != "process"
    kind = "processes" if use_processes else "threads"
    echo(f"backend  {be.url} (shared by one {be.scope})")
    echo(f"workers  {workers} {kind}, {jobs} jobs; one worker is killed midway")
    q = be.queue(f"{ns}.jobs", visibility_timeout=VISIBILITY)
    control = be.state(f"{ns}.control")
    applied = be.counter(f"{ns}.applied")
    hold_job = jobs // 2
    fleet = _Fleet(url, ns, log_dir, use_processes)
    log.info("demo_started", backend=be.url, jobs=jobs, workers=workers, kind=kind)
    t0 = time.monotonic()
    try:
        for i in range(workers):
            fleet.start(f"w{i + 1}")
        for n in range(jobs):
            q.put(
                {"n": n, "weight": n + 1, "slow": n % 4 == 0, "hold": n == hold_job},
                priority=1 if n % 10 == 0 and n != hold_job else 0,
            )
        killed, events = _supervise(fleet, control, applied, jobs, workers, progress, t0, log)
        elapsed = time.monotonic() - t0
        control["stop"] = True
        fleet.join(15)
        for line in events:
            echo(line)
        return _finish(be, ns, jobs, workers, kind, fleet, killed, elapsed, log_dir, log)
    finally:
        _cleanup(be, ns)
        unidist.log.reset()
        shutil.rmtree(workdir, ignore_errors=True)


def _finish(
    be: unidist.Backend,
    ns: str,
    jobs: int,
    workers: int,
    kind: str,
    fleet: _Fleet,
    killed: dict[str, Any] | None,
    elapsed: float,
    log_dir: str,
    log: Any,
) -> dict[str, Any]:
    results = be.state(f"{ns}.results").snapshot()
    roster = be.state(f"{ns}.workers").snapshot()
    control = be.state(f"{ns}.control").snapshot()
    total = be.counter(f"{ns}.total").get()
    applied = be.counter(f"{ns}.applied").get()
    peak = control.get("slow_peak", 0)
    redelivered: dict[str, Any] = {}
    if killed is not None:
        entry = results.get(str(killed["job"]))
        redelivered = entry if isinstance(entry, dict) else {}
    per_worker = {
        w: int(v.get("applied", 0)) if isinstance(v, dict) else 0  # type: ignore[arg-type]
        for w, v in roster.items()
    }
    logged = _logged_jobs(log_dir)
    checks = {
        "every job applied exactly once": sorted(int(k) for k in results) == list(range(jobs))
        and applied == jobs,
        "killed worker's job was redelivered": killed is not None
        and redelivered.get("worker") not in (None, killed["worker"])
        and int(redelivered.get("attempts", 0)) >= 2,
        "no counter update lost": total == jobs * (jobs + 1) // 2,
        "one worker at a time in the locked section": "violation" not in control,
        "semaphore limit 2 held": isinstance(peak, int) and 1 <= peak <= 2,
        "every job logged": logged == set(range(jobs)),
        "queue drained": be.queue(f"{ns}.jobs").stats()
        == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0},
        "no lock left held": not be.lock_owners(f"{ns}.books") and not be.lock_owners(f"{ns}.slow"),
    }
    rows = []
    for w in sorted(roster, key=lambda x: int(x[1:])):
        info = roster[w]
        pid = info.get("pid") if isinstance(info, dict) else None
        status = fleet.status(w) if w in fleet.runners else "?"
        if killed is not None and w == killed["worker"] and kind == "threads":
            status = "crashed (simulated)"
        rows.append({"worker": w, "pid": pid, "jobs": per_worker.get(w, 0), "status": status})
    result = {
        "backend": be.url,
        "workers": workers,
        "worker_kind": kind,
        "jobs": jobs,
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(jobs / elapsed, 1) if elapsed else None,
        "per_worker": per_worker,
        "fleet": rows,
        "killed": killed,
        "redelivered_to": redelivered.get("worker"),
        "redelivery_attempts": redelivered.get("attempts"),
        "semaphore_peak": peak,
        "log_records": len(logged),
        "checks": checks,
        "ok": all(checks.values()),
    }
    log.info("demo_finished", ok=result["ok"], seconds=result["seconds"])
    return result


def _cleanup(be: unidist.Backend, ns: str) -> None:
    """Leave the backend as we found it (counters stay listed at 0 on some backends)."""
    with contextlib.suppress(unidist.UnidistError):
        for bucket in ("results", "workers", "control"):
            be.state(f"{ns}.{bucket}").clear()
        for counter in ("applied", "total", "inside", "inside-slow"):
            be.counter(f"{ns}.{counter}").reset()
        be.queue(f"{ns}.jobs").purge(dead=True)


def _print_human(result: dict[str, Any]) -> None:
    click.echo("")
    click.echo(
        table(
            ["WORKER", "PID", "JOBS", "STATUS"],
            [[r["worker"], r["pid"], r["jobs"], r["status"]] for r in result["fleet"]],
        )
    )
    click.echo("")
    killed = result["killed"]
    if killed is not None:
        click.echo(
            f"job {killed['job']} was in flight on {killed['worker']} when it was killed; "
            f"redelivered to {result['redelivered_to']} "
            f"(delivery {result['redelivery_attempts']})"
        )
    click.echo(
        f"{result['jobs']} jobs in {result['seconds']} s ({result['jobs_per_second']} jobs/s), "
        f"{result['log_records']} jobs logged, semaphore peak {result['semaphore_peak']}"
    )
    click.echo("")
    click.echo(
        table(
            ["CHECK", "RESULT"],
            [[name, "ok" if passed else "FAIL"] for name, passed in result["checks"].items()],
        )
    )
    click.echo("")
    click.echo("all checks passed" if result["ok"] else "SOME CHECKS FAILED")


@click.command()
@click.option("--jobs", type=click.IntRange(min=1), default=200, show_default=True, help="Jobs.")
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    help="Worker processes (threads on memory://).",
)
@click.pass_obj
def demo(obj: Context, jobs: int, workers: int) -> int:
    """Run a small worker fleet over every primitive, kill one worker, check the results.

    Workers share a queue of jobs, a lock-protected critical section, counters, a state
    bucket and a semaphore, and log to tracks. Midway one worker is killed with SIGKILL
    while a job is in flight; the demo shows that job redelivered, every job applied
    exactly once and no update lost, then prints a table. Exit 0 only if every check passes.

    Without --url the demo uses a fresh temporary file:// directory (removed afterwards), so
    it leaves nothing behind; with --url it runs there under a unique namespace and cleans up.
    """
    tmp: str | None = None
    url = obj.url
    if not obj.url_given:
        tmp = tempfile.mkdtemp(prefix="unidist-demo-data-")
        url = f"file://{tmp}"
    echo = (lambda _msg: None) if obj.as_json else click.echo
    progress = not obj.as_json and sys.stdout.isatty()
    try:
        result = run_demo(url, jobs, workers, echo, progress=progress)
    finally:
        unidist.backends.reset()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if obj.as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_human(result)
    return EXIT_OK if result["ok"] else EXIT_ERROR


__all__ = ["demo", "run_demo"]
