"""Batch operations: ``put_many``/``get_many``/``receive_many`` and coalesced counter
increments, on every backend (issue #11)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import unidist
from unidist.backends import Backend
from unidist.counter import INT64_MAX

EMPTY = {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
EARLY_SLACK = 0.01  # backend clocks (the Redis server's in ms) may round a little early
LATE_BOUND = 0.5  # "ready within" on a loaded 2-core machine


def _threads(n: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``n`` threads started together; return their results in order
    (re-raising the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------------- put_many / get_many


def test_put_many_keeps_order_and_priority(backend: Backend) -> None:
    """put_many returns distinct ids in order; its messages leave by priority, then in put
    order, interleaved with single puts exactly as if each had been put alone."""
    q = unidist.MessageQueue("q", backend=backend)
    first = q.put_many([{"n": i} for i in range(10)])
    q.put("single")
    high = q.put_many(["h1", "h2"], priority=5)
    low = q.put_many(["l1"], priority=-1)
    ids = [*first, *high, *low]
    assert len(set(ids)) == len(ids) == 13
    assert q.get_many(5, timeout=5) == ["h1", "h2", {"n": 0}, {"n": 1}, {"n": 2}]
    assert q.get_many(100, timeout=5) == [*({"n": i} for i in range(3, 10)), "single", "l1"]
    assert q.stats() == EMPTY


def test_put_many_accepts_any_iterable_and_empty(backend: Backend) -> None:
    """A generator of bodies works; an empty batch stores nothing and returns []."""
    q = unidist.MessageQueue("q", backend=backend)
    assert q.put_many([]) == []
    assert q.put_many(iter(())) == []
    assert q.stats() == EMPTY
    ids = q.put_many(f"m{i}" for i in range(4))
    assert len(ids) == 4
    assert [m.id for m in q.receive_many(10, timeout=5)] == ids


def test_put_many_delay(backend: Backend) -> None:
    """Delayed batch messages are not ready before the delay and all become ready after."""
    q = unidist.MessageQueue("q", backend=backend)
    t0 = time.monotonic()
    q.put_many(["a", "b", "c"], delay=0.3)
    assert q.get_many(10, timeout=0) == []
    assert q.stats()["delayed"] + q.stats()["ready"] == 3
    got: list[Any] = []
    while len(got) < 3:
        got += q.get_many(10, timeout=5)
    waited = time.monotonic() - t0
    assert got == ["a", "b", "c"]
    assert 0.3 - EARLY_SLACK <= waited < 0.3 + LATE_BOUND


def test_get_many_max_and_timeout(backend: Backend) -> None:
    """get_many takes at most ``max``; with nothing ready it returns [] once the timeout
    has passed (at once with timeout=0), never Empty."""
    q = unidist.MessageQueue("q", backend=backend)
    q.put_many(range(5))
    assert q.get_many(2, timeout=0) == [0, 1]
    assert q.get_many(1) == [2]
    assert q.get_many(10, timeout=0) == [3, 4]
    t0 = time.monotonic()
    assert q.get_many(10, timeout=0) == []
    assert time.monotonic() - t0 < LATE_BOUND
    t0 = time.monotonic()
    assert q.get_many(10, timeout=0.2) == []
    assert 0.2 - EARLY_SLACK <= time.monotonic() - t0 < 0.2 + LATE_BOUND
    assert q.receive_many(3, timeout=0) == []
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max"):
            q.get_many(bad)
        with pytest.raises(ValueError, match="max"):
            q.receive_many(bad)
    for wrong in (1.5, True, "3"):
        with pytest.raises(TypeError, match="max"):
            q.get_many(wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        q.get_many(3, timeout=-1)


def test_get_many_blocks_until_a_put(backend: Backend) -> None:
    """A blocked get_many wakes when a batch is put and takes what is ready then."""
    q = unidist.MessageQueue("q", backend=backend)
    got: list[Any] = []
    started = threading.Event()

    def consume() -> None:
        started.set()
        got.extend(q.get_many(10, timeout=10))

    t = threading.Thread(target=consume)
    t.start()
    started.wait(5)
    time.sleep(0.1)
    t0 = time.monotonic()
    q.put_many(["x", "y", "z"])
    t.join(10)
    assert not t.is_alive()
    assert time.monotonic() - t0 < LATE_BOUND + 1.0  # woken, not the 10 s timeout
    assert got == ["x", "y", "z"][: len(got)]
    assert 1 <= len(got) <= 3
    assert q.get_many(10, timeout=0) == ["x", "y", "z"][len(got) :]


def test_receive_many_messages_ack_and_nack_alone(backend: Backend) -> None:
    """receive_many hands out in-flight Messages; each is acked or nacked on its own."""
    q = unidist.MessageQueue("q", backend=backend, visibility_timeout=30)
    q.put_many(["a", "b", "c", "d"])
    msgs = q.receive_many(3, timeout=5)
    assert [m.body for m in msgs] == ["a", "b", "c"]
    assert [m.attempts for m in msgs] == [1, 1, 1]
    assert q.stats() == {**EMPTY, "ready": 1, "in_flight": 3}
    assert msgs[0].ack() is True
    assert msgs[0].ack() is False
    assert msgs[1].nack() is True
    with msgs[2]:
        pass  # acked on success
    again = q.receive_many(10, timeout=5)
    assert sorted(m.body for m in again) == ["b", "d"]
    assert {m.body: m.attempts for m in again} == {"b": 2, "d": 1}
    for m in again:
        m.ack()
    assert q.stats() == EMPTY


# ---------------------------------------------------------------------- ids and bad input


def test_put_many_with_ids_dedupes(backend: Backend) -> None:
    """With ``ids``, a batch is safe to repeat: ids already queued or repeated inside the
    batch store nothing, and single puts see the batch's ids too."""
    q = unidist.MessageQueue("q", backend=backend)
    assert q.put_many(["A", "B", "A2"], ids=["a", "b", "a"]) == ["a", "b", "a"]
    assert q.put_many(["A3", "C"], ids=["a", "c"]) == ["a", "c"]
    assert q.put("B2", id="b") == "b"
    assert len(q) == 3
    assert q.get_many(10, timeout=0) == ["A", "B", "C"]
    with pytest.raises(ValueError, match="2 ids for 3 bodies"):
        q.put_many([1, 2, 3], ids=["x", "y"])
    with pytest.raises(unidist.InvalidName):
        q.put_many([1, 2], ids=["ok", "not ok"])
    with pytest.raises(TypeError):
        q.put_many([1], ids="x")
    assert q.stats() == EMPTY


