"""MessageQueue: a message that comes back keeps its place (priority, then put order).

A nacked message, one whose visibility timeout ran out, a delayed message that came due and a
dead message that was requeued all take the position of their original put among the ready
messages of their priority, on every backend.
"""

from __future__ import annotations

import time

import unidist
from unidist.backends import Backend


def _drain(q: unidist.MessageQueue) -> list[object]:
    out: list[object] = []
    while True:
        try:
            out.append(q.get(block=False))
        except unidist.Empty:
            return out


def test_a_nacked_message_goes_back_to_its_place(backend: Backend) -> None:
    q = unidist.MessageQueue("order-nack", backend=backend)
    q.put("a")
    q.put("b")
    m = q.receive(timeout=5)
    assert m.body == "a"
    q.put("c")
    assert m.nack()
    assert _drain(q) == ["a", "b", "c"]


def test_a_timed_out_message_goes_back_to_its_place(backend: Backend) -> None:
    q = unidist.MessageQueue("order-vt", backend=backend, visibility_timeout=0.2)
    q.put("a")
    q.put("b")
    assert q.receive(timeout=5).body == "a"
    q.put("c")
    time.sleep(0.4)
    assert _drain(q) == ["a", "b", "c"]


def test_a_delayed_message_is_ordered_by_its_put(backend: Backend) -> None:
    q = unidist.MessageQueue("order-delay", backend=backend)
    q.put("early", delay=0.2)
    q.put("later")
    time.sleep(0.4)
    assert _drain(q) == ["early", "later"]


def test_a_requeued_dead_message_goes_back_to_its_place(backend: Backend) -> None:
    q = unidist.MessageQueue("order-dead", backend=backend, max_attempts=1)
    q.put("a")
    q.put("b")
    m = q.receive(timeout=5)
    assert m.nack()  # dead after its one attempt
    q.put("c")
    assert q.requeue_dead() == 1
    assert _drain(q) == ["a", "b", "c"]
    # Priority still comes first.
    q.put("low", priority=-1)
    q.put("high", priority=1)
    assert _drain(q) == ["high", "low"]
