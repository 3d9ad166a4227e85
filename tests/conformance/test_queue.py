"""MessageQueue: ordering, delays, timeouts, at-least-once delivery, dead letters, processes."""

from __future__ import annotations

import json
import queue as std_queue
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _queue_workers import STOP, reap, run_workers, start_worker

import unidist
from unidist.backends import Backend

EMPTY = {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
# Time-based checks: "not before" allows this much clock granularity (backend clocks are
# wall clocks, the Redis server's in ms); "ready within" allows for a loaded 2-core machine.
EARLY_SLACK = 0.01
LATE_BOUND = 0.5


def _stats(**counts: int) -> dict[str, int]:
    return {**EMPTY, **counts}


# ---------------------------------------------------------------------- ordering


def test_put_get_is_fifo(backend: Backend) -> None:
    """Messages of one priority leave in put order, and put returns distinct ids."""
    q = unidist.MessageQueue("q", backend=backend)
    ids = [q.put({"n": i}) for i in range(20)]
    assert len(set(ids)) == 20
    assert [q.get(timeout=5) for _ in range(20)] == [{"n": i} for i in range(20)]
    assert q.stats() == EMPTY


def test_priority_first_then_fifo(backend: Backend) -> None:
    """Higher priority leaves first; equal priorities leave in put order."""
    q = unidist.MessageQueue("q", backend=backend)
    puts = [("a", 0), ("b", 5), ("c", -3), ("d", 5), ("e", 0), ("f", 1_000_000), ("g", -3)]
    for body, prio in puts:
        q.put(body, priority=prio)
    got = [q.get(timeout=5) for _ in puts]
    assert got == ["f", "b", "d", "a", "e", "c", "g"]
    with pytest.raises(ValueError):
        q.put("x", priority=1_000_001)
    with pytest.raises(TypeError):
        q.put("x", priority=1.5)  # type: ignore[arg-type]


def test_messages_are_shared_by_name(backend: Backend) -> None:
    """Two handles of one queue name share messages; another name is a separate queue."""
    a = unidist.MessageQueue("shared", backend=backend)
    b = backend.queue("shared")
    other = unidist.MessageQueue("other", backend=backend)
    a.put("m")
    assert len(other) == 0
    assert b.get(timeout=5) == "m"
    assert len(a) == 0


def test_delayed_messages_are_ready_at_their_time(backend: Backend) -> None:
    """A delayed message never leaves early, does not hold back ready ones, and is ready on time."""
    q = unidist.MessageQueue("q", backend=backend)
    delays = [0.6, 0.2, 0.4]
    t0 = time.monotonic()
    for d in delays:
        q.put({"delay": d}, delay=d)
    t_put = time.monotonic()
    q.put("now")
    assert q.get(timeout=5) == "now"
    with pytest.raises(unidist.Empty):
        q.get(block=False)
    assert q.stats() == _stats(delayed=3)
    assert len(q) == 0
    errors = []
    for d in sorted(delays):
        body = q.get(timeout=5)
        t = time.monotonic()
        assert body == {"delay": d}
        assert t >= t0 + d - EARLY_SLACK, f"delay {d}s message left {t0 + d - t:.3f}s early"
        errors.append(t - (t_put + d))
    print(
        f"delay error (ready after due, s): {[round(e, 4) for e in errors]} max={max(errors):.4f}"
    )
    assert max(errors) < LATE_BOUND
    assert q.stats() == EMPTY
    with pytest.raises(ValueError):
        q.put("x", delay=-1)


def test_get_and_receive_timeouts_raise_empty(backend: Backend) -> None:
    """On an empty queue get/receive raise Empty (a queue.Empty) after the timeout, at once
    without blocking."""
    q = unidist.MessageQueue("q", backend=backend)
    for call in (q.get, q.receive):
        t0 = time.monotonic()
        with pytest.raises(unidist.Empty) as info:
            call(timeout=0.3)
        waited = time.monotonic() - t0
        assert isinstance(info.value, std_queue.Empty)
        assert isinstance(info.value, unidist.UnidistError)
        assert 0.3 - EARLY_SLACK <= waited < 0.3 + LATE_BOUND, waited
        t0 = time.monotonic()
        with pytest.raises(unidist.Empty):
            call(block=False)
        with pytest.raises(unidist.Empty):
            call(timeout=0)
        assert time.monotonic() - t0 < 0.2
    with pytest.raises(unidist.Empty):
        q.get_nowait()
    with pytest.raises(ValueError):
        q.get(timeout=-1)


def test_waiting_consumers_are_woken_promptly(backend: Backend) -> None:
    """A get() and a receive() blocked in other threads return soon after a put (well under 1 s)."""
    q = unidist.MessageQueue("q", backend=backend)
    started = threading.Barrier(3)
    woke: dict[str, float] = {}
    bodies: list[Any] = []
    errors: list[BaseException] = []

    def waiter(kind: str) -> None:
        try:
            started.wait(timeout=10)
            if kind == "get":
                bodies.append(q.get(timeout=10))
            else:
                m = q.receive(timeout=10)
                bodies.append(m.body)
                m.ack()
            woke[kind] = time.monotonic()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(k,)) for k in ("get", "receive")]
    for t in threads:
        t.start()
    started.wait(timeout=10)
    time.sleep(0.3)  # let both waiters settle into their blocking wait: the behaviour under test
    t_put = time.monotonic()
    q.put("one")
    q.put("two")
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(bodies) == ["one", "two"]
    latency = {k: round(v - t_put, 4) for k, v in woke.items()}
    print(f"wake-up latency after put (s): {latency}")
    assert max(latency.values()) < 0.5
    assert q.stats() == EMPTY


