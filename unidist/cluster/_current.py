"""The process-wide current membership, read by lock owner records, queues and log records.

A :class:`~unidist.cluster.Membership` that joins (with ``current=True``, the default)
becomes the current one until it leaves; with several joined, the most recent is current.
A forked child starts with none: its parent's membership is not its own.

This module imports nothing from unidist, so that the lower layers can read it cheaply.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

__all__ = ["Active", "current", "register", "unregister"]


class Active(Protocol):
    """What the other primitives may ask of the current membership."""

    @property
    def member_id(self) -> str:
        """The member id (``host:pid`` by default)."""
        ...

    @property
    def incarnation(self) -> str:
        """The current incarnation (new on every (re)join); lock owner records carry it so
        that a dead incarnation's locks can be broken."""
        ...

    @property
    def groups(self) -> tuple[str, ...]:
        """The member's groups."""
        ...

    def consumer_for(self, backend: object, queue: str, max_attempts: int) -> str | None:
        """The consumer id to receive from ``queue`` on ``backend`` with, or None when this
        membership does not live on that backend."""
        ...


_active: list[Active] = []
_mutex = threading.Lock()


def current() -> Active | None:
    """The current membership, or None."""
    active = _active
    return active[-1] if active else None


def register(member: Active) -> None:
    """Make ``member`` the current membership."""
    with _mutex:
        if member in _active:
            _active.remove(member)
        _active.append(member)


def unregister(member: Active) -> None:
    """``member`` is no longer current (the previous one, if any, is again)."""
    with _mutex:
        if member in _active:
            _active.remove(member)


def _forget_in_child() -> None:
    global _mutex
    _mutex = threading.Lock()
    _active.clear()


os.register_at_fork(after_in_child=_forget_in_child)
