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
import os
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Final

from unidist._clock import Deadline, check_timeout, monotonic
from unidist._facade import Primitive
from unidist._names import check_name
from unidist.backends.base import Backend, Delivery
from unidist.cluster._current import current as current_member
from unidist.codec import JSON, decode, encode
from unidist.errors import CorruptData, Empty, SerializationError, ValueTooLarge

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


def _check_priority(priority: int) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")


def _new_id() -> str:
    """One random UUID4 as 32 hex digits, like ``uuid.uuid4().hex`` but without building a
    ``UUID`` object (the put hot path)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def _new_ids(n: int) -> list[str]:
    """``n`` random UUID4s as 32 hex digits (what ``uuid.uuid4().hex`` gives), from one
    ``os.urandom`` call: about 8x cheaper than ``uuid4()`` each."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(6, 16 * n, 16):
        raw[i] = raw[i] & 0x0F | 0x40  # version 4
        raw[i + 2] = raw[i + 2] & 0x3F | 0x80  # RFC 4122 variant
    text = raw.hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


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
        try:
            self.body: JSON = decode(delivery.body)
        except CorruptData:  # raise again, naming the message
            decode(delivery.body, where=f"queue {queue.name!r} message {delivery.id}")
            raise
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
        _check_priority(priority)
        if id is None:
            msg_id = _new_id()
            self._backend.queue_put(self._name, msg_id, text, delay, priority, new_id=True)
        else:
            msg_id = check_name(id, "message id", cache=False)
            self._backend.queue_put(self._name, msg_id, text, delay, priority)
        return msg_id

    def put_many(
        self,
        bodies: Iterable[JSON],
        delay: float = 0,
        priority: int = 0,
        *,
        ids: Iterable[str] | None = None,
    ) -> list[str]:
        """Add several messages in one backend step; return their ids, in order.

        The messages leave in the order given (among equal priorities), exactly as if each
        had been put with :meth:`put`, and all get the same ``delay`` and ``priority``.
        Every body, ``delay``, ``priority`` and id is checked before anything is stored.

        Args:
            bodies: an iterable (list, generator...) of JSON values; empty puts nothing.
            delay: seconds before the messages become ready.
            priority: as for :meth:`put`.
            ids: your own message ids, one per body (as ``id=`` of :meth:`put`: an id the
                queue already holds, or one repeated in ``ids``, stores nothing, so the whole
                call can be retried safely after :class:`unidist.OutcomeUnknown`).

        Atomicity: on Redis the batch is one script call and on ``file://`` one journal
        record: every other client sees all of the messages or none of them, and an error
        stores none. On ``memory://`` the messages are put one after another (consumers may
        take the first before the last is in).

        Raises:
            SerializationError: a body is not JSON (the message names its index); nothing
                is stored.
            TypeError, ValueError: bad ``delay``, ``priority`` or ``ids``, or ``bodies`` is
                a str, bytes or mapping (use :meth:`put` for one message); nothing is stored.
            OutcomeUnknown: (Redis) the reply was lost; with ``ids`` a retry is safe.
        """
        if isinstance(bodies, (str, bytes, bytearray, Mapping)):
            raise TypeError(
                f"bodies must be an iterable of message bodies, not a {type(bodies).__name__}"
                " (use put() for a single message)"
            )
        texts: list[str] = []
        for i, body in enumerate(bodies):
            try:
                texts.append(encode(body))
            except (SerializationError, ValueTooLarge) as exc:
                raise type(exc)(f"bodies[{i}]: {exc}") from exc
        delay = _check_seconds(delay, "delay")
        _check_priority(priority)
        if ids is None:
            msg_ids = _new_ids(len(texts))
        else:
            if isinstance(ids, (str, bytes, bytearray)):
                raise TypeError("ids must be an iterable of message ids, not a single str")
            msg_ids = [check_name(i, "message id", cache=False) for i in ids]
            if len(msg_ids) != len(texts):
                raise ValueError(f"got {len(msg_ids)} ids for {len(texts)} bodies")
        if texts:
            items = [(m, t, delay, priority) for m, t in zip(msg_ids, texts, strict=True)]
            self._backend.queue_put_many(self._name, items, new_ids=ids is None)
        return msg_ids

    def _wait_for(self, ack_at_once: bool, block: bool, timeout: float | None) -> Delivery:
        timeout = check_timeout(timeout)
        be = self._backend
        # The deadline counts from here, but is only built once a take finds nothing.
        started = monotonic()
        deadline: Deadline | None = None
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
            if deadline is None:
                left = None if timeout is None else timeout - (monotonic() - started)
                deadline = Deadline(left if block else 0)
            if deadline.expired:
                raise Empty(f"queue {self._name!r} has no ready message")
            be.queue_wait(self._name, deadline.remaining(_WAIT_SLICE))

    def get(self, block: bool = True, timeout: float | None = None) -> JSON:
        """Remove the next ready message and return its body (acknowledged at once).

        Raises:
            Empty: no message was ready within ``timeout`` (at once with ``block=False``).
        """
        delivery = self._wait_for(True, block, timeout)
        try:
            return decode(delivery.body)
        except CorruptData:  # raise again, naming the message
            decode(delivery.body, where=f"queue {self._name!r} message {delivery.id}")
            raise

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

    def _wait_many(self, ack_at_once: bool, max: int, timeout: float | None) -> list[Delivery]:
        if isinstance(max, bool) or not isinstance(max, int):
            raise TypeError(f"max must be an int, not {type(max).__name__}")
        if max < 1:
            raise ValueError(f"max must be >= 1, got {max}")
        timeout = check_timeout(timeout)
        be = self._backend
        deadline = Deadline(timeout)
        member = None if ack_at_once else current_member()
        while True:
            if ack_at_once:
                batch = be.queue_get_many(self._name, self.max_attempts, max)
            else:
                consumer = (
                    None
                    if member is None
                    else member.consumer_for(be, self._name, self.max_attempts)
                )
                batch = be.queue_receive_many(
                    self._name, self.visibility_timeout, self.max_attempts, max, consumer
                )
            if batch or deadline.expired:
                return batch
            be.queue_wait(self._name, deadline.remaining(_WAIT_SLICE))

    def get_many(self, max: int, timeout: float | None = None) -> list[JSON]:
        """Remove up to ``max`` ready messages and return their bodies (acknowledged at once).

        Waits up to ``timeout`` seconds (None: for ever; 0: not at all) for the first ready
        message, then takes it and up to ``max - 1`` more that are ready at that moment, in
        the order :meth:`get` would return them. Each message is removed atomically and
        reaches exactly one caller of :meth:`get`/:meth:`get_many`.

        Returns:
            Between 1 and ``max`` bodies; an empty list when ``timeout`` passed with nothing
            ready (unlike :meth:`get`, never :class:`unidist.Empty`: an empty batch is an
            ordinary answer).

        Atomicity: on Redis the batch is taken in one script call and on ``file://`` in one
        journal record; on ``memory://`` the messages are taken one after another.

        Raises:
            TypeError, ValueError: ``max`` is not an int >= 1, or a bad ``timeout``.
            OutcomeUnknown: (Redis) the reply was lost; the messages may have been taken.
        """
        batch = self._wait_many(True, max, timeout)
        try:
            return [decode(d.body) for d in batch]
        except CorruptData:
            for d in batch:  # raise again, naming the message
                decode(d.body, where=f"queue {self._name!r} message {d.id}")
            raise

    def receive_many(self, max: int, timeout: float | None = None) -> list[Message]:
        """Take up to ``max`` ready messages for processing; each stays in flight until acked.

        Waits as :meth:`get_many` does, and returns an empty list when ``timeout`` passed
        with nothing ready. Each :class:`Message` is acked, nacked and redelivered on its own,
        exactly as one from :meth:`receive`.
        """
        return [Message(self, d) for d in self._wait_many(False, max, timeout)]

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