# ---------------------------------------------------------------------- at-least-once


def test_receive_then_ack_once(backend: Backend) -> None:
    """receive gives a Message (id, body, attempts=1) in flight until ack; a second ack is False."""
    q = unidist.MessageQueue("q", backend=backend)
    mid = q.put({"job": 1}, priority=3)
    m = q.receive(timeout=5)
    assert isinstance(m, unidist.Message)
    assert (m.id, m.body, m.attempts, m.priority) == (mid, {"job": 1}, 1, 3)
    assert mid in repr(m)
    assert q.stats() == _stats(in_flight=1)
    assert len(q) == 0
    with pytest.raises(unidist.Empty):
        q.receive(block=False)
    assert m.ack() is True
    assert m.ack() is False
    assert m.nack() is False
    assert q.stats() == EMPTY


def test_nack_redelivers_with_attempts_plus_one(backend: Backend) -> None:
    """nack() makes the message ready again (attempts+1); nack(delay) holds it back that long."""
    q = unidist.MessageQueue("q", backend=backend)
    mid = q.put("m")
    first = q.receive(timeout=5)
    assert first.nack() is True
    second = q.receive(timeout=5)
    assert (second.id, second.body, second.attempts) == (mid, "m", 2)
    assert first.ack() is False  # an old delivery changes nothing
    assert first.nack() is False
    assert q.stats() == _stats(in_flight=1)
    t0 = time.monotonic()
    assert second.nack(delay=0.3) is True
    assert q.stats() == _stats(delayed=1)
    with pytest.raises(unidist.Empty):
        q.receive(block=False)
    third = q.receive(timeout=5)
    waited = time.monotonic() - t0
    assert (third.id, third.attempts) == (mid, 3)
    assert 0.3 - EARLY_SLACK <= waited < 0.3 + LATE_BOUND, waited
    print(f"nack(delay=0.3) redelivered after {waited:.4f}s")
    with pytest.raises(ValueError):
        third.nack(delay=-1)
    assert third.ack() is True
    assert q.stats() == EMPTY


def test_context_manager_acks_on_success_nacks_on_exception(backend: Backend) -> None:
    """`with q.receive() as m` acks when the block succeeds and nacks when it raises."""
    q = unidist.MessageQueue("q", backend=backend)
    q.put("ok")
    with q.receive(timeout=5) as m:
        assert m.body == "ok"
    assert q.stats() == EMPTY
    mid = q.put("fails")
    with pytest.raises(RuntimeError, match="processing failed"), q.receive(timeout=5) as m:
        raise RuntimeError("processing failed")
    assert q.stats() == _stats(ready=1)
    with q.receive(timeout=5) as again:
        assert (again.id, again.attempts) == (mid, 2)
        assert again.ack() is True  # an explicit ack inside the block is not repeated
    assert q.stats() == EMPTY


