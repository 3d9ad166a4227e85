"""The unidist error tree.

Every error unidist raises on purpose subclasses :class:`UnidistError`. Where the standard
library already has a meaning, the error also subclasses it, so ``except ValueError`` or
``except queue.Empty`` keep working in code that does not know unidist.

This module imports nothing from the rest of unidist.
"""

from __future__ import annotations

import queue as _queue

__all__ = [
    "BackendUnavailable",
    "ClusterFileError",
    "CorruptData",
    "Empty",
    "InvalidName",
    "InvalidURL",
    "LockNotOwned",
    "LockTimeout",
    "OutcomeUnknown",
    "RemoteError",
    "SerializationError",
    "ServiceLost",
    "UnidistError",
    "ValueTooLarge",
]


class UnidistError(Exception):
    """Base class of every error unidist raises on purpose."""


class BackendUnavailable(UnidistError):
    """The backend cannot be reached or used (server down, directory not writable, ...).

    The message names the backend by its redacted URL (never a password). ``url`` holds
    that redacted URL.
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class OutcomeUnknown(BackendUnavailable):
    """A non-idempotent operation was sent but its reply was lost.

    The operation may or may not have taken effect; unidist never retries it silently.
    """


class LockTimeout(UnidistError, TimeoutError):
    """A lock or semaphore was not acquired within the requested timeout."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class LockNotOwned(UnidistError, RuntimeError):
    """Release or renew of a lock this object does not hold (never held, or lease lost)."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class Empty(UnidistError, _queue.Empty):
    """No message became available before the timeout (also a :class:`queue.Empty`)."""


class SerializationError(UnidistError, TypeError):
    """A value is not representable as JSON; nothing was stored."""


class InvalidName(UnidistError, ValueError):
    """A primitive name breaks the naming rules; raised before any I/O."""


class InvalidURL(UnidistError, ValueError):
    """A backend URL has an unknown scheme, an unknown option or an ill-typed option value."""


class CorruptData(UnidistError):
    """Stored data failed its integrity check.

    ``path`` and ``offset`` say where (``offset`` is -1 when the whole file is unusable).
    """

    def __init__(self, message: str, *, path: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class ClusterFileError(UnidistError):
    """A cluster definition file is missing, unreadable or malformed; names file and line."""

    def __init__(self, message: str, *, path: str = "", line: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class RemoteError(UnidistError):
    """A call on a remote service raised; carries the remote exception's type, message and
    traceback text (the remote exception itself never crosses the wire: arguments and results
    are JSON)."""

    def __init__(self, message: str, *, type_name: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class ServiceLost(UnidistError):
    """The server a service proxy was bound to died or left while a call was in flight."""


class ValueTooLarge(UnidistError, ValueError):
    """A value's JSON text exceeds the size every backend accepts (256 MiB); nothing was
    stored. The message names the size and the limit."""
