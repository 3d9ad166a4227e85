"""The file backend's store across real processes: contention, exactly-once gets, kill -9.

Children are started with the ``spawn`` context (no inherited descriptors or locks) and talk
to the parent over pipes; "acked" means the call returned in the child and the child then
reported it, as in RELIABILITY.md part 3.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

from unidist.backends.file import FileBackend

pytestmark = pytest.mark.multiprocess

CTX = multiprocessing.get_context("spawn")


# ---------------------------------------------------------------------- child entry points
def _incr(url: str, name: str, n: int) -> None:
    from unidist.backends import connect

    b = connect(url)
    for _ in range(n):
        b.counter_add(name, 1, "r")


def _produce(url: str, queue: str, prefix: str, n: int) -> None:
    from unidist.backends import connect

    b = connect(url)
    for i in range(n):
        assert b.queue_put(queue, f"{prefix}-{i}", f'"{prefix}"', 0, 0)


def _consume(url: str, queue: str, out: str) -> None:
    from unidist.backends import connect

    b = connect(url)
    got = []
    while True:
        d = b.queue_get(queue, 5)
        if d is None:
            b.queue_wait(queue, 0.5)
            continue
        if d.body == '"STOP"':
            break
        got.append(d.id)
    Path(out).write_text("\n".join(got))


def _write_until_killed(url: str, conn) -> None:
    from unidist.backends import connect

    b = connect(url)
    i = int(os.environ.get("UNIDIST_TEST_START", "0"))
    conn.send(("ready", b.counter_get("k")))
    while True:
        i += 1
        b.counter_add("k", 1, "r")
        b.queue_put("kq", f"{os.getpid()}-{i}", str(i), 0, 0)
        while True:
            cur = b.state_get("kb", "n")
            new = str(int(cur or "0") + 1)
            if b.state_cas("kb", "n", cur, new):
                break
        conn.send(("acked", f"{os.getpid()}-{i}"))


def _run_all(procs: list) -> None:
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"child {p.pid} exited with {p.exitcode}"


# ---------------------------------------------------------------------- tests
def test_four_processes_increment_exactly(tmp_path):
    """4 processes x 500 counter_add (crossing journal rotations) give exactly 2,000."""
    url = "file://" + str(tmp_path / "d")
    _run_all([CTX.Process(target=_incr, args=(url, "c", 500)) for _ in range(4)])
    b = FileBackend.from_url(url)
    assert b.counter_get("c") == 2000
    b.close()


def test_queue_get_exactly_once_across_processes(tmp_path):
    """2 producers and 2 consumers: every message is delivered by queue_get exactly once."""
    url = "file://" + str(tmp_path / "d")
    n = 400
    outs = [str(tmp_path / f"out{i}") for i in range(2)]
    consumers = [CTX.Process(target=_consume, args=(url, "q", o)) for o in outs]
    producers = [CTX.Process(target=_produce, args=(url, "q", f"p{i}", n)) for i in range(2)]
    for p in consumers:
        p.start()
    _run_all(producers)
    b = FileBackend.from_url(url)
    for i in range(2):
        b.queue_put("q", f"stop{i}", '"STOP"', 0, -1)
    for p in consumers:
        p.join(60)
        assert p.exitcode == 0
    got = [line for o in outs for line in Path(o).read_text().split("\n") if line]
    want = {f"p{i}-{j}" for i in range(2) for j in range(n)}
    assert len(got) == len(want)  # no duplicates
    assert set(got) == want  # nothing lost
    assert all(Path(o).read_text() for o in outs)  # both consumers took part
    assert b.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    b.close()


def _kill_cycles(tmp_path: Path, cycles: int, fsync: str, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    url = "file://" + str(tmp_path / "d") + f"?fsync={fsync}"
    acked: list[str] = []
    extra_allowed = 0
    for _ in range(cycles):
        parent_conn, child_conn = CTX.Pipe(duplex=False)
        p = CTX.Process(target=_write_until_killed, args=(url, child_conn))
        p.start()
        child_conn.close()
        assert parent_conn.poll(30)
        kind, _ = parent_conn.recv()
        assert kind == "ready"
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        try:
            while True:
                kind, mid = parent_conn.recv()
                acked.append(mid)
        except EOFError:
            pass
        extra_allowed += 1
        # Reopen as a new process would: must open without exception and hold every ack.
        b = FileBackend.from_url(url)
        value = b.counter_get("k")
        bucket = int(b.state_get("kb", "n") or "0")
        queued = b.queue_stats("kq")["ready"]
        b.close()
        assert len(acked) <= value <= len(acked) + extra_allowed
        assert len(acked) <= bucket <= len(acked) + extra_allowed
        assert len(acked) <= queued <= len(acked) + extra_allowed
    b = FileBackend.from_url(url)
    ids = []
    while (d := b.queue_get("kq", 5)) is not None:
        ids.append(d.id)
    b.close()
    assert len(ids) == len(set(ids))
    lost = set(acked) - set(ids)
    assert not lost
    return {"acked": len(acked), "recovered": len(ids) - len(acked)}


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_kill_9_mid_writes_loses_nothing_acknowledged(tmp_path, fsync):
    """kill -9 at a random instant: reopen works, every acked op is present (bounded run)."""
    result = _kill_cycles(tmp_path, cycles=3, fsync=fsync, seed=1)
    assert result["acked"] > 0


@pytest.mark.slow
def test_kill_9_soak(tmp_path):
    """The kill -9 loop, 40 cycles."""
    result = _kill_cycles(tmp_path, cycles=40, fsync="always", seed=2)
    assert result["acked"] > 0