def test_unacked_message_is_redelivered_after_visibility_timeout(backend: Backend) -> None:
    """An unacked message comes back after visibility_timeout with attempts+1; the late ack of
    the first delivery returns False and deletes nothing."""
    vis = 0.3
    q = unidist.MessageQueue("q", backend=backend, visibility_timeout=vis)
    mid = q.put("work")
    t0 = time.monotonic()
    first = q.receive(timeout=5)
    t1 = time.monotonic()
    with pytest.raises(unidist.Empty):
        q.receive(block=False)  # in flight, not ready
    second = q.receive(timeout=5)
    t2 = time.monotonic()
    assert (second.id, second.body, second.attempts) == (mid, "work", 2)
    assert t2 >= t0 + vis - EARLY_SLACK
    error = t2 - (t1 + vis)
    print(f"visibility-timeout redelivery error (after due, s): {error:.4f}")
    assert error < LATE_BOUND
    q.put("bystander")
    assert first.ack() is False
    assert first.nack() is False
    assert q.stats() == _stats(ready=1, in_flight=1)
    assert second.ack() is True
    assert q.get(timeout=5) == "bystander"
    assert q.stats() == EMPTY


def test_max_attempts_then_dead_list_and_requeue(backend: Backend) -> None:
    """After max_attempts deliveries a message is dead: listed by dead(), requeued by
    requeue_dead() with attempts reset."""
    q = unidist.MessageQueue("q", backend=backend, max_attempts=2)
    mid = q.put({"poison": True})
    for attempt in (1, 2):
        m = q.receive(timeout=5)
        assert m.attempts == attempt
        assert m.nack() is True
    assert q.stats() == _stats(dead=1)
    with pytest.raises(unidist.Empty):
        q.receive(block=False)
    (dead,) = q.dead()
    assert (dead.id, dead.body, dead.attempts) == (mid, {"poison": True}, 2)
    assert dead.ack() is False
    assert q.stats() == _stats(dead=1)
    assert q.requeue_dead() == 1
    assert q.requeue_dead() == 0
    assert q.dead() == []
    assert q.stats() == _stats(ready=1)
    again = q.receive(timeout=5)
    assert (again.id, again.attempts) == (mid, 1)
    assert again.ack() is True
    assert q.stats() == EMPTY
    with pytest.raises(ValueError):
        unidist.MessageQueue("q", backend=backend, max_attempts=0)


def test_visibility_timeout_on_last_attempt_goes_dead(backend: Backend) -> None:
    """A message whose last allowed delivery times out goes to the dead list, not back to ready."""
    q = unidist.MessageQueue("q", backend=backend, visibility_timeout=0.2, max_attempts=1)
    mid = q.put("slow")
    m = q.receive(timeout=5)
    with pytest.raises(unidist.Empty):
        q.receive(timeout=0.8)
    assert q.stats() == _stats(dead=1)
    assert [d.id for d in q.dead()] == [mid]
    assert m.ack() is False
    assert q.stats() == _stats(dead=1)


def test_poison_message_goes_dead_while_others_keep_flowing(backend: Backend) -> None:
    """A message that always fails ends on the dead list; every other message is processed."""
    q = unidist.MessageQueue("q", backend=backend, max_attempts=3)
    poison = q.put({"poison": True}, priority=10)
    for i in range(30):
        q.put({"n": i})
    done: list[int] = []
    poison_deliveries = 0
    t0 = time.monotonic()
    while len(done) < 30 or q.stats()["dead"] == 0:
        try:
            m = q.receive(timeout=2)
        except unidist.Empty:
            break
        assert isinstance(m.body, dict)
        if m.body.get("poison"):
            poison_deliveries += 1
            assert m.nack(delay=0.05) is True
        else:
            done.append(m.body["n"])
            assert m.ack() is True
    print(f"30 messages + 1 poison processed in {time.monotonic() - t0:.3f}s")
    assert sorted(done) == list(range(30))
    assert poison_deliveries == 3
    assert [(d.id, d.attempts) for d in q.dead()] == [(poison, 3)]
    assert q.stats() == _stats(dead=1)


