"""``SharedLock`` and ``SharedSemaphore``: named locks shared by threads, processes or hosts.

A lock is owned by an *acquisition* of a lock object, not by a thread: two ``SharedLock``
objects with the same name contend even in one thread, and one object may be released from
another thread (as ``threading.Lock`` allows). Each acquisition gets a fencing token that is
strictly increasing per lock name, so a resource can refuse writes from a holder whose lease
ran out while it was paused (pass ``lock.token`` along and compare).

A ttl lease alone is not mutual exclusion: a holder paused longer than its ttl (GC, SIGSTOP,
swap) can still believe it holds the lock after another process took it. Use fencing tokens,
``renew()``/``auto_renew`` and the ``on_lost`` callback where that matters.

Waiting: blocked acquirers register as waiters and are served in registration order (FIFO),
so no waiter starves; a waiter that dies lapses after a few seconds. Waits are woken by the
release, not by polling, where the backend can do so.

Speed: an in-process backend (``memory://``) may offer a fast path for a lock without ttl
(:meth:`Backend.lock_fast_path`): while nobody waits, acquire+release are a few dict
operations, with the same tokens, owner records and FIFO handover as otherwise.
The owner record of such an acquisition reads the thread's name when the record is read (a
thread renamed while holding the lock shows its new name).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Final

import structlog

from unidist._clock import Deadline, check_timeout
from unidist._facade import (
    Primitive,
    owner_info,
    thread_owner,
    thread_owners,
    unique_id,
)
from unidist.backends.base import Backend, LockGrant
from unidist.cluster._current import _active as memberships  # a list changed in place
from unidist.codec import JSON
from unidist.errors import LockNotOwned, LockTimeout

if TYPE_CHECKING:
    from unidist.state import SharedState

__all__ = ["SharedLock", "SharedSemaphore", "fenced_get", "fenced_set"]

MAX_LIMIT: Final = 10_000
_log = structlog.get_logger("unidist.lock")
_now = time.time
_live: weakref.WeakSet[_LockBase] = weakref.WeakSet()


def _forget_grants_in_child() -> None:
    # A forked child must never hold or release its parent's acquisitions.
    for obj in list(_live):
        obj._after_fork()


os.register_at_fork(after_in_child=_forget_grants_in_child)


class _LockBase(Primitive):
    __slots__ = (
        "__weakref__",
        "_fast",
        "_fast_gate",
        "_fast_held",
        "_fast_token",
        "_fast_tokens",
        "_grants",
        "_last_token",
        "_limit",
        "_lost",
        "_mutex",
        "_on_lost",
        "_pid",
        "_renew_stop",
        "_renewer",
        "_ttl",
        "auto_renew",
    )
    _kind = "lock name"

    def __init__(
        self,
        name: str,
        limit: int,
        backend: Backend | str | None,
        ttl: float | None,
        auto_renew: bool,
        on_lost: Callable[[_LockBase], object] | None,
    ) -> None:
        super().__init__(name, backend)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        ttl = check_timeout(ttl, "ttl")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds or None, got {ttl!r}")
        if auto_renew and ttl is None:
            raise ValueError("auto_renew=True needs a ttl (there is nothing to renew without one)")
        self._limit = limit
        self._ttl = ttl
        self.auto_renew = auto_renew
        self._on_lost = on_lost
        # Acquisitions held: through lock_acquire, most recent last, and the token of the
        # one taken on the backend's fast path (Backend.lock_fast_path; limit 1, so at most
        # one acquisition at a time, of either kind).
        self._grants: list[LockGrant] = []
        self._fast_token: int | None = None
        fast = self._fast = self._backend.lock_fast_path(self._name, limit, ttl)
        # The fast path's parts, bound once (see LockFastPath); an empty table without one.
        self._fast_gate: MutableMapping[int, bool] = {} if fast is None else fast.gate
        self._fast_tokens = None if fast is None else fast.tokens
        self._fast_held: MutableMapping[int, tuple[float, Mapping[str, JSON]]] = (
            {} if fast is None else fast.held
        )
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._lost = False
        self._last_token: int | None = None
        self._renewer: threading.Thread | None = None
        self._renew_stop = threading.Event()
        _live.add(self)

    def _after_fork(self) -> None:
        self._grants = []
        self._fast_token = None
        self._mutex = threading.Lock()
        self._renewer = None
        self._renew_stop = threading.Event()
        self._pid = os.getpid()

    # ------------------------------------------------------------------ properties
    @property
    def ttl(self) -> float | None:
        """Lease seconds of each acquisition, or None (held until release or holder death)."""
        return self._ttl

    @property
    def token(self) -> int | None:
        """Fencing token of this object's most recent acquisition (None before the first).

        Strictly increasing per lock name across every holder: a resource that remembers the
        highest token it has seen can reject a stale holder's writes.
        """
        return self._last_token

    @property
    def lost(self) -> bool:
        """True once a renewal found this object's lease expired or broken."""
        return self._lost

    def held(self) -> bool:
        """True if this object currently holds an acquisition (as far as it knows)."""
        return self._fast_token is not None or bool(self._grants)

    # ------------------------------------------------------------------ acquire
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock (one slot of the semaphore).

        Args:
            blocking: wait for a slot; False tries once and returns at once.
            timeout: with ``blocking``, give up after this many seconds (None: wait forever).

        Returns:
            True if acquired, False if not (``blocking=False`` or the timeout passed).

        Raises:
            ValueError: a negative timeout, or a timeout with ``blocking=False``.
            BackendUnavailable: the backend cannot be reached.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
            if not blocking:
                raise ValueError("can't specify a timeout for a non-blocking call")
        if self._fast_gate.pop(0, None) is not None:
            # Uncontended: a few C calls (LockFastPath). No renewer: there is no ttl here.
            token = next(self._fast_tokens)  # type: ignore[arg-type]
            owner: Mapping[str, JSON]
            if memberships:  # thread_owner(), inlined (a call costs as much as the rest)
                owner = owner_info()
            else:
                try:
                    owner = thread_owners.record
                except AttributeError:
                    owner = thread_owner()
            self._fast_held[token] = (_now(), owner)
            self._fast_token = token
            self._last_token = token
            self._lost = False
            return True
        be = self._backend
        holder = unique_id()
        info = owner_info()
        grant = be.lock_acquire(self._name, self._limit, holder, info, self._ttl, waiting=blocking)
        if grant is None and blocking:
            deadline = Deadline(timeout)
            slice_ = be.WAITER_TTL / 4
            try:
                while grant is None:
                    if deadline.expired:
                        break
                    be.lock_wait(self._name, deadline.remaining(slice_), holder)
                    grant = be.lock_acquire(
                        self._name, self._limit, holder, info, self._ttl, waiting=True
                    )
            finally:
                if grant is None:
                    be.lock_cancel_wait(self._name, holder)
        if grant is None:
            return False
        with self._mutex:
            self._grants.append(grant)
            self._last_token = grant.token
            self._lost = False
            if self.auto_renew:
                self._start_renewer()
        return True

    def __enter__(self) -> _LockBase:
        """Acquire (blocking, no timeout) and return self."""
        if self._fast_gate.pop(0, None) is not None:  # acquire(), inlined
            token = next(self._fast_tokens)  # type: ignore[arg-type]
            owner: Mapping[str, JSON]
            if memberships:
                owner = owner_info()
            else:
                try:
                    owner = thread_owners.record
                except AttributeError:
                    owner = thread_owner()
            self._fast_held[token] = (_now(), owner)
            self._fast_token = token
            self._last_token = token
            self._lost = False
            return self
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._fast_token  # release(), inlined
        if token is not None:
            self._fast_token = None
            if self._fast_held.pop(token, None) is not None:
                self._fast_gate[0] = True
                return
            self._release(token)
            return
        try:
            grant = self._grants.pop()
        except IndexError:
            raise self._not_held() from None
        self._release(grant)

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[_LockBase]:
        """Context manager: acquire within ``timeout`` seconds, release on exit.

        Raises:
            LockTimeout: not acquired in time; the message names the current holder(s).
        """
        if not self.acquire(timeout=timeout):
            raise LockTimeout(
                f"{self._kind.split()[0]} {self._name!r} not acquired within {timeout} s; "
                f"held by {_describe(self._backend.lock_owners(self._name))}",
                name=self._name,
            )
        try:
            yield self
        finally:
            self.release()

    # ------------------------------------------------------------------ release / renew
    def release(self) -> None:
        """Release this object's most recent acquisition.

        Raises:
            LockNotOwned: this object holds nothing, or its lease expired (whether or not
                someone else took it since; another holder is never touched).
            BackendUnavailable: the backend cannot be reached.
        """
        token = self._fast_token
        if token is not None:
            # Taken on the fast path: still there if its record is (dict.pop is atomic: a
            # takeover by the backend's general path removes it first).
            self._fast_token = None
            if self._fast_held.pop(token, None) is not None:
                self._fast_gate[0] = True
                return
            self._release(token)
            return
        try:
            # list.pop is atomic; a forked child holds nothing of its parent's: _after_fork
            # emptied _grants and _fast_token.
            grant = self._grants.pop()
        except IndexError:
            raise self._not_held() from None
        self._release(grant)

    def _not_held(self) -> LockNotOwned:
        return LockNotOwned(
            f"{self._kind.split()[0]} {self._name!r} is not held by this object", name=self._name
        )

    def _release(self, grant: LockGrant | int) -> None:
        """Release ``grant`` (already taken off ``_grants``) through ``lock_release``."""
        holder, token = self._holder_token(grant)
        if self._renewer is not None:
            with self._mutex:
                if not self._grants and self._renewer is not None:
                    self._renew_stop.set()
                    self._renewer = None
        if not self._backend.lock_release(self._name, holder):
            raise LockNotOwned(
                f"{self._kind.split()[0]} {self._name!r} was no longer held by this object "
                f"when released (lease expired or broken; token {token})",
                name=self._name,
            )

    def renew(self, ttl: float | None = None) -> None:
        """Extend every lease this object holds to now + ``ttl`` (default: the object's ttl).

        Raises:
            LockNotOwned: this object holds nothing, or a lease was already lost (then
                :attr:`lost` becomes True and ``on_lost`` is called).
        """
        ttl = check_timeout(ttl, "ttl")
        if ttl is None:
            ttl = self._ttl
        with self._mutex:
            grants: list[LockGrant | int] = list(self._grants)
        token = self._fast_token
        if token is not None:
            grants.append(token)
        if not grants or self._pid != os.getpid():
            raise LockNotOwned(f"{self._name!r} is not held by this object", name=self._name)
        for grant in grants:
            holder, token = self._holder_token(grant)
            if self._backend.lock_renew(self._name, holder, ttl) is False:
                self._mark_lost(grant)
                raise LockNotOwned(
                    f"{self._kind.split()[0]} {self._name!r}: lease of token {token} "
                    "was lost before renewal",
                    name=self._name,
                )

    def _holder_token(self, grant: LockGrant | int) -> tuple[str, int]:
        """The holder id and token of one of this object's acquisitions."""
        if isinstance(grant, LockGrant):
            return grant.holder, grant.token
        assert self._fast is not None
        return self._fast.holder(grant), grant

    def _mark_lost(self, grant: LockGrant | int) -> None:
        with self._mutex:
            if isinstance(grant, int):
                if self._fast_token == grant:
                    self._fast_token = None
            elif grant in self._grants:
                self._grants.remove(grant)
            self._lost = True
        if self._on_lost is not None:
            self._on_lost(self)

    def _start_renewer(self) -> None:
        # Called with self._mutex held.
        if self._renewer is not None and self._renewer.is_alive():
            return
        self._renew_stop = threading.Event()
        ref = weakref.ref(self)
        stop = self._renew_stop
        interval = (self._ttl or 1.0) / 3

        def run() -> None:
            while not stop.wait(interval):
                obj = ref()
                if obj is None:
                    return
                try:
                    obj.renew()
                except LockNotOwned:
                    return
                except Exception as exc:  # keep renewing through transient backend errors
                    _log.warning("lock_renew_failed", lock=obj.name, error=str(exc))
                    continue
                finally:
                    del obj

        self._renewer = threading.Thread(
            target=run, name=f"unidist-renew-{self._name}", daemon=True
        )
        self._renewer.start()

    # ------------------------------------------------------------------ inspection
    def locked(self) -> bool:
        """True when anyone holds the lock (for a semaphore: all slots are taken)."""
        return len(self._backend.lock_owners(self._name)) >= self._limit

    def owners(self) -> list[dict[str, JSON]]:
        """Every current holder: host, pid, thread, acquired_at, expires_at, token, holder."""
        return self._backend.lock_owners(self._name)


