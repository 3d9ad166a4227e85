"""``SharedCounter``: an atomic signed 64-bit integer shared by threads, processes or hosts."""

from __future__ import annotations

import copy
import os
import threading
import weakref
from typing import Final

from unidist._facade import Primitive, unique_id
from unidist.backends.base import Backend

__all__ = ["SharedCounter"]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"{what} {value} is outside the signed 64-bit range")
    return value


class _Waiter:
    """A caller queued behind the call in flight: its delta, and what it gets back."""

    __slots__ = ("alone", "batch", "delta", "error", "latch", "value")

    def __init__(self, delta: int) -> None:
        self.delta = delta
        self.latch = threading.Lock()
        self.latch.acquire()  # released when the caller's batch is done (or it must lead)
        self.batch: list[_Waiter] | None = None  # set on the waiter that leads a batch
        self.value = 0
        self.error: BaseException | None = None
        self.alone = False  # the batch overflowed: apply this delta on its own


class _Combiner:
    """Coalesces concurrent increments of one counter on one backend within this process.

    At most one ``counter_add`` per counter is in flight from this process. A caller that
    finds none in flight sends its own delta at once (no added latency); callers that arrive
    meanwhile queue up, and when the call in flight returns, the first of them sends the sum
    of all their deltas (one sign per batch) in one ``counter_add`` and hands each caller
    the value it would have seen had the deltas been applied one after another in queue
    order: the value before the batch plus the deltas up to and including its own.
    """

    __slots__ = ("backend", "busy", "generation", "mutex", "name", "pending")

    def __init__(self, backend: Backend, name: str, generation: int) -> None:
        self.backend = backend
        self.name = name
        self.generation = generation
        self.mutex = threading.Lock()
        self.busy = False
        self.pending: list[_Waiter] = []

    def add(self, delta: int) -> int:
        waiter: _Waiter | None = None
        with self.mutex:
            if self.busy:
                waiter = _Waiter(delta)
                self.pending.append(waiter)
            else:
                self.busy = True
        if waiter is None:
            try:
                return self.backend.counter_add(self.name, delta, unique_id())
            finally:
                self._hand_over()
        waiter.latch.acquire()
        batch = waiter.batch
        if batch is not None:
            self._run(batch)
        if waiter.alone:
            return self.backend.counter_add(self.name, delta, unique_id())
        error = waiter.error
        if error is not None:
            if batch is not None:  # the caller whose thread made the failed call
                raise error
            raise _clone(error) from error
        return waiter.value

    def _run(self, batch: list[_Waiter]) -> None:
        """Send one batch (in the thread of its first waiter), fill in every waiter's
        outcome, hand over to the next batch, then wake this batch's other waiters."""
        total = sum(w.delta for w in batch)
        try:
            if len(batch) > 1 and not INT64_MIN <= total <= INT64_MAX:
                raise OverflowError  # handled below: every delta on its own
            value = self.backend.counter_add(self.name, total, unique_id())
        except OverflowError as exc:
            # Nothing changed. Together they overflow; each alone may not: let each try.
            for w in batch:
                if len(batch) > 1:
                    w.alone = True
                else:
                    w.error = exc
        except BaseException as exc:
            for w in batch:
                w.error = exc
        else:
            value -= total
            for w in batch:
                value += w.delta
                w.value = value
        finally:
            self._hand_over()
            for w in batch[1:]:
                w.latch.release()

    def _hand_over(self) -> None:
        """The call in flight is done: let the next batch go, or mark the counter idle."""
        with self.mutex:
            pending = self.pending
            if not pending:
                self.busy = False
                return
            # One sign per batch: the running value then moves monotonically from the value
            # before the batch to the value after it, so every value handed out is in range.
            up = pending[0].delta >= 0
            if all((w.delta >= 0) is up for w in pending):
                batch, self.pending = pending, []
            else:
                batch = [w for w in pending if (w.delta >= 0) is up]
                self.pending = [w for w in pending if (w.delta >= 0) is not up]
        batch[0].batch = batch
        batch[0].latch.release()


def _clone(error: BaseException) -> BaseException:
    """A copy of ``error`` to raise in another thread (one exception object raised in
    several threads at once would get its traceback overwritten)."""
    try:
        return copy.copy(error).with_traceback(None)
    except Exception:  # an exception type that cannot be copied: share it
        return error


