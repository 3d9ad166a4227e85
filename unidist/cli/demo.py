"""``unidist demo``: a small fleet of workers sharing every primitive, checked at the end.

The demo puts jobs on a :class:`~unidist.MessageQueue`; workers (processes when the backend is
shared between processes, threads on ``memory://``) receive them, count them with a
:class:`~unidist.SharedCounter`, keep per-worker tallies in a :class:`~unidist.SharedState`
bucket with ``transform``, append to a plain file under a :class:`~unidist.SharedLock`, and
limit a "slow section" to two workers at once with a :class:`~unidist.SharedSemaphore`. At the
end it checks that every job was done exactly once, nothing was lost, and the limits held,
and exits non-zero if not.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click

import unidist
from unidist.cli.main import EXIT_ERROR, EXIT_OK, Context


def _at_least(n: int) -> Any:
    return lambda m: max(m, n)


def _worker(url: str, ns: str, worker: str, ledger: str) -> None:
    """Process jobs until the queue is empty and the producer said it is done."""
    be = unidist.connect(url)
    q = be.queue(f"{ns}.jobs", visibility_timeout=30)
    done = be.counter(f"{ns}.done")
    inside = be.counter(f"{ns}.inside")
    peak = be.state(f"{ns}.peak")
    tally = be.state(f"{ns}.tally")
    ledger_lock = be.lock(f"{ns}.ledger")
    slots = be.semaphore(f"{ns}.slow", limit=2)
    status = be.state(f"{ns}.status")
    while True:
        try:
            msg = q.receive(timeout=0.2)
        except unidist.Empty:
            if status.get("producer") == "done" and q.stats()["ready"] == 0:
                return
            continue
        with msg:
            job = msg.body
            assert isinstance(job, dict)
            if job["slow"]:
                with slots:
                    now_inside = inside.incr()
                    peak.transform("max", _at_least(now_inside), default=0)
                    time.sleep(0.005)
                    inside.decr()
            with ledger_lock, open(ledger, "a", encoding="utf-8") as fh:
                fh.write(f"{job['n']} {worker}\n")
            tally.transform(worker, lambda v: v + 1, default=0)
            done.incr()


def run_demo(url: str, jobs: int, workers: int, echo: Any) -> dict[str, Any]:
    """Run the demo on ``url`` and return the result record (``ok`` says if checks passed)."""
    be = unidist.connect(url)
    ns = f"demo-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="unidist-demo-"))
    ledger = str(workdir / "ledger.txt")
    use_processes = be.scope != "process"
    kind = "processes" if use_processes else "threads"
    echo(f"backend  {be.url} (shared across one {be.scope})")
    echo(f"workers  {workers} {kind}, {jobs} jobs")
    q = be.queue(f"{ns}.jobs")
    status = be.state(f"{ns}.status")
    t0 = time.monotonic()
    runners: list[Any]
    if use_processes:
        ctx = multiprocessing.get_context("spawn")
        runners = [
            ctx.Process(target=_worker, args=(url, ns, f"w{i}", ledger)) for i in range(workers)
        ]
    else:
        runners = [
            threading.Thread(target=_worker, args=(url, ns, f"w{i}", ledger))
            for i in range(workers)
        ]
    for r in runners:
        r.start()
    for n in range(jobs):
        q.put({"n": n, "slow": n % 4 == 0}, priority=1 if n % 10 == 0 else 0)
    status["producer"] = "done"
    for r in runners:
        r.join()
    elapsed = time.monotonic() - t0

    lines = Path(ledger).read_text(encoding="utf-8").split()
    seen = [int(x) for x in lines[0::2]]
    tally = be.state(f"{ns}.tally").snapshot()
    done = be.counter(f"{ns}.done").get()
    peak = be.state(f"{ns}.peak").get("max", 0)
    checks = {
        "every job done exactly once": sorted(seen) == list(range(jobs)),
        "counter equals jobs": done == jobs,
        "tallies add up": sum(int(v) for v in tally.values() if isinstance(v, int)) == jobs,
        "semaphore limit 2 held": isinstance(peak, int) and 1 <= peak <= 2,
        "queue drained": q.stats() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0},
        "no lock left held": be.lock(f"{ns}.ledger").owner() is None,
    }
    # Leave the backend as we found it.
    for bucket in ("tally", "peak", "status"):
        be.state(f"{ns}.{bucket}").clear()
    for counter in ("done", "inside"):
        be.counter(f"{ns}.{counter}").reset()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "backend": be.url,
        "workers": workers,
        "worker_kind": kind,
        "jobs": jobs,
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(jobs / elapsed, 1) if elapsed else None,
        "per_worker": tally,
        "semaphore_peak": peak,
        "checks": checks,
        "ok": all(checks.values()),
    }


@click.command()
@click.option("--jobs", default=200, show_default=True, help="Jobs to put on the queue.")
@click.option("--workers", default=4, show_default=True, help="Worker processes (or threads).")
@click.pass_obj
def demo(obj: Context, jobs: int, workers: int) -> int:
    """Run a small worker fleet over every primitive and check the results.

    Without --url the demo uses a fresh temporary file:// directory (removed afterwards), so
    it leaves nothing behind; with --url it runs there under a unique namespace and cleans up.
    """
    tmp: str | None = None
    url = obj.url
    if not obj.url_given:
        tmp = tempfile.mkdtemp(prefix="unidist-demo-data-")
        url = f"file://{tmp}"
    echo = (lambda _msg: None) if obj.as_json else click.echo
    try:
        result = run_demo(url, jobs, workers, echo)
    finally:
        unidist.backends.reset()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if obj.as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        click.echo(
            f"done     {result['jobs']} jobs in {result['seconds']} s "
            f"({result['jobs_per_second']} jobs/s)"
        )
        per = ", ".join(f"{k}={v}" for k, v in sorted(result["per_worker"].items()))
        click.echo(f"split    {per}")
        for name, passed in result["checks"].items():
            click.echo(f"  {'ok  ' if passed else 'FAIL'} {name}")
        click.echo("all checks passed" if result["ok"] else "SOME CHECKS FAILED")
    return EXIT_OK if result["ok"] else EXIT_ERROR


__all__ = ["demo", "run_demo"]
