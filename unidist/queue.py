"""``MessageQueue``: a named, persistent, at-least-once work queue.

A message is put with a body (any JSON value), an optional ``delay`` and a ``priority``.
Ready messages leave by priority (higher first), then in put order. ``get()`` removes a
message at once (at-most-once processing: if the consumer dies, the message is gone).
``receive()`` hands out a :class:`Message` that stays in flight until ``ack()``; if it is not
acked within ``visibility_timeout`` seconds it is delivered again with ``attempts + 1``, and
after ``max_attempts`` deliveries it goes to the dead list (``dead()`` / ``requeue_dead()``).
Consumers of ``receive()`` must therefore be idempotent.

Each put carries a client-generated id (or yours, via ``id=``): putting the same id twice
stores one message, so a retried put never duplicates.
"""

from __future__ import annotations

import math
import uuid
from types import TracebackType
from typing import Final

from unidist._clock import Deadline, check_timeout
from unidist._facade import Primitive
from unidist._names import check_name
from unidist.backends.base import Backend, Delivery
from unidist.cluster._current import current as current_member
from unidist.codec import JSON, decode, encode
from unidist.errors import Empty

__all__ = ["Message", "MessageQueue"]

MAX_PRIORITY: Final = 1_000_000
_WAIT_SLICE: Final = 1.0