def _describe(owners: list[dict[str, JSON]]) -> str:
    if not owners:
        return "nobody now"
    return ", ".join(
        f"{o.get('host')} pid {o.get('pid')} thread {o.get('thread')!s} (token {o.get('token')})"
        for o in owners
    )


class SharedLock(_LockBase):
    """A named mutual-exclusion lock on a backend.

    Example::

        lock = unidist.SharedLock("backup", backend="file:///var/lib/unidist")
        with lock.hold(timeout=5):
            run_backup(fence=lock.token)

    Args:
        name: lock name (letters, digits, ``._-:@``; 1-200 characters).
        backend: a Backend, a backend URL, or None for the default (``$UNIDIST_URL``, else
            ``memory://``).
        ttl: lease seconds; None holds until release or until the holder process dies.
        auto_renew: renew the lease from a daemon thread every ttl/3 while held.
        on_lost: called with the lock object when a renewal finds the lease lost.

    Raises:
        InvalidName: a bad name, before any I/O.
    """

    __slots__ = ()

    def __init__(
        self,
        name: str,
        backend: Backend | str | None = None,
        ttl: float | None = None,
        *,
        auto_renew: bool = False,
        on_lost: Callable[[_LockBase], object] | None = None,
    ) -> None:
        super().__init__(name, 1, backend, ttl, auto_renew, on_lost)

    def owner(self) -> dict[str, JSON] | None:
        """The current holder's record (host, pid, thread, acquired_at, expires_at, token), or
        None when the lock is free."""
        owners = self._backend.lock_owners(self._name)
        return owners[0] if owners else None


