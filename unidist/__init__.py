"""unidist: shared locks, counters, state buckets and persistent queues for scripts and fleets."""

from __future__ import annotations

from unidist.backends import connect
from unidist.backends.base import Backend
from unidist.counter import SharedCounter
from unidist.errors import (
    BackendUnavailable,
    ClusterFileError,
    CorruptData,
    Empty,
    InvalidName,
    InvalidURL,
    LockNotOwned,
    LockTimeout,
    OutcomeUnknown,
    RemoteError,
    SerializationError,
    ServiceLost,
    UnidistError,
    ValueTooLarge,
)
from unidist.lock import SharedLock, SharedSemaphore, fenced_get, fenced_set
from unidist.queue import Message, MessageQueue
from unidist.state import SharedState
from unidist.threadsafe import ThreadSafeDict, ThreadSafeList

__version__ = "0.1.0.dev0"

__all__ = [
    "Backend",
    "BackendUnavailable",
    "ClusterFileError",
    "CorruptData",
    "Empty",
    "InvalidName",
    "InvalidURL",
    "LockNotOwned",
    "LockTimeout",
    "Message",
    "MessageQueue",
    "OutcomeUnknown",
    "RemoteError",
    "SerializationError",
    "ServiceLost",
    "SharedCounter",
    "SharedLock",
    "SharedSemaphore",
    "SharedState",
    "ThreadSafeDict",
    "ThreadSafeList",
    "UnidistError",
    "ValueTooLarge",
    "__version__",
    "connect",
    "fenced_get",
    "fenced_set",
]