def _check_seconds(value: float, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(
            f"{what} must be a finite number {'>' if positive else '>='} 0, got {value!r}"
        )
    return float(value)


class Message:
    """One delivery of a queue message, from :meth:`MessageQueue.receive`.

    Attributes:
        id: the message id (stable across redeliveries).
        body: the JSON body.
        attempts: 1 on the first delivery, +1 on each redelivery.
        priority: the priority it was put with.

    As a context manager it acks on success and nacks (immediate redelivery) on exception.
    """

    __slots__ = ("_done", "_queue", "attempts", "body", "enqueued_at", "id", "priority", "receipt")

    def __init__(self, queue: MessageQueue, delivery: Delivery) -> None:
        self._queue = queue
        self.id = delivery.id
        self.body: JSON = decode(delivery.body, where=f"queue {queue.name!r} message {delivery.id}")
        self.attempts = delivery.attempts
        self.priority = delivery.priority
        self.enqueued_at = delivery.enqueued_at
        self.receipt = delivery.receipt
        self._done = False

    def ack(self) -> bool:
        """Delete the message: processing is done.

        Returns:
            True; False (changing nothing) if this delivery is no longer current: already
            acked or nacked, redelivered after its visibility timeout, dead or purged.
        """
        self._done = True
        q = self._queue
        return q.backend.queue_ack(q.name, self.id, self.receipt)

    def nack(self, delay: float = 0) -> bool:
        """Give the message back, to be delivered again after ``delay`` seconds (or moved to
        the dead list if it has had ``max_attempts`` deliveries).

        Returns:
            True; False (changing nothing) if this delivery is no longer current.
        """
        delay = _check_seconds(delay, "delay")
        self._done = True
        q = self._queue
        return q.backend.queue_nack(q.name, self.id, self.receipt, delay, q.max_attempts)

    def __enter__(self) -> Message:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done:
            return
        if exc_type is None:
            self.ack()
        else:
            self.nack()

    def __repr__(self) -> str:
        return f"<Message {self.id} attempts={self.attempts} body={self.body!r}>"


class MessageQueue(Primitive):
    """A named queue of JSON messages on a backend (see the module docs for semantics).

    Args:
        name: queue name.
        backend: a Backend, a backend URL, or None for the default.
        visibility_timeout: seconds a received message stays in flight before redelivery.
        max_attempts: deliveries before a message goes to the dead list (>= 1).

    Example::

        q = unidist.MessageQueue("work", backend="file:///var/lib/unidist")
        q.put({"file": "a.csv"})
        with q.receive(timeout=10) as m:
            process(m.body)

    Raises (every method):
        BackendUnavailable: the backend cannot be reached.
    """

    __slots__ = ("max_attempts", "visibility_timeout")
    _kind = "queue name"

    def __init__(
        self,
        name: str,
        backend: Backend | str | None = None,
        visibility_timeout: float = 30,
        max_attempts: int = 5,
    ) -> None:
        super().__init__(name, backend)
        self.visibility_timeout = _check_seconds(
            visibility_timeout, "visibility_timeout", positive=True
        )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise TypeError(f"max_attempts must be an int, not {type(max_attempts).__name__}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts = max_attempts

    def put(self, body: JSON, delay: float = 0, priority: int = 0, *, id: str | None = None) -> str:
        """Add a message; return its id.

        Args:
            body: any JSON value.
            delay: seconds before the message becomes ready.
            priority: -1,000,000 to 1,000,000; higher leaves first.
            id: your own message id (letters, digits, ``._-:@``); a put with an id the queue
                already holds stores nothing and returns that id (safe retries).

        Raises:
            SerializationError: ``body`` is not JSON; nothing is stored.
        """
        text = encode(body)
        delay = _check_seconds(delay, "delay")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {type(priority).__name__}")
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
        if id is None:
            msg_id = uuid.uuid4().hex
            self._backend.queue_put(self._name, msg_id, text, delay, priority, new_id=True)
        else:
            msg_id = check_name(id, "message id")
            self._backend.queue_put(self._name, msg_id, text, delay, priority)
        return msg_id

    def _wait_for(self, ack_at_once: bool, block: bool, timeout: float | None) -> Delivery:
        timeout = check_timeout(timeout)
        be = self._backend
        deadline = Deadline(timeout if block else 0)
        member = None if ack_at_once else current_member()
        while True:
            if ack_at_once:
                delivery = be.queue_get(self._name, self.max_attempts)
            else:
                # A current cluster member tags the delivery, so that it is given back at
                # once if the member dies (see unidist.cluster.membership).
                consumer = (
                    None
                    if member is None
                    else member.consumer_for(be, self._name, self.max_attempts)
                )
                delivery = be.queue_receive(
                    self._name, self.visibility_timeout, self.max_attempts, consumer
                )
            if delivery is not None:
                return delivery
            if deadline.expired:
                raise Empty(f"queue {self._name!r} has no ready message")
            be.queue_wait(self._name, deadline.remaining(_WAIT_SLICE))

    def get(self, block: bool = True, timeout: float | None = None) -> JSON:
        """Remove the next ready message and return its body (acknowledged at once).

        Raises:
            Empty: no message was ready within ``timeout`` (at once with ``block=False``).
        """
        delivery = self._wait_for(True, block, timeout)
        return decode(delivery.body, where=f"queue {self._name!r} message {delivery.id}")

    def get_nowait(self) -> JSON:
        """``get(block=False)``."""
        return self.get(block=False)

    def receive(self, block: bool = True, timeout: float | None = None) -> Message:
        """Take the next ready message for processing; it stays in flight until acked.

        While a :class:`unidist.cluster.Membership` on this queue's backend is current, the
        delivery is tagged with the member, and is made ready again as soon as another member
        sees this one leave or die (not only after ``visibility_timeout``).

        Raises:
            Empty: no message was ready within ``timeout`` (at once with ``block=False``).
        """
        return Message(self, self._wait_for(False, block, timeout))

    def __len__(self) -> int:
        """Number of ready messages (delayed, in-flight and dead ones not counted)."""
        return self._backend.queue_stats(self._name)["ready"]

    def stats(self) -> dict[str, int]:
        """Counts of ``ready``, ``delayed``, ``in_flight`` and ``dead`` messages."""
        return self._backend.queue_stats(self._name)

    def dead(self) -> list[Message]:
        """The messages that exceeded ``max_attempts``, oldest first (ack/nack do nothing)."""
        return [Message(self, d) for d in self._backend.queue_dead(self._name)]

    def requeue_dead(self) -> int:
        """Make every dead message ready again with attempts reset; return how many."""
        return self._backend.queue_requeue_dead(self._name)

    def purge(self, dead: bool = False) -> int:
        """Remove ready and delayed messages (and dead ones with ``dead=True``); in-flight
        messages are untouched. Returns how many were removed."""
        return self._backend.queue_purge(self._name, dead)