_combiners: weakref.WeakKeyDictionary[Backend, dict[str, _Combiner]] = weakref.WeakKeyDictionary()
_combiners_lock = threading.Lock()
_generation = 0


def _combiner(backend: Backend, name: str) -> _Combiner:
    with _combiners_lock:
        by_name = _combiners.get(backend)
        if by_name is None:
            by_name = _combiners[backend] = {}
        found = by_name.get(name)
        if found is None or found.generation != _generation:
            found = by_name[name] = _Combiner(backend, name, _generation)
        return found


def _after_fork_in_child() -> None:
    # A batch in flight in the parent never completes in the child: start afresh.
    global _combiners, _combiners_lock, _generation
    _combiners = weakref.WeakKeyDictionary()
    _combiners_lock = threading.Lock()
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedCounter(Primitive):
    """A named atomic counter; starts at 0.

    Every method is one atomic step on the backend. Durability follows the backend: on
    ``file://`` an increment that returned is on disk (with the default ``fsync=always``);
    ``memory://?snapshot=`` keeps the last snapshot; Redis keeps what the server persists.
    On Redis an increment whose reply was lost is retried with its request id, so it is
    applied exactly once; where that is impossible :class:`unidist.OutcomeUnknown` is raised
    rather than risking a double increment.

    Coalescing (``file://`` and Redis): when threads of one process call :meth:`incr` or
    :meth:`decr` on the same counter (same backend and name, through any number of
    ``SharedCounter`` objects) at the same time, one thread sends the sum of their deltas
    in a single backend step, and each caller gets back exactly the value it would have
    seen had the increments been applied one after another in some order: with ``incr()``
    from many threads the values returned are distinct and consecutive, and the final
    value is exact. A caller alone goes straight through (no added latency); under load one
    step serves many callers (one fsync or one round trip instead of one each). A failed
    step (:class:`unidist.BackendUnavailable`, :class:`unidist.OutcomeUnknown`) raises in
    every caller it carried; when the sum would overflow, each delta is applied on its own,
    so only a caller whose own increment overflows gets :class:`OverflowError`. Each
    backend step has its own request id, so a retried step is still applied exactly once.
    On ``memory://`` an increment costs less than waking another thread, so calls are not
    coalesced.

    Example::

        jobs = unidist.SharedCounter("jobs", backend="file:///var/lib/unidist")
        job_id = jobs.incr()

    Raises (every method):
        BackendUnavailable: the backend cannot be reached.
    """

    __slots__ = ("_combiner",)
    _kind = "counter name"

    def __init__(self, name: str, backend: Backend | str | None = None) -> None:
        super().__init__(name, backend)
        # Backends shared beyond this process: a call is a system call or a round trip.
        self._combiner = (
            None if self._backend.scope == "process" else _combiner(self._backend, self._name)
        )

    def _add(self, delta: int) -> int:
        combiner = self._combiner
        if combiner is None:
            return self._backend.counter_add(self._name, delta, unique_id())
        if combiner.generation != _generation:  # forked since: the parent's is stale
            combiner = self._combiner = _combiner(self._backend, self._name)
        return combiner.add(delta)

    def incr(self, n: int = 1) -> int:
        """Add ``n`` atomically and return the new value (coalesced with other threads'
        concurrent calls: see the class docs).

        Raises:
            TypeError: ``n`` is not an int (nothing changes).
            OverflowError: the result would leave the signed 64-bit range (nothing changes).
        """
        return self._add(_check_int(n, "n"))

    def decr(self, n: int = 1) -> int:
        """Subtract ``n`` atomically and return the new value (errors as :meth:`incr`)."""
        return self._add(-_check_int(n, "n"))

    def get(self) -> int:
        """The current value."""
        return self._backend.counter_get(self._name)

    def set(self, value: int) -> None:
        """Set the value.

        Raises:
            TypeError, OverflowError: as for :meth:`incr`.
        """
        self._backend.counter_set(self._name, _check_int(value, "value"))

    def reset(self) -> None:
        """Set the value back to 0."""
        self._backend.counter_set(self._name, 0)

    def __int__(self) -> int:
        return self.get()