# ---------------------------------------------------------------------- bookkeeping


def test_len_and_stats_count_each_state(backend: Backend) -> None:
    """len(q) counts ready messages; stats() counts ready, delayed, in-flight and dead."""
    q = unidist.MessageQueue("q", backend=backend, max_attempts=1)
    assert len(q) == 0
    assert q.stats() == EMPTY
    for i in range(4):
        q.put(i)
    q.put("later", delay=60)
    dying = q.receive(timeout=5)
    assert dying.nack() is True  # one attempt allowed: dead
    held = q.receive(timeout=5)
    assert len(q) == 2
    assert q.stats() == {"ready": 2, "delayed": 1, "in_flight": 1, "dead": 1}
    assert held.ack() is True
    assert q.stats() == {"ready": 2, "delayed": 1, "in_flight": 0, "dead": 1}


def test_purge_removes_ready_and_delayed_not_in_flight(backend: Backend) -> None:
    """purge() empties ready and delayed messages; purge(dead=True) the dead list too; in-flight
    messages stay and can still be acked."""
    q = unidist.MessageQueue("q", backend=backend, max_attempts=1)
    q.put("dies")
    assert q.receive(timeout=5).nack() is True
    q.put("held")
    held = q.receive(timeout=5)
    q.put("r1")
    q.put("r2")
    q.put("later", delay=60)
    assert q.stats() == {"ready": 2, "delayed": 1, "in_flight": 1, "dead": 1}
    assert q.purge() == 3
    assert q.stats() == _stats(in_flight=1, dead=1)
    with pytest.raises(unidist.Empty):
        q.get(block=False)
    assert q.purge(dead=True) == 1
    assert q.dead() == []
    assert q.stats() == _stats(in_flight=1)
    assert held.ack() is True
    assert q.purge(dead=True) == 0
    assert q.stats() == EMPTY
    q.put("after purge")
    assert q.get(timeout=5) == "after purge"


def test_put_with_same_id_stores_one_message(backend: Backend) -> None:
    """A put repeating an id the queue holds (ready, in flight or delayed) stores nothing."""
    q = unidist.MessageQueue("q", backend=backend)
    assert q.put("first", id="job-1") == "job-1"
    assert q.put("retry", id="job-1") == "job-1"
    assert q.stats() == _stats(ready=1)
    m = q.receive(timeout=5)
    assert (m.id, m.body) == ("job-1", "first")
    assert q.put("retry while in flight", id="job-1") == "job-1"
    assert q.stats() == _stats(in_flight=1)
    assert q.put("delayed", id="job-2", delay=60) == "job-2"
    assert q.put("retry while delayed", id="job-2") == "job-2"
    assert q.stats() == _stats(delayed=1, in_flight=1)
    assert m.ack() is True
    with pytest.raises(unidist.InvalidName):
        q.put("x", id="../escape")


# ---------------------------------------------------------------------- persistence


@pytest.mark.scope("host")
def test_queue_survives_reconnect_and_is_seen_by_a_new_process(backend_url: str) -> None:
    """Messages put, then the backend closed, are taken in order by a new process."""
    q = unidist.MessageQueue("persist", backend=backend_url)
    q.put("low", priority=-1)
    q.put({"n": 1})
    q.put({"n": 2})
    q.put("high", priority=9)
    q.put("soon", delay=0.2)
    t_put = time.monotonic()
    unidist.backends.reset()
    while time.monotonic() < t_put + 0.25:  # the delayed message must be due for the child
        time.sleep(0.05)
    (out,) = run_workers([["dump-queue", backend_url, "persist"]])
    assert json.loads(out) == ["high", {"n": 1}, {"n": 2}, "soon", "low"]
    assert unidist.MessageQueue("persist", backend=backend_url).stats() == EMPTY
    unidist.backends.reset()