class SharedSemaphore(_LockBase):
    """A named counting semaphore: up to ``limit`` holders at once, each with its own token.

    Same methods as :class:`SharedLock`; one object may hold several slots (each ``acquire``
    takes one, each ``release`` frees the most recent).

    Args:
        name: semaphore name.
        limit: number of slots (1-10,000). Every user of one name must pass the same limit.
        backend, ttl, auto_renew, on_lost: as for :class:`SharedLock`.
    """

    __slots__ = ()
    _kind = "semaphore name"

    def __init__(
        self,
        name: str,
        limit: int,
        backend: Backend | str | None = None,
        ttl: float | None = None,
        *,
        auto_renew: bool = False,
        on_lost: Callable[[_LockBase], object] | None = None,
    ) -> None:
        super().__init__(name, limit, backend, ttl, auto_renew, on_lost)

    @property
    def limit(self) -> int:
        """The number of slots."""
        return self._limit

    def owner(self) -> dict[str, JSON] | None:
        """The longest-standing holder's record, or None when no slot is held."""
        owners = self._backend.lock_owners(self._name)
        return owners[0] if owners else None


# ---------------------------------------------------------------------- fenced writes


def _check_token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int):
        raise TypeError(f"token must be an int (a lock's .token), not {type(token).__name__}")
    return token


