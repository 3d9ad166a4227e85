"""Child-process workers and the accounting for the Redis crash scenarios (R1, R2, R4).

A worker is a forked child process that loops until the parent closes its stop pipe,
reporting every call over its report pipe, one line each::

    ok KIND KEY MS          the call returned (acknowledged)
    err KIND KEY TYPE MS    the call raised TYPE (the outcome of that call is not known)

``KIND`` is ``put`` (``MessageQueue.put`` with a client-chosen id; after an error the same
id is put again, the way an application retries safely), ``incr`` (``SharedCounter.incr``;
never retried: an increment is not idempotent) or ``set`` (``SharedState[key] = n``).
``MS`` is how long the call took. The parent (:class:`Fleet`) collects the lines and,
after the run, :func:`audit` compares them with what the server holds. Workers are forked
from the test process (unidist already imported, so they start in milliseconds); each
opens its own connections (unidist drops a parent's handles in a forked child).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402
from backends.redis.server import RedisServer  # noqa: E402
from tests.reliability._report import Result  # noqa: E402
from unidist.errors import UnidistError  # noqa: E402

KINDS = ("put", "incr", "set")


def object_name(kind: str, wid: str) -> str:
    """The name of the queue, counter or bucket a worker of ``kind`` writes to."""
    return {"put": "r-q", "incr": f"r-c-{wid}", "set": f"r-s-{wid}"}[kind]


def _wait_eof(fd: int, flag: threading.Event) -> None:
    while os.read(fd, 4096):
        pass
    flag.set()


def worker(kind: str, url: str, wid: str, out: TextIO, stop_fd: int) -> None:
    """Loop over calls of ``kind`` until ``stop_fd`` reaches EOF; report each on ``out``."""
    stop = threading.Event()
    threading.Thread(target=_wait_eof, args=(stop_fd, stop), daemon=True).start()
    be = unidist.connect(url)
    name = object_name(kind, wid)
    q = be.queue(name)
    c = be.counter(name)
    s = be.state(name)
    out.write("ready\n")
    out.flush()
    n = 0
    while not stop.is_set():
        key = f"{wid}-{n}"
        t0 = time.monotonic()
        try:
            if kind == "put":
                q.put({"w": wid, "n": n}, id=key)
            elif kind == "incr":
                c.incr(1)
            else:
                s[key] = n
        except UnidistError as exc:
            ms = (time.monotonic() - t0) * 1000
            out.write(f"err {kind} {key} {type(exc).__name__} {ms:.1f}\n")
            out.flush()
            if kind != "put":  # a put is retried with the same id, the others move on
                n += 1
            continue
        ms = (time.monotonic() - t0) * 1000
        out.write(f"ok {kind} {key} {ms:.1f}\n")
        out.flush()
        n += 1


@dataclass
class Report:
    """What one worker said."""

    kind: str
    wid: str
    acked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    call_ms: list[float] = field(default_factory=list)


class Fleet:
    """Worker child processes (one per kind) on ``url``; reads their pipes in threads."""

    def __init__(self, url: str, kinds: tuple[str, ...] = KINDS) -> None:
        self.url = url
        self.reports = [Report(kind, f"w{i}") for i, kind in enumerate(kinds)]
        self.pids: list[int] = []
        self._stops: list[int] = []
        self._outs: list[int] = []
        self._threads: list[threading.Thread] = []
        self._ready = threading.Semaphore(0)
        for report in self.reports:
            out_r, out_w = os.pipe()
            stop_r, stop_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                code = 1
                try:
                    # Drop the parent's ends of the other workers' pipes: a stop pipe must
                    # reach EOF when the parent closes it.
                    for fd in (*self._stops, *self._outs, out_r, stop_w):
                        os.close(fd)
                    with os.fdopen(out_w, "w", buffering=1) as out:
                        worker(report.kind, url, report.wid, out, stop_r)
                    code = 0
                finally:
                    os._exit(code)
            os.close(out_w)
            os.close(stop_r)
            self.pids.append(pid)
            self._stops.append(stop_w)
            self._outs.append(out_r)
        for report, fd in zip(self.reports, self._outs, strict=True):
            t = threading.Thread(target=self._read, args=(fd, report), daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self, fd: int, report: Report) -> None:
        with os.fdopen(fd, "r") as lines:
            for line in lines:
                parts = line.split()
                if parts == ["ready"]:
                    self._ready.release()
                elif parts and parts[0] == "ok":
                    report.acked.append(parts[2])
                    report.call_ms.append(float(parts[3]))
                elif parts and parts[0] == "err":
                    report.failed.append(parts[2])
                    report.errors[parts[3]] += 1
                    report.call_ms.append(float(parts[4]))

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for _ in self.pids:
            if not self._ready.acquire(timeout=max(deadline - time.monotonic(), 0.01)):
                raise RuntimeError("a worker did not start")

    def acked(self) -> int:
        return sum(len(r.acked) for r in self.reports)

    def stop(self, timeout: float = 30.0) -> None:
        """Close every worker's stop pipe and wait; a worker that does not end is a hang."""
        for fd in self._stops:
            try:
                os.close(fd)
            except OSError:
                pass
        self._stops = []
        deadline = time.monotonic() + timeout
        hung = [pid for pid in self.pids if not _reap(pid, deadline)]
        for t in self._threads:
            t.join(5)
        if hung:
            self.kill()
            raise AssertionError(f"workers hung (no reply within {timeout}s): {hung}")

    def kill(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            _reap(pid, time.monotonic() + 10)
        self.pids = []
        for fd in self._stops:
            try:
                os.close(fd)
            except OSError:
                pass
        self._stops = []


def _reap(pid: int, deadline: float) -> bool:
    """Wait for child ``pid`` until ``deadline``; True once it has ended (or was reaped)."""
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


@dataclass
class Audit:
    """The server's state compared with the workers' reports."""

    acked: int = 0
    ok: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    recovered: int = 0
    corrupt: int = 0
    unknown: int = 0
    details: list[str] = field(default_factory=list)


def audit(url: str, reports: list[Report]) -> Audit:
    """Drain the queue and read counters and buckets; count lost, duplicated, unexpected,
    recovered (failed calls whose effect is there) and corrupt (values no call wrote)."""
    be = unidist.connect(url)
    result = Audit()
    puts = [r for r in reports if r.kind == "put"]
    if puts:
        seen: Counter[str] = Counter()
        q = be.queue("r-q")
        while True:
            try:
                body = q.get(block=False)
            except unidist.Empty:
                break
            if not isinstance(body, dict) or not {"w", "n"} <= set(body):
                result.corrupt += 1
                result.details.append(f"message body {body!r} was never put")
                continue
            seen[f"{body['w']}-{body['n']}"] += 1
        stats = q.stats()
        if any(stats.values()):
            result.corrupt += 1
            result.details.append(f"queue not empty after a full drain: {stats}")
        acked = {k for r in puts for k in r.acked}
        failed = {k for r in puts for k in r.failed} - acked
        result.acked += len(acked)
        result.ok += len(acked & set(seen))
        result.lost += len(acked - set(seen))
        result.duplicated += sum(n - 1 for n in seen.values())
        result.unexpected += len(set(seen) - acked - failed)
        result.recovered += len(failed & set(seen))
        result.unknown += len(failed)
        if acked - set(seen):
            result.details.append(f"lost puts: {sorted(acked - set(seen))[:10]}")
    for r in reports:
        if r.kind == "incr":
            value = be.counter(object_name("incr", r.wid)).get()
            acked_n, failed_n = len(r.acked), len(r.failed)
            result.acked += acked_n
            result.unknown += failed_n
            result.ok += min(value, acked_n)
            result.lost += max(0, acked_n - value)
            result.recovered += max(0, min(value - acked_n, failed_n))
            result.duplicated += max(0, value - acked_n - failed_n)
            if value < 0 or value > acked_n + failed_n:
                result.details.append(f"counter {r.wid}: {value} > {acked_n}+{failed_n}")
        elif r.kind == "set":
            items = dict(be.state(object_name("set", r.wid)).items())
            acked = set(r.acked)
            failed = set(r.failed) - acked
            result.acked += len(acked)
            result.unknown += len(failed)
            for key, value in items.items():
                if value != int(key.rsplit("-", 1)[1]):
                    result.corrupt += 1
                    result.details.append(f"state {key!r} holds {value!r}")
            result.ok += len(acked & set(items))
            result.lost += len(acked - set(items))
            result.recovered += len(failed & set(items))
            result.unexpected += len(set(items) - acked - failed)
    return result


@dataclass
class Chaos:
    """One restart run: the result block, the audit and the workers' reports."""

    result: Result
    audit: Audit
    reports: list[Report]
    restart_ms: list[float]


def chaos(
    scenario: str,
    persistence: str,
    cycles: int,
    seed_value: int,
    *,
    retry_for: float,
    connect_timeout: float = 0.5,
    long_outage: float = 0.0,
) -> Chaos:
    """Run the workers against one redis-server and ``kill -9`` + restart it ``cycles`` times
    at seeded random instants; the first outage lasts ``long_outage`` seconds (longer than
    ``retry_for``: every call then must end in BackendUnavailable, not hang). ``persistence``
    is ``always``, ``everysec`` or ``off``."""
    rng = random.Random(seed_value)
    aof = persistence != "off"
    server = RedisServer(aof=aof, appendfsync=persistence if aof else "always")
    fleet: Fleet | None = None
    restart_ms: list[float] = []
    try:
        url = f"{server.url}?retry_for={retry_for}&connect_timeout={connect_timeout}"
        fleet = Fleet(url)
        fleet.wait_ready()
        for cycle in range(cycles):
            time.sleep(rng.uniform(0.05, 0.25))
            server.kill()
            down = long_outage if cycle == 0 and long_outage else rng.uniform(0.0, 0.2)
            time.sleep(down)
            t0 = time.monotonic()
            server.start()
            restart_ms.append((time.monotonic() - t0) * 1000)
        time.sleep(0.2)
        fleet.stop()
        found = audit(server.url, fleet.reports)
    finally:
        if fleet is not None:
            fleet.kill()
        unidist.backends.reset()
        server.stop()
    result = Result(
        scenario,
        "redis",
        seed_value,
        params={"persistence": persistence, "restarts": cycles, "retry_for": retry_for},
        path=tempfile.gettempdir(),
    )
    result.attempted = found.acked + found.unknown
    result.ok = found.ok
    result.lost = found.lost
    result.duplicated = found.duplicated
    result.unexpected = found.unexpected
    result.recovered = found.recovered
    result.corrupt = found.corrupt
    errors: Counter[str] = Counter()
    for r in fleet.reports:
        errors.update(r.errors)
        for ms in r.call_ms:
            result.timing("call", ms)
    for ms in restart_ms:
        result.timing("restart", ms)
    result.extra["acked"] = found.acked
    result.extra["errors"] = ",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "none"
    result.extra["max_stall_s"] = f"{max(result.timings_ms['call']) / 1000:.2f}"
    return Chaos(result, found, fleet.reports, restart_ms)
