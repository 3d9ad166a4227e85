"""Q1: an unacked message comes back after ``visibility_timeout`` with ``attempts + 1``.

One consumer receives 6 messages and never acks them (``count(1, 40)`` rounds); each must be
delivered again ``visibility_timeout`` (± 100 ms) after each delivery, with attempts 1, 2, …,
``max_attempts``, and then sit in the dead list (never delivered again). A late ``ack()`` or
``nack()`` of a superseded delivery returns False and changes nothing: the current delivery
stays in flight, other messages are untouched, and the current delivery's own ack works.

Figures: redelivery delay error p50/p99/max (ms, absolute), attempts histogram.
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_q1_redelivery.py``.
"""

from __future__ import annotations

import collections
import random
import time

import unidist
from tests.reliability._report import Result, count, seed
from unidist.backends import Backend

VT = 0.3
MAX_ATTEMPTS = 3
TOLERANCE = 0.1  # RELIABILITY 3.4 Q1: visibility_timeout ± 100 ms


def _round(
    q: unidist.MessageQueue, n: int, rng: random.Random
) -> tuple[
    list[str], dict[str, list[int]], list[float], int, object, dict[str, int], dict[str, int]
]:
    """Put ``n`` messages, receive every delivery without acking, until all are dead."""
    ids = [q.put({"n": i, "pad": "x" * rng.randrange(0, 200)}) for i in range(n)]
    last: dict[str, float] = {}  # id -> monotonic time its latest delivery was handed out
    attempts: dict[str, list[int]] = collections.defaultdict(list)
    errors_ms: list[float] = []
    unexpected = 0
    deliveries_left = n * MAX_ATTEMPTS
    deadline = time.monotonic() + MAX_ATTEMPTS * VT + 10
    while deliveries_left and time.monotonic() < deadline:
        m = q.receive(timeout=VT + 1)
        now = time.monotonic()
        if m.id not in ids:
            unexpected += 1
            continue
        deliveries_left -= 1
        if m.id in last:
            # The consumer never sleeps, so how far the gap between two deliveries of one
            # message is off the timeout is the queue's doing (plus a call's latency).
            errors_ms.append((now - last[m.id] - VT) * 1000)
        last[m.id] = now
        attempts[m.id].append(m.attempts)
    # after the last delivery's timeout every message is dead and nothing is delivered again
    extra: object = None
    try:
        extra = q.receive(timeout=VT + 0.3)
    except unidist.Empty:
        pass
    dead = {m.id: m.attempts for m in q.dead()}
    return ids, attempts, errors_ms, unexpected, extra, dead, q.stats()


def test_q1_unacked_redelivered_after_visibility_timeout_then_dead(
    backend: Backend, backend_kind: str
) -> None:
    """Every unacked message is redelivered after VT ± 100 ms with attempts + 1, then dead."""
    rng = random.Random(s := seed())
    n, rounds = 6, count(1, 40)
    result = Result(
        "Q1",
        backend_kind,
        s,
        params={"visibility_timeout": VT, "max_attempts": MAX_ATTEMPTS, "messages": n * rounds},
    )
    histogram: collections.Counter[int] = collections.Counter()
    all_errors: list[float] = []
    failures: list[str] = []
    for r in range(rounds):
        q = unidist.MessageQueue(
            f"q1-{r}", backend=backend, visibility_timeout=VT, max_attempts=MAX_ATTEMPTS
        )
        ids, attempts, errors_ms, unexpected, extra, dead, stats = _round(q, n, rng)
        histogram.update(a for seq in attempts.values() for a in seq)
        all_errors += errors_ms
        result.attempted += n
        result.ok += sum(
            1 for i in ids if attempts[i] == list(range(1, MAX_ATTEMPTS + 1)) and i in dead
        )
        result.lost += sum(1 for i in ids if i not in dead)
        result.unexpected += unexpected + (extra is not None)
        if extra is not None:
            failures.append(f"delivered again after max_attempts: {extra!r}")
        if {i: attempts[i] for i in ids} != {i: [1, 2, 3] for i in ids}:
            failures.append(f"attempts {dict(attempts)}")
        if dead != dict.fromkeys(ids, MAX_ATTEMPTS):
            failures.append(f"dead list {dead}")
        if stats != {"ready": 0, "delayed": 0, "in_flight": 0, "dead": n}:
            failures.append(f"stats {stats}")
        if len(errors_ms) != n * (MAX_ATTEMPTS - 1):
            failures.append(f"{len(errors_ms)} redeliveries")
    result.violations = sum(1 for e in all_errors if abs(e) > TOLERANCE * 1000)
    result.timings_ms["redelivery_error"] = [abs(e) for e in all_errors]
    result.extra["attempts_histogram"] = dict(sorted(histogram.items()))
    result.emit()
    assert failures == []
    worst = max(all_errors, key=abs)
    assert abs(worst) <= TOLERANCE * 1000, f"redelivery {worst:+.0f} ms off the timeout"


def test_q1_late_ack_of_a_redelivered_message_changes_nothing(backend: Backend) -> None:
    """ack()/nack() of a delivery superseded by a redelivery returns False and deletes
    nothing; the current delivery, and every other message, are untouched."""
    q = unidist.MessageQueue("q1late", backend=backend, visibility_timeout=VT, max_attempts=5)
    target = q.put("target", priority=1)
    others = [q.put(f"other-{i}") for i in range(3)]
    first = q.receive(timeout=5)
    assert (first.id, first.attempts) == (target, 1)
    time.sleep(VT + 0.05)
    second = q.receive(timeout=5)  # timed out: delivered again, ahead of the others
    assert (second.id, second.attempts) == (target, 2)
    before = q.stats()
    assert before == {"ready": 3, "delayed": 0, "in_flight": 1, "dead": 0}
    assert first.ack() is False  # late: the message was redelivered
    assert first.nack() is False
    assert q.stats() == before
    assert second.ack() is True  # the current delivery still owns the message
    assert second.ack() is False  # a second ack is reported, not repeated
    assert second.nack() is False
    remaining = []
    while True:
        try:
            m = q.receive(block=False)
        except unidist.Empty:
            break
        remaining.append(m.id)
        assert m.ack() is True
    assert remaining == others  # nothing else was deleted, FIFO kept
    assert q.stats() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