def fenced_set(state: SharedState, key: str, value: JSON, token: int) -> bool:
    """Write ``value`` under ``key`` of ``state`` only if no write with a larger fencing token
    came first: the storage-side check that makes a lock safe against paused holders.

    The entry is stored as ``{"token": token, "value": value}``. The write is refused (False,
    nothing changed) when the stored token is larger than ``token``; an equal token (the same
    holder writing again) is accepted. Atomic: a compare-and-set loop on the bucket, so a
    concurrent fenced write can never be overwritten by a staler one.

    Example::

        with lock.hold(timeout=5):
            if not fenced_set(state, "config", new_config, lock.token):
                raise RuntimeError("lost the lock: a newer holder already wrote")

    Args:
        state: the bucket holding the fenced entry (any backend).
        key: the entry's key.
        value: any JSON value.
        token: the writer's fencing token (``lock.token`` while holding the lock).

    Returns:
        True if written, False if refused as stale.

    Raises:
        TypeError: ``token`` is not an int.
        SerializationError: ``value`` is not JSON.
        ValueError: the entry under ``key`` exists but is not a fenced entry.
    """
    token = _check_token(token)
    new: JSON = {"token": token, "value": value}
    while True:
        current = state.get(key)
        if current is not None and _stored_token(current, key) > token:
            return False
        if state.compare_and_set(key, current, new):
            return True


def fenced_get(state: SharedState, key: str) -> tuple[JSON, int | None]:
    """The value and fencing token of a :func:`fenced_set` entry; ``(None, None)`` if absent.

    Raises:
        ValueError: the entry under ``key`` is not a fenced entry.
    """
    current = state.get(key)
    if current is None:
        return None, None
    tok = _stored_token(current, key)
    assert isinstance(current, dict)
    return current.get("value"), tok


def _stored_token(entry: JSON, key: str) -> int:
    tok = entry.get("token") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or isinstance(tok, bool) or not isinstance(tok, int):
        raise ValueError(  # noqa: TRY004  (a bad stored value, not a bad argument type)
            f"entry {key!r} is not a fenced entry (written by fenced_set)"
        )
    return tok
