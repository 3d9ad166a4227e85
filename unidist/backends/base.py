"""The Backend interface: one atomic, non-blocking step per method, at the level of primitives.

Facades (:mod:`unidist.lock`, :mod:`unidist.counter`, :mod:`unidist.state`,
:mod:`unidist.queue`) own validation, JSON encoding, owner identity, blocking waits and context
managers. A backend owns storage and atomicity: every ``<family>_<verb>`` method below takes
effect completely or not at all, as seen by every other user of the same backend (threads,
processes or hosts, depending on :attr:`Backend.scope`).

Conventions every backend keeps:

* Names reaching a backend have been checked by :func:`unidist._names.check_name`; backends
  check again (it is cheap) so that a direct caller cannot escape the directory or key prefix.
* Values cross this interface as canonical JSON text (``str``), produced by
  :func:`unidist.codec.encode`. Backends store and compare that text; they never decode it,
  except the file backend's journal replay, which only validates it.
* Times handed in (``ttl``, ``delay``, ``visibility_timeout``) are float seconds relative to
  now; times handed out (``acquired_at``, ``expires_at``) are float Unix seconds as judged by
  the backend's own clock (the Redis server's ``TIME`` on Redis).
* Errors are translated at the backend's edge: connection trouble is
  :class:`~unidist.errors.BackendUnavailable`, damaged storage
  :class:`~unidist.errors.CorruptData`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol

from unidist.backends._url import OptionParser, ParsedURL, parse_url
from unidist.codec import JSON

STATE_ABSENT: Final = ""
"""``expected`` of :meth:`Backend.state_cas` that matches only an absent key (never a stored
``null``); the empty string is never valid JSON text, so it cannot clash with a value."""

if TYPE_CHECKING:
    from unidist.counter import SharedCounter
    from unidist.lock import SharedLock, SharedSemaphore
    from unidist.queue import MessageQueue
    from unidist.state import SharedState

__all__ = ["STATE_ABSENT", "Backend", "Delivery", "LockFastPath", "LockGrant", "Scope"]

Scope = Literal["process", "host", "network"]
"""Who can share a backend's objects: threads of one process, processes of one host, many hosts."""


@dataclass(frozen=True)
class LockGrant:
    """One successful acquisition of a slot of a lock or semaphore.

    Attributes:
        name: the lock's name.
        holder: the acquisition id the caller passed in (unique per acquisition).
        token: fencing token, strictly increasing per lock name across every acquisition.
        acquired_at: Unix seconds, backend clock.
        expires_at: Unix seconds when the lease ends, or None without a ttl.
    """

    name: str
    holder: str
    token: int
    acquired_at: float
    expires_at: float | None


class LockFastPath(Protocol):
    """An in-process backend's shortcut for one lock name (see
    :meth:`Backend.lock_fast_path`): the backend's own state of the name, which a lock object
    updates directly, so that an uncontended acquire+release costs a few C calls.

    Acquire: ``gate.pop(0, None)`` (atomic; ``gate`` holds the key 0 while the lock is free
    and nobody waits); when that returns a value, draw ``token = next(tokens)`` and record
    ``held[token] = (acquired_at, owner_info)`` (Unix seconds, owner record). Release:
    ``held.pop(token, None)``; only when that returns the record, give the gate back with
    ``gate[0] = True``. When it does not, the acquisition was moved to the general path (a
    waiter came, a renewal, a break): call ``lock_release(name, holder(token))``, which tells
    the cases apart.
    """

    gate: MutableMapping[int, bool]
    tokens: Iterator[int]
    held: MutableMapping[int, tuple[float, Mapping[str, JSON]]]

    def holder(self, token: int) -> str:
        """The ``holder`` id of fast acquisition ``token`` in owner records and for the
        general methods (``lock_release``, ``lock_renew``, ``lock_break``)."""


@dataclass(frozen=True)
class Delivery:
    """One delivery of a queue message.

    Attributes:
        id: the message id given to ``queue_put``.
        body: the body as canonical JSON text.
        attempts: 1 on the first delivery, +1 on each redelivery.
        receipt: identifies this delivery; ``queue_ack``/``queue_nack`` with an older receipt
            of the same message (a late ack after redelivery) return False.
        priority: the priority given at put time.
        enqueued_at: Unix seconds of the put.
    """

    id: str
    body: str
    attempts: int
    receipt: str
    priority: int
    enqueued_at: float