def test_memory_snapshot_keeps_messages_and_due_times(tmp_path: Path) -> None:
    """memory://?snapshot=: after close and reconnect, messages are back and a delayed one
    becomes ready at its original due time."""
    url = f"memory://snap{uuid.uuid4().hex[:8]}?snapshot={tmp_path / 'snap.json'}&interval=60"
    try:
        q = unidist.MessageQueue("persist", backend=url)
        t0 = time.monotonic()
        q.put("due", delay=0.8)
        q.put({"ready": True})
        unidist.backends.reset()
        q = unidist.MessageQueue("persist", backend=url)
        assert q.stats() == _stats(ready=1, delayed=1)
        assert q.get(timeout=5) == {"ready": True}
        assert q.get(timeout=5) == "due"
        t = time.monotonic()
        assert t0 + 0.8 - EARLY_SLACK <= t < t0 + 0.8 + LATE_BOUND
    finally:
        unidist.backends.reset()


# ---------------------------------------------------------------------- many processes


def _producers_consumers(url: str, tmp_path: Path, mode: str, total: int) -> None:
    """4 producer and 4 consumer processes move ``total`` messages; check and print the
    total-queue table (every message once with get; at least once with receive+ack)."""
    producers = consumers = 4
    per = total // producers
    parties = str(producers + consumers)
    barrier = str(tmp_path / f"barrier-{mode}")
    name = f"pc-{mode}"
    t0 = time.monotonic()
    procs = [
        start_worker(["produce", url, name, f"p{i}", str(per), barrier, parties])
        for i in range(producers)
    ]
    if mode == "get":
        cons = [start_worker(["consume-get", url, name, barrier, parties]) for _ in range(4)]
    else:
        cons = [
            start_worker(["consume-receive", url, name, barrier, parties, "2", str(seed)])
            for seed in range(consumers)
        ]
    try:
        assert [int(o) for o in reap(procs, timeout=300)] == [per] * producers
        q = unidist.MessageQueue(name, backend=url)
        for _ in range(consumers):  # lowest priority: taken only once nothing else is ready
            q.put(STOP, priority=-1_000_000)
        outs = reap(cons, timeout=300)
    finally:
        for p in procs + cons:
            if p.poll() is None:
                p.kill()
            p.wait()
    elapsed = time.monotonic() - t0
    attempted = {f"p{i}-{j}" for i in range(producers) for j in range(per)}
    seen = Counter(mid for out in outs for mid in json.loads(out))
    ok = len(attempted & seen.keys())
    lost = len(attempted - seen.keys())
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    unexpected = len(seen.keys() - attempted)
    per_consumer = [len(json.loads(out)) for out in outs]
    print(
        f"\nscenario=F7 mode={mode} url={url.split('://')[0]} producers={producers} "
        f"consumers={consumers} seconds={elapsed:.2f} msgs/s={total / elapsed:.0f}\n"
        f"{'attempted':>10} {'ok':>10} {'lost':>6} {'duplicated':>10} {'unexpected':>10}\n"
        f"{len(attempted):>10} {ok:>10} {lost:>6} {duplicated:>10} {unexpected:>10}\n"
        f"per consumer: {per_consumer}"
    )
    stats = unidist.MessageQueue(name, backend=url).stats()
    unidist.backends.reset()
    assert lost == 0
    assert unexpected == 0
    if mode == "get":
        assert duplicated == 0
    assert stats == EMPTY


@pytest.mark.scope("host")
@pytest.mark.parametrize("mode", ["get", "receive"])
def test_four_producers_four_consumers(backend_url: str, tmp_path: Path, mode: str) -> None:
    """4x4 processes, 2,000 messages: get delivers each exactly once, receive+ack at least once,
    and the queue ends empty."""
    _producers_consumers(backend_url, tmp_path, mode, total=2000)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.scope("host")
@pytest.mark.parametrize("mode", ["get", "receive"])
def test_four_producers_four_consumers_soak(backend_url: str, tmp_path: Path, mode: str) -> None:
    """RELIABILITY F7: the same with 20,000 messages."""
    _producers_consumers(backend_url, tmp_path, mode, total=20_000)
