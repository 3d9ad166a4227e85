"""F7: contention on the file backend (RELIABILITY.md 3.1).

Locks: 8 processes each do N rounds of lock / read a bucket value / write value + 1 / unlock
(a plain read-modify-write: only the lock keeps it exact). The final value must be exactly
8 x N (soak N = 500, so 4,000), and overlap is measured, not assumed: each holder writes its
identity into a second key, sleeps, and re-reads it (a change means two holders at once).

Queues: 4 producers and 4 consumers move M messages (soak: 20,000) through one queue, once
with ``get`` (exactly once: every message consumed once) and once with ``receive`` + ``ack``
(at least once: every message consumed, duplicates only through redelivery); the queue ends
empty.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from tests.reliability._file_common import file_url, open_file_backend
from tests.reliability._report import Result, count, seed

CTX = multiprocessing.get_context("fork")
PROCS = 8


def _locker(url: str, rounds: int, conn: Connection) -> None:
    try:
        import unidist
        from unidist.lock import SharedLock
        from unidist.state import SharedState

        be = unidist.connect(url)
        lock = SharedLock("L", backend=be)
        bucket = SharedState("b", backend=be)
        me = f"{os.getpid()}"
        overlaps = waited = 0
        for i in range(rounds):
            t0 = time.perf_counter()
            with lock:
                waited += time.perf_counter() - t0 > 0.001
                bucket["holder"] = me
                value = bucket.get("n", 0)
                if i % 10 == 0:
                    time.sleep(0.001)
                bucket["n"] = value + 1
                overlaps += bucket["holder"] != me
        conn.send((overlaps, waited))
    finally:
        os._exit(0)


def test_f7_lock_read_write_unlock_exact(tmp_path: Path) -> None:
    s = seed()
    rounds = count(25, 500)
    root = tmp_path / "store"
    url = file_url(root)
    open_file_backend(root).close()
    pipes, procs = [], []
    t0 = time.perf_counter()
    for _ in range(PROCS):
        parent, child = CTX.Pipe(duplex=False)
        p = CTX.Process(target=_locker, args=(url, rounds, child))
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    reports = []
    for conn, p in zip(pipes, procs, strict=True):
        assert conn.poll(110), "a locker did not finish"
        reports.append(conn.recv())
        p.join(10)
    elapsed = time.perf_counter() - t0
    be = open_file_backend(root)
    final = json.loads(be.state_get("b", "n") or "0")
    be.close()
    overlaps = sum(r[0] for r in reports)
    contended = sum(r[1] for r in reports)
    result = Result("F7-lock", "file", s, params={"procs": PROCS, "rounds": rounds})
    result.path = str(root)
    result.attempted = PROCS * rounds
    result.ok = final
    result.lost = PROCS * rounds - final
    result.violations = overlaps
    result.extra = {
        "final": final,
        "contended_acquisitions": contended,
        "throughput_per_s": round(PROCS * rounds / elapsed),
    }
    result.emit()
    assert final == PROCS * rounds
    assert overlaps == 0
    assert contended > 0  # the test really had contention, so it could have failed


def _producer(url: str, tag: str, n: int) -> None:
    try:
        from unidist.backends import connect

        be = connect(url)
        for i in range(n):
            be.queue_put("q", f"{tag}-{i}", str(i), 0.0, 0)
    finally:
        os._exit(0)


def _consumer(url: str, mode: str, out: str, conn: Connection) -> None:
    try:
        from unidist.backends import connect

        be = connect(url)
        got: list[str] = []
        idle = 0.0
        while idle < 1.0:
            if mode == "get":
                d = be.queue_get("q", 1000)
            else:
                d = be.queue_receive("q", 5.0, 1000)
            if d is None:
                be.queue_wait("q", 0.1)
                idle += 0.1
                continue
            idle = 0.0
            if mode == "receive" and not be.queue_ack("q", d.id, d.receipt):
                continue  # redelivered meanwhile: another consumer owns it now
            got.append(d.id)
        Path(out).write_text("\n".join(got))
        conn.send(len(got))
    finally:
        os._exit(0)


@pytest.mark.parametrize("mode", ["get", "receive"])
def test_f7_queue_4x4(tmp_path: Path, mode: str) -> None:
    s = seed()
    per = count(100, 5000)  # per producer; soak: 4 x 5,000 = 20,000 messages
    root = tmp_path / "store"
    url = file_url(root)
    open_file_backend(root).close()
    t0 = time.perf_counter()
    producers = [CTX.Process(target=_producer, args=(url, f"p{i}", per)) for i in range(4)]
    consumers, pipes, outs = [], [], []
    for i in range(4):
        parent, child = CTX.Pipe(duplex=False)
        out = str(tmp_path / f"c{i}.txt")
        consumers.append(CTX.Process(target=_consumer, args=(url, mode, out, child)))
        pipes.append(parent)
        outs.append(out)
    for p in consumers + producers:
        p.start()
    for p in producers:
        p.join(110)
        assert p.exitcode == 0
    for conn, p in zip(pipes, consumers, strict=True):
        assert conn.poll(110)
        conn.recv()
        p.join(10)
    elapsed = time.perf_counter() - t0
    got = [line for o in outs for line in Path(o).read_text().splitlines() if line]
    want = {f"p{i}-{j}" for i in range(4) for j in range(per)}
    be = open_file_backend(root)
    stats = be.queue_stats("q")
    be.close()
    result = Result("F7-queue", "file", s, params={"mode": mode, "procs": "4x4", "msgs": 4 * per})
    result.path = str(root)
    result.attempted = len(want)
    result.ok = len(set(got) & want)
    result.lost = len(want - set(got))
    result.duplicated = len(got) - len(set(got))
    result.unexpected = len(set(got) - want)
    result.extra = {
        "throughput_msgs_per_s": round(len(want) / elapsed),
        "consumers_active": sum(1 for o in outs if Path(o).read_text()),
    }
    result.emit()
    assert result.lost == 0
    assert result.unexpected == 0
    assert result.duplicated == 0  # get: exactly once; receive+ack: one ack per message
    assert stats == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
