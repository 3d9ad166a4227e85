"""MessageQueue against a plain Python model: a Hypothesis state machine on every backend.

Rules put, put an id again, get, receive, ack, nack (at once or delayed), purge, requeue the
dead and list the dead, in any order; after every step ``stats()`` and ``len()`` must match
the model. Delays are long (an hour) so that the model never depends on timing: what becomes
ready when is tested in ``test_queue.py``; here a delay only has to keep a message out of
reach and counted as delayed. The visibility timeout is long for the same reason.

Ordering is checked as DESIGN.md states it: the message leaving is of the highest ready
priority and, among messages never delivered before, the first put; a message given back
(nack, requeue of the dead) may take any place within its priority.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import unidist
from unidist.backends import Backend

LONG = 3600.0
PRIORITIES = st.sampled_from([-2, 0, 0, 0, 1, 5])
PAYLOADS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5)


@dataclass
class _Model:
    """What the model knows of one message the queue holds."""

    body: dict[str, object]
    priority: int
    seq: int
    state: str  # ready | delayed | inflight | dead
    attempts: int = 0
    delivery: int = 0  # number of the current delivery (matches a _Held.delivery)
    given_back: bool = False  # nacked or requeued: its place in line is not specified


@dataclass
class _Held:
    """A Message as received, with the number of its delivery."""

    message: unidist.Message
    delivery: int


class QueueMachine(RuleBasedStateMachine):
    """The queue and the model side by side; ``backend`` is set by the test."""

    backend: Backend
    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, _Model] = {}
        self.seq = itertools.count()
        self.deliveries = itertools.count(1)

    @initialize(max_attempts=st.integers(1, 3))
    def open_queue(self, max_attempts: int) -> None:
        self.q = unidist.MessageQueue(
            f"model-{uuid.uuid4().hex[:12]}",
            backend=self.backend,
            visibility_timeout=LONG,
            max_attempts=max_attempts,
        )

    # ------------------------------------------------------------------ helpers
    def _count(self, state: str) -> int:
        return sum(1 for m in self.model.values() if m.state == state)

    def _check_next(self, msg_id: str) -> _Model:
        """Check that ``msg_id`` may leave now, by priority and put order; return its model."""
        ready = [m for m in self.model.values() if m.state == "ready"]
        assert msg_id in self.model, f"unknown message {msg_id} left the queue"
        m = self.model[msg_id]
        assert m.state == "ready", f"message {msg_id} left the queue while {m.state}"
        top = max(r.priority for r in ready)
        assert m.priority == top, f"priority {m.priority} left before priority {top}"
        if not m.given_back:
            first = min(r.seq for r in ready if r.priority == top and not r.given_back)
            assert m.seq == first, "a message overtook an earlier one of the same priority"
        return m

    # ------------------------------------------------------------------ rules
    @rule(payload=PAYLOADS, priority=PRIORITIES, delayed=st.booleans())
    def put(self, payload: object, priority: int, delayed: bool) -> None:
        seq = next(self.seq)
        body = {"seq": seq, "payload": payload}
        msg_id = self.q.put(body, delay=LONG if delayed else 0, priority=priority)
        assert msg_id not in self.model
        self.model[msg_id] = _Model(body, priority, seq, "delayed" if delayed else "ready")

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), priority=PRIORITIES)
    def put_same_id_again(self, data: st.DataObject, priority: int) -> None:
        msg_id = data.draw(st.sampled_from(sorted(self.model)), label="id")
        assert self.q.put({"duplicate": True}, priority=priority, id=msg_id) == msg_id

    @rule()
    def get(self) -> None:
        try:
            body = self.q.get(block=False)
        except unidist.Empty:
            assert self._count("ready") == 0, "get() found nothing while messages were ready"
            return
        assert isinstance(body, dict), body
        (msg_id,) = [i for i, m in self.model.items() if m.body["seq"] == body.get("seq")]
        m = self._check_next(msg_id)
        assert body == m.body
        del self.model[msg_id]

    @rule(target=held)
    def receive(self) -> object:
        try:
            message = self.q.receive(block=False)
        except unidist.Empty:
            assert self._count("ready") == 0, "receive() found nothing while messages were ready"
            return multiple()
        m = self._check_next(message.id)
        m.attempts += 1
        assert (message.body, message.attempts, message.priority) == (
            m.body,
            m.attempts,
            m.priority,
        )
        m.state = "inflight"
        m.delivery = next(self.deliveries)
        return _Held(message, m.delivery)

    def _current(self, h: _Held) -> _Model | None:
        m = self.model.get(h.message.id)
        if m is None or m.state != "inflight" or m.delivery != h.delivery:
            return None
        return m

    @rule(h=held)
    def ack(self, h: _Held) -> None:
        m = self._current(h)
        assert h.message.ack() is (m is not None)
        if m is not None:
            del self.model[h.message.id]

    @rule(h=held, delayed=st.booleans())
    def nack(self, h: _Held, delayed: bool) -> None:
        m = self._current(h)
        assert h.message.nack(delay=LONG if delayed else 0) is (m is not None)
        if m is None:
            return
        m.delivery = 0
        m.given_back = True
        if m.attempts >= self.q.max_attempts:
            m.state = "dead"
        else:
            m.state = "delayed" if delayed else "ready"

    @rule(dead=st.booleans())
    def purge(self, dead: bool) -> None:
        states = {"ready", "delayed", "dead"} if dead else {"ready", "delayed"}
        gone = [i for i, m in self.model.items() if m.state in states]
        assert self.q.purge(dead=dead) == len(gone)
        for i in gone:
            del self.model[i]

    @rule()
    def requeue_dead(self) -> None:
        dead = [m for m in self.model.values() if m.state == "dead"]
        assert self.q.requeue_dead() == len(dead)
        for m in dead:
            m.state = "ready"
            m.attempts = 0
            m.given_back = True

    @rule()
    def list_dead(self) -> None:
        got = {d.id: (d.body, d.attempts) for d in self.q.dead()}
        want = {i: (m.body, m.attempts) for i, m in self.model.items() if m.state == "dead"}
        assert got == want

    # ------------------------------------------------------------------ after every step
    @invariant()
    def counts_match(self) -> None:
        want = {
            "ready": self._count("ready"),
            "delayed": self._count("delayed"),
            "in_flight": self._count("inflight"),
            "dead": self._count("dead"),
        }
        assert self.q.stats() == want
        assert len(self.q) == want["ready"]


def run_model(
    machine_cls: type[QueueMachine], backend: Backend, max_examples: int, steps: int
) -> None:
    """Run ``machine_cls`` against ``backend`` for ``max_examples`` examples."""
    machine = type("QueueMachineOn", (machine_cls,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_queue_matches_model(backend: Backend) -> None:
    """Any sequence of queue operations leaves the queue as the model says (bounded run;
    RELIABILITY Q4 in tests/reliability/test_q4_model.py runs 1,000 examples at soak)."""
    run_model(QueueMachine, backend, max_examples=40, steps=30)
