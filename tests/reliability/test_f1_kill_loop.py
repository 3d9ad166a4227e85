"""F1: the kill -9 loop (RELIABILITY.md 3.1; SQLite crash tests, Jepsen total-queue).

Three workers run against one ``file://`` store: a producer ``put``s messages, a consumer
``receive``s and ``ack``s them, an incrementer bumps a counter and a bucket key under
``transform``. Each reports over a pipe only after the call returned ("acked"). Every cycle
the parent sleeps a seeded uniform random time, ``kill -9``s a random worker, restarts it,
and opens the store as a new process would: it must open without exception, and the counter
and bucket must hold every acked increment (plus at most one in flight per kill of the
incrementer). At the end all workers are killed and the queue is drained.

Pass (total-queue accounting): lost = 0 (every acked put is consumed or still queued),
unexpected = 0, corrupt = 0; duplicates only through redelivery after a consumer's kill.
CI runs 20 cycles, the soak 1,000 (``bash scripts/soak.sh -k F1``).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tests.reliability._file_common import file_url, open_file_backend, watching_cuts
from tests.reliability._report import Result, count, seed

CTX = multiprocessing.get_context("fork")
ROLES = ("producer", "consumer", "incrementer")
VISIBILITY = 0.5


def _worker(role: str, url: str, conn: Connection, tag: str) -> None:
    import unidist
    from unidist.queue import MessageQueue
    from unidist.state import SharedState

    be = unidist.connect(url)
    try:
        if role == "producer":
            q = MessageQueue("q", backend=be)
            i = 0
            while True:
                i += 1
                mid = f"{tag}-{i}"
                q.put(i, id=mid)
                conn.send(("put", mid))
                time.sleep(0.004)  # keep the backlog drainable by one consumer
        elif role == "consumer":
            q = MessageQueue("q", backend=be, visibility_timeout=VISIBILITY, max_attempts=1000)
            while True:
                try:
                    msg = q.receive(timeout=0.2)
                except unidist.Empty:
                    continue
                conn.send(("recv", msg.id))
                if msg.ack():
                    conn.send(("consumed", msg.id))
        else:
            bucket = SharedState("b", backend=be)
            while True:
                be.counter_add("c", 1, "r")
                bucket.transform("n", lambda v: (v or 0) + 1)
                conn.send(("incr", None))
    finally:
        os._exit(0)


class Worker:
    def __init__(self, role: str, url: str, n: int) -> None:
        self.role = role
        parent, child = CTX.Pipe(duplex=False)
        self.conn = parent
        self.proc = CTX.Process(target=_worker, args=(role, url, child, f"{role[0]}{n}"))
        self.proc.start()
        child.close()

    def kill(self) -> None:
        if self.proc.pid is not None and self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)


class Ledger:
    def __init__(self) -> None:
        self.put: set[str] = set()
        self.recv: set[str] = set()
        self.consumed: list[str] = []
        self.incr = 0

    def drain(self, w: Worker, until_eof: bool = False) -> None:
        while True:
            try:
                if not until_eof and not w.conn.poll(0):
                    return
                kind, value = w.conn.recv()
            except (EOFError, OSError):
                return
            if kind == "put":
                self.put.add(value)
            elif kind == "recv":
                self.recv.add(value)
            elif kind == "consumed":
                self.consumed.append(value)
            else:
                self.incr += 1


def test_f1_kill_loop(tmp_path: Path) -> None:
    s = seed()
    rng = random.Random(s)
    cycles = count(20, 1000)
    root = tmp_path / "store"
    url = file_url(root)
    open_file_backend(root).close()
    result = Result("F1", "file", s, params={"fsync": "always", "cycles": cycles}, path=str(root))
    ledger = Ledger()
    spawned = 0
    workers: dict[str, Worker] = {}
    for role in ROLES:
        spawned += 1
        workers[role] = Worker(role, url, spawned)
    kills = dict.fromkeys(ROLES, 0)
    try:
        for _ in range(cycles):
            time.sleep(rng.uniform(0.01, 0.12))
            role = rng.choice(ROLES)
            workers[role].kill()
            kills[role] += 1
            ledger.drain(workers[role], until_eof=True)
            workers[role].conn.close()
            spawned += 1
            workers[role] = Worker(role, url, spawned)
            for w in workers.values():
                ledger.drain(w)
            before = ledger.incr
            t0 = time.perf_counter()
            with watching_cuts() as cuts:
                be = open_file_backend(root)
                value = be.counter_get("c")
                bucket = be.state_get("b", "n")
                be.queue_stats("q")
                be.close()
            result.timing("open", (time.perf_counter() - t0) * 1000)
            cuts.add_to(result)
            for w in workers.values():
                ledger.drain(w)
            # + 1: the live incrementer's call that returned but is not reported yet
            top = ledger.incr + kills["incrementer"] + 1
            assert before <= value <= top, (value, before, top)
            n = int(bucket or "0")
            assert before <= n <= top, (n, before, top)
    finally:
        for w in workers.values():
            w.kill()
    for w in workers.values():
        ledger.drain(w, until_eof=True)
        w.conn.close()
    # the final drain (in-flight messages of a killed consumer come back after VISIBILITY)
    be = open_file_backend(root)
    remaining: list[str] = []
    deadline = time.monotonic() + 10 * VISIBILITY + 5
    while time.monotonic() < deadline:
        d = be.queue_get("q", 1000)
        if d is not None:
            remaining.append(d.id)
            continue
        stats = be.queue_stats("q")
        if not any(stats.values()):
            break
        time.sleep(0.05)
    final: dict[str, Any] = {
        "counter": be.counter_get("c"),
        "bucket": int(be.state_get("b", "n") or "0"),
        "stats": be.queue_stats("q"),
    }
    be.close()
    consumed = set(ledger.consumed)
    out = consumed | set(remaining)
    unknown_consumed = ledger.recv - consumed  # acked by a consumer killed before it reported
    result.attempted = len(ledger.put) + len(ledger.recv) + ledger.incr
    result.ok = len(ledger.put) + len(ledger.consumed) + ledger.incr
    result.lost = len(ledger.put - out - unknown_consumed)
    result.duplicated = len(ledger.consumed) - len(consumed) + len(consumed & set(remaining))
    # only ids a producer generated may appear; a put whose producer died before reporting
    # it is "recovered" (outcome unknown, found)
    result.unexpected = sum(1 for m in out if not re.fullmatch(r"p\d+-\d+", m))
    result.recovered = len(out - ledger.put)
    result.extra = {
        "kills": kills,
        "puts_acked": len(ledger.put),
        "consumed": len(ledger.consumed),
        "increments_acked": ledger.incr,
        "final_counter": final["counter"],
    }
    result.emit()
    assert result.lost == 0
    assert result.unexpected == 0
    assert final["stats"] == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    top = ledger.incr + kills["incrementer"] + 1  # + the final kill of every worker
    assert ledger.incr <= final["counter"] <= top
    assert ledger.incr <= final["bucket"] <= top
    assert ledger.put
    assert ledger.consumed
    assert ledger.incr > 0