@pytest.mark.parametrize(
    ("bodies", "kwargs", "error", "match"),
    [
        ([1, {"x": object()}, 3], {}, unidist.SerializationError, r"bodies\[1\]"),
        ([1, float("nan")], {}, unidist.SerializationError, r"bodies\[1\]"),
        ([1, 2], {"delay": -1}, ValueError, "delay"),
        ([1, 2], {"delay": "soon"}, TypeError, "delay"),
        ([1, 2], {"priority": 1_000_001}, ValueError, "priority"),
        ([1, 2], {"priority": 2.5}, TypeError, "priority"),
        ("abc", {}, TypeError, "put()"),
        ({"a": 1}, {}, TypeError, "put()"),
    ],
)
def test_put_many_bad_input_stores_nothing(
    backend: Backend, bodies: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Any bad body, delay or priority is a clear error before anything is stored, even
    when the bad body comes after good ones."""
    q = unidist.MessageQueue("q", backend=backend)
    with pytest.raises(error, match=match):
        q.put_many(bodies, **kwargs)
    assert q.stats() == EMPTY


# ---------------------------------------------------------------------- concurrency


def test_get_many_across_threads_delivers_each_message_once(backend: Backend) -> None:
    """2 producers put batches while 4 consumers get_many until all are taken: every
    message arrives exactly once."""
    q = unidist.MessageQueue("q", backend=backend)
    per_producer, batch = 150, 15
    total = 2 * per_producer
    taken: list[list[Any]] = [[] for _ in range(4)]
    count = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def work(i: int) -> None:
        if i < 2:
            for start in range(0, per_producer, batch):
                q.put_many([f"p{i}-{n}" for n in range(start, start + batch)])
            return
        while time.monotonic() < deadline:
            with lock:
                if count[0] >= total:
                    return
            got = q.get_many(7, timeout=0.2)
            assert len(got) <= 7
            taken[i - 2].extend(got)
            with lock:
                count[0] += len(got)

    _threads(6, work)
    everything = Counter(m for part in taken for m in part)
    assert sum(everything.values()) == total
    assert set(everything) == {f"p{i}-{n}" for i in range(2) for n in range(per_producer)}
    assert max(everything.values()) == 1
    # Each producer's messages leave in its put order, whichever consumer took them.
    for part in taken:
        for p in ("p0-", "p1-"):
            mine = [int(m[3:]) for m in part if m.startswith(p)]
            assert mine == sorted(mine)
    assert q.stats() == EMPTY


# ---------------------------------------------------------------------- counter coalescing


def test_concurrent_incr_returns_each_value_once(backend: Backend) -> None:
    """8 threads x 2,000 incr(): the values returned are exactly 1..16,000 (each once, as
    if applied one after another) and the final value is exact."""
    threads, each = 8, 2000

    def work(i: int) -> list[int]:
        c = unidist.SharedCounter("hits", backend=backend)  # one object per thread
        return [c.incr() for _ in range(each)]

    values = [v for part in _threads(threads, work) for v in part]
    assert sorted(values) == list(range(1, threads * each + 1))
    assert unidist.SharedCounter("hits", backend=backend).get() == threads * each


def _chain(pairs: Iterator[tuple[int, int]], start: int) -> None:
    """Check that (delta, returned value) pairs are a sequential history from ``start``:
    ordered by value (all deltas > 0), each value minus its delta is the previous one."""
    prev = start
    for delta, value in sorted(pairs, key=lambda p: p[1]):
        assert value - delta == prev, f"incr({delta}) returned {value} after {prev}"
        prev = value


def test_concurrent_incr_of_different_amounts_is_a_sequential_history(backend: Backend) -> None:
    """Threads adding different amounts get values that chain up as one sequential history
    (each value minus its own amount is the value returned just before it)."""
    counter = unidist.SharedCounter("c", backend=backend)
    counter.set(1000)

    def work(i: int) -> list[tuple[int, int]]:
        return [(i + 1, counter.incr(i + 1)) for _ in range(200)]

    pairs = [p for part in _threads(6, work) for p in part]
    _chain(iter(pairs), 1000)
    assert counter.get() == 1000 + 200 * (1 + 2 + 3 + 4 + 5 + 6)


def test_concurrent_incr_and_decr(backend: Backend) -> None:
    """Concurrent incr() and decr() of one counter return values that fit one sequential
    history, and the final value is exact."""
    counter = unidist.SharedCounter("c", backend=backend)

    def work(i: int) -> list[int]:
        step = counter.incr if i % 2 else counter.decr
        return [step() for _ in range(300)]

    parts = _threads(6, work)
    ups = [v for i, part in enumerate(parts) if i % 2 for v in part]
    downs = [v for i, part in enumerate(parts) if not i % 2 for v in part]
    assert len(ups) == len(downs) == 900
    assert counter.get() == 0
    # A sequential history of +1/-1 steps from 0 back to 0 crosses each edge (k-1, k) as
    # often upwards (an incr returning k) as downwards (a decr returning k-1).
    up, down = Counter(ups), Counter(downs)
    for k in set(up) | {d + 1 for d in down}:
        assert up[k] == down[k - 1], f"{up[k]} incr() returned {k}, {down[k - 1]} decr() {k - 1}"


def test_concurrent_incr_near_overflow_fails_only_the_overflowing(backend: Backend) -> None:
    """8 threads x 3 incr() starting 10 below the maximum: exactly 10 succeed (values
    max-9..max) and the other 14 raise OverflowError; the counter ends at the maximum."""
    counter = unidist.SharedCounter("big", backend=backend)
    counter.set(INT64_MAX - 10)

    def work(i: int) -> list[int | str]:
        out: list[int | str] = []
        for _ in range(3):
            try:
                out.append(counter.incr())
            except OverflowError:
                out.append("overflow")
        return out

    results = [r for part in _threads(8, work) for r in part]
    ok = sorted(r for r in results if isinstance(r, int))
    assert ok == list(range(INT64_MAX - 9, INT64_MAX + 1))
    assert results.count("overflow") == 14
    assert counter.get() == INT64_MAX


@pytest.mark.scope("host")
def test_incr_in_a_child_forked_while_threads_increment(backend: Backend) -> None:
    """A child forked while 4 threads increment (so a coalesced call is likely in flight)
    can increment the counter at once: it never waits for a batch of its parent."""
    counter = unidist.SharedCounter("c", backend=backend)
    stop = threading.Event()

    def hammer() -> None:
        c = unidist.SharedCounter("c", backend=backend)
        while not stop.is_set():
            c.incr()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.1)
        for _ in range(3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the forked child
                signal.alarm(20)  # a hang ends the child, which the parent reports
                try:
                    os._exit(0 if counter.incr() > 0 else 3)
                except BaseException:
                    os._exit(4)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, "the forked child's incr failed"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert counter.get() > 0
