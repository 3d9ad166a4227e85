"""``SharedCounter``: an atomic signed 64-bit integer shared by threads, processes or hosts."""

from __future__ import annotations

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


class SharedCounter(Primitive):
    """A named atomic counter; starts at 0.

    Every method is one atomic step on the backend. Durability follows the backend: on
    ``file://`` an increment that returned is on disk (with the default ``fsync=always``);
    ``memory://?snapshot=`` keeps the last snapshot; Redis keeps what the server persists.
    On Redis an increment whose reply was lost is retried with its request id, so it is
    applied exactly once; where that is impossible :class:`unidist.OutcomeUnknown` is raised
    rather than risking a double increment.

    Example::

        jobs = unidist.SharedCounter("jobs", backend="file:///var/lib/unidist")
        job_id = jobs.incr()

    Raises (every method):
        BackendUnavailable: the backend cannot be reached.
    """

    __slots__ = ()
    _kind = "counter name"

    def __init__(self, name: str, backend: Backend | str | None = None) -> None:
        super().__init__(name, backend)

    def incr(self, n: int = 1) -> int:
        """Add ``n`` atomically and return the new value.

        Raises:
            TypeError: ``n`` is not an int (nothing changes).
            OverflowError: the result would leave the signed 64-bit range (nothing changes).
        """
        return self._backend.counter_add(self._name, _check_int(n, "n"), unique_id())

    def decr(self, n: int = 1) -> int:
        """Subtract ``n`` atomically and return the new value (errors as :meth:`incr`)."""
        return self._backend.counter_add(self._name, -_check_int(n, "n"), unique_id())

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