class Backend(abc.ABC):
    """Where shared objects live. Obtain one with :func:`unidist.connect`.

    Subclasses implement every abstract method; a backend with a gap fails when it is
    constructed, not half-way through a user's job. Instances are thread-safe and are shared
    by every primitive that names the same URL in one process.
    """

    #: URL scheme(s) this backend serves, e.g. ``("memory",)``.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: the typed query options this backend accepts; anything else is InvalidURL.
    options: ClassVar[Mapping[str, OptionParser]] = {}
    #: who can share this backend's objects.
    scope: ClassVar[Scope] = "process"

    def __init__(self, parsed: ParsedURL) -> None:
        self._parsed = parsed

    @classmethod
    def from_url(cls, url: str) -> Backend:
        """Parse ``url`` against :attr:`options` and construct the backend.

        Raises:
            InvalidURL: unknown or ill-typed option.
            BackendUnavailable: the backend cannot be used.
        """
        return cls(parse_url(url, cls.options))

    # ------------------------------------------------------------------ identity
    @property
    def url(self) -> str:
        """The backend URL with any password replaced by ``***``."""
        return self._parsed.redacted

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections, file handles and background threads. Idempotent."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Check that the backend is usable now.

        Raises:
            BackendUnavailable: it is not (server down, directory not writable, ...).
        """

    # ------------------------------------------------------------------ facades
    def lock(self, name: str, **kwargs: Any) -> SharedLock:
        """Return :class:`unidist.SharedLock` ``name`` on this backend."""
        from unidist.lock import SharedLock

        return SharedLock(name, backend=self, **kwargs)

    def semaphore(self, name: str, limit: int, **kwargs: Any) -> SharedSemaphore:
        """Return :class:`unidist.SharedSemaphore` ``name`` with ``limit`` slots."""
        from unidist.lock import SharedSemaphore

        return SharedSemaphore(name, limit=limit, backend=self, **kwargs)

    def counter(self, name: str) -> SharedCounter:
        """Return :class:`unidist.SharedCounter` ``name`` on this backend."""
        from unidist.counter import SharedCounter

        return SharedCounter(name, backend=self)

    def state(self, bucket: str) -> SharedState:
        """Return the :class:`unidist.SharedState` bucket ``bucket`` on this backend."""
        from unidist.state import SharedState

        return SharedState(bucket, backend=self)

    def queue(self, name: str, **kwargs: Any) -> MessageQueue:
        """Return :class:`unidist.MessageQueue` ``name`` on this backend."""
        from unidist.queue import MessageQueue

        return MessageQueue(name, backend=self, **kwargs)

    # ------------------------------------------------------------------ locks & semaphores
    # A lock is a semaphore with limit 1. Slots are identified by the caller's ``holder`` id.
    # Fairness: waiters register (``waiting=True``) and are granted in registration order; a
    # waiter registration lapses if not refreshed (by another lock_acquire call) within
    # ``WAITER_TTL`` seconds, so a waiter that dies never blocks others for long.

    #: seconds a waiter registration lives without being refreshed.
    WAITER_TTL: ClassVar[float] = 2.0

    @abc.abstractmethod
    def lock_acquire(
        self,
        name: str,
        limit: int,
        holder: str,
        info: Mapping[str, JSON],
        ttl: float | None,
        *,
        waiting: bool = False,
    ) -> LockGrant | None:
        """Try once, without blocking, to take one of ``limit`` slots of lock ``name``.

        A slot is free when it has no holder, or its holder's lease (``ttl``) has expired, or
        (file backend) its holder process has died. Granted only if a slot is free *and* no
        live waiter registered before this one is still waiting (FIFO among waiters; a caller
        with ``waiting=False`` counts as registering now and is granted only if free slots
        exceed the live waiters). With ``waiting=True`` and no grant, ``holder`` stays
        registered (or its registration is refreshed) as a waiter; a grant removes it.

        Args:
            name: lock name.
            limit: number of slots (1 for a lock).
            holder: unique id of this acquisition attempt.
            info: owner record to publish (host, pid, thread, member...).
            ttl: lease seconds, or None for no expiry (held until release or holder death).
            waiting: register/refresh as a FIFO waiter when not granted.

        Returns:
            The grant, with a fresh fencing token (persisted before it is returned where the
            backend persists anything), or None.
        """

    @abc.abstractmethod
    def lock_cancel_wait(self, name: str, holder: str) -> None:
        """Remove ``holder``'s waiter registration (a timed-out or cancelled wait)."""

    @abc.abstractmethod
    def lock_release(self, name: str, holder: str) -> bool:
        """Free the slot held by ``holder``; False if ``holder`` does not hold one (never did,
        released already, or its lease expired, whether or not someone else took it).
        Another holder is never touched. Wakes waiters."""

    @abc.abstractmethod
    def lock_renew(self, name: str, holder: str, ttl: float | None) -> float | bool | None:
        """Extend ``holder``'s lease to now + ``ttl`` (None: no expiry).

        Returns:
            The new ``expires_at`` (None when ``ttl`` is None), or False if ``holder`` no
            longer holds the slot (expired, broken, released).
        """

    @abc.abstractmethod
    def lock_owners(self, name: str) -> list[dict[str, JSON]]:
        """Current live holders of ``name``: each the ``info`` record plus ``holder``,
        ``token``, ``acquired_at``, ``expires_at``. Ordered by ``acquired_at``."""

    @abc.abstractmethod
    def lock_break(self, name: str, holder: str | None = None) -> int:
        """Forcibly free every slot of ``name`` (administrative; the CLI refuses to break a live
        local holder before calling this), or only the slot of ``holder`` (the ``holder`` of an
        owner record, from any process: how membership fences a dead member's locks). The
        former holders' ``lock_release``/``lock_renew`` then return False; waiters are woken.
        Returns how many slots were freed."""

    @abc.abstractmethod
    def locks(self) -> dict[str, list[dict[str, JSON]]]:
        """Every lock/semaphore name with at least one live holder, mapped to its owners."""

    @abc.abstractmethod
    def lock_wait(self, name: str, timeout: float, holder: str | None = None) -> None:
        """Block for at most ``timeout`` seconds or until a slot of ``name`` may have been
        freed. Spurious early returns are allowed; callers re-check with ``lock_acquire``.

        ``holder`` is the waiter registration of the caller (from ``lock_acquire(...,
        waiting=True)``): a backend may use it to wake exactly the waiter whose turn it is
        instead of every waiter."""

    def lock_fast_path(self, name: str, limit: int, ttl: float | None) -> LockFastPath | None:
        """Optional: a shortcut for uncontended acquisitions of lock ``name`` taken with this
        ``limit`` and ``ttl``, or None (the default: every acquisition uses ``lock_acquire``).

        A lock object asks once and then tries ``try_acquire`` before ``lock_acquire``. Fast
        acquisitions keep every guarantee of ``lock_acquire``: a fencing token from the same
        per-name sequence, an owner record in ``lock_owners``/``locks``, and no grant while a
        waiter is registered or another slot is held.
        """
        return None

    # ------------------------------------------------------------------ counters
    @abc.abstractmethod
    def counter_add(self, name: str, delta: int, request_id: str) -> int:
        """Atomically add ``delta`` (may be negative) to counter ``name`` and return the result.

        A missing counter is 0. ``request_id`` is unique per call: a backend that retries
        after a lost reply uses it to apply the delta at most once; one that cannot tell
        raises :class:`~unidist.errors.OutcomeUnknown` instead of retrying.

        Raises:
            OverflowError: the result would leave the signed 64-bit range; nothing changed.
        """

    @abc.abstractmethod
    def counter_get(self, name: str) -> int:
        """Current value of counter ``name`` (0 if it was never set)."""

    @abc.abstractmethod
    def counter_set(self, name: str, value: int) -> None:
        """Set counter ``name`` to ``value`` (within signed 64-bit)."""

    @abc.abstractmethod
    def counters(self) -> dict[str, int]:
        """Every counter that has been written, with its value."""

    # ------------------------------------------------------------------ state buckets
    @abc.abstractmethod
    def state_get(self, bucket: str, key: str) -> str | None:
        """The stored JSON text of ``key``, or None if absent."""

    @abc.abstractmethod
    def state_set(self, bucket: str, key: str, value: str) -> None:
        """Store JSON text ``value`` under ``key``."""

    @abc.abstractmethod
    def state_update(self, bucket: str, items: Mapping[str, str]) -> None:
        """Store every pair of ``items`` at once (all or none)."""

    @abc.abstractmethod
    def state_delete(self, bucket: str, key: str) -> str | None:
        """Remove ``key``; return its JSON text, or None if it was absent."""

    @abc.abstractmethod
    def state_cas(self, bucket: str, key: str, expected: str | None, new: str | None) -> bool:
        """Compare-and-set: if the stored text equals ``expected`` (``None``: the key is absent
        or holds ``null``; :data:`STATE_ABSENT`: the key is absent), store ``new`` (``None``:
        delete the key) and return True; else change nothing and return False."""

    @abc.abstractmethod
    def state_items(self, bucket: str) -> dict[str, str]:
        """A consistent copy of the whole bucket (key → JSON text)."""

    @abc.abstractmethod
    def state_len(self, bucket: str) -> int:
        """Number of keys in the bucket."""

    @abc.abstractmethod
    def state_clear(self, bucket: str) -> None:
        """Remove every key of the bucket."""

    @abc.abstractmethod
    def buckets(self) -> list[str]:
        """Names of buckets holding at least one key, sorted."""

    # ------------------------------------------------------------------ queues
    # Message states: delayed (due later) → ready → in flight (received, not acked) → gone
    # (acked) or back to ready (nack, visibility timeout) or dead (after max_attempts).
    # Ready messages leave by priority (higher first), then put order.

    @abc.abstractmethod
    def queue_put(
        self,
        name: str,
        msg_id: str,
        body: str,
        delay: float,
        priority: int,
        *,
        new_id: bool = False,
    ) -> bool:
        """Enqueue ``body`` (JSON text) as message ``msg_id``, ready after ``delay`` seconds.

        Idempotent on ``msg_id``: putting an id the queue already holds (in any state) changes
        nothing and returns False, so a retried put never duplicates. Returns True otherwise.
        ``new_id=True`` says the caller has just generated ``msg_id`` at random (a UUID4), so
        it cannot be queued yet: a backend may then skip the duplicate check and the id index
        (the file backend keeps such messages in a compact on-disk-backed index).
        """

    @abc.abstractmethod
    def queue_receive(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        consumer: str | None = None,
    ) -> Delivery | None:
        """Take the first ready message without blocking, or return None.

        First moves due delayed messages to ready and in-flight messages whose visibility
        timeout has passed back to ready; a message that has already been delivered
        ``max_attempts`` times goes to the dead list instead. The received message is in
        flight for ``visibility_timeout`` seconds with ``attempts`` increased by one.

        ``consumer`` (a valid name: a cluster member's incarnation id) is recorded with the
        delivery, in the same atomic step, so that :meth:`queue_release` can give back every
        message a consumer that died still holds.
        """

    @abc.abstractmethod
    def queue_release(self, name: str, consumer: str, max_attempts: int) -> int:
        """Give back at once every message in flight under ``consumer`` (received with that
        ``consumer`` and neither acked, nacked nor timed out since): each becomes ready again
        in its old place, or dead if it has been delivered ``max_attempts`` times, exactly as
        if its visibility timeout ended now. One atomic step; wakes waiters. Returns how many
        messages were given back (0 changes nothing)."""

    @abc.abstractmethod
    def queue_get(self, name: str, max_attempts: int) -> Delivery | None:
        """Like :meth:`queue_receive` but the message is removed at once (acked on receipt)."""

    @abc.abstractmethod
    def queue_ack(self, name: str, msg_id: str, receipt: str) -> bool:
        """Delete an in-flight message. False (nothing changed) if ``receipt`` is not its
        current delivery (already acked, redelivered, dead or purged)."""

    @abc.abstractmethod
    def queue_nack(
        self, name: str, msg_id: str, receipt: str, delay: float, max_attempts: int
    ) -> bool:
        """Give an in-flight message back: ready again after ``delay`` seconds, or dead if it
        has been delivered ``max_attempts`` times. False if ``receipt`` is not current."""

    @abc.abstractmethod
    def queue_stats(self, name: str) -> dict[str, int]:
        """Counts ``ready``, ``delayed``, ``in_flight``, ``dead`` (as of now: due delayed
        messages count as ready, expired in-flight ones still as in flight)."""

    @abc.abstractmethod
    def queue_dead(self, name: str) -> list[Delivery]:
        """The dead messages, oldest first (``receipt`` is empty)."""

    @abc.abstractmethod
    def queue_requeue_dead(self, name: str) -> int:
        """Move every dead message back to ready with attempts reset to 0; return the count."""

    @abc.abstractmethod
    def queue_purge(self, name: str, dead: bool) -> int:
        """Remove ready and delayed messages (and dead ones if ``dead``); in-flight messages
        are untouched. Returns how many were removed."""

    # ------------------------------------------------------------------ queue batches
    # Not abstract: the defaults loop over the single-message methods, so every backend
    # serves them; a backend overrides them to make a batch one step (Redis: one script call;
    # file: one journal record).

    def queue_put_many(
        self,
        name: str,
        items: Sequence[tuple[str, str, float, int]],
        *,
        new_ids: bool = False,
    ) -> list[bool]:
        """Enqueue every ``(msg_id, body, delay, priority)`` of ``items``, in order.

        Each item behaves as :meth:`queue_put` with the same arguments (idempotent on
        ``msg_id``; an id repeated inside ``items`` is stored once, by its first occurrence);
        ``new_ids=True`` says every id was just generated at random.

        Atomicity: this default puts the messages one by one (each put atomic; another client
        may take the first messages before the last is stored, and an error part-way leaves
        the earlier ones stored). Every built-in backend overrides it: the whole batch is one step
        that takes effect completely or not at all.

        Returns:
            One bool per item, as :meth:`queue_put` returns.
        """
        return [
            self.queue_put(name, msg_id, body, delay, priority, new_id=new_ids)
            for msg_id, body, delay, priority in items
        ]

    def queue_get_many(self, name: str, max_attempts: int, max_n: int) -> list[Delivery]:
        """Take up to ``max_n`` ready messages without blocking, each removed at once as by
        :meth:`queue_get`, in the order :meth:`queue_get` would have returned them; an empty
        list when none is ready.

        Atomicity: each message is removed atomically and is never delivered twice. This
        default takes them one by one (other consumers may take messages in between); Redis
        and file override it with one step for the whole batch.
        """
        out: list[Delivery] = []
        while len(out) < max_n:
            delivery = self.queue_get(name, max_attempts)
            if delivery is None:
                break
            out.append(delivery)
        return out

    def queue_receive_many(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        max_n: int,
        consumer: str | None = None,
    ) -> list[Delivery]:
        """Receive up to ``max_n`` ready messages without blocking, each as by
        :meth:`queue_receive` (in flight for ``visibility_timeout`` seconds, tagged with
        ``consumer``); an empty list when none is ready. Atomicity as
        :meth:`queue_get_many`."""
        out: list[Delivery] = []
        while len(out) < max_n:
            delivery = self.queue_receive(name, visibility_timeout, max_attempts, consumer)
            if delivery is None:
                break
            out.append(delivery)
        return out

    @abc.abstractmethod
    def queue_wait(self, name: str, timeout: float) -> None:
        """Block for at most ``timeout`` seconds or until a message of ``name`` may have
        become ready. Spurious early returns are allowed."""

    @abc.abstractmethod
    def queues(self) -> list[str]:
        """Names of queues holding any message (ready, delayed, in flight or dead), sorted."""

    # ------------------------------------------------------------------ membership
    @abc.abstractmethod
    def member_heartbeat(
        self, group: str, member: str, info: Mapping[str, JSON], ttl: float
    ) -> None:
        """Record that ``member`` of ``group`` is alive for ``ttl`` more seconds."""

    @abc.abstractmethod
    def member_leave(self, group: str, member: str) -> bool:
        """Remove ``member`` from ``group``; False if it was not there."""

    @abc.abstractmethod
    def members(self, group: str) -> dict[str, dict[str, JSON]]:
        """Live members of ``group`` (heartbeat not expired) with their info records."""
