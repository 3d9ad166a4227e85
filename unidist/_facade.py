"""What every primitive facade shares: resolving its backend and checking its name."""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Final

from unidist._names import check_name
from unidist.backends import connect
from unidist.backends.base import Backend
from unidist.cluster._current import _active as memberships  # a list changed in place
from unidist.cluster._current import current as current_member
from unidist.codec import JSON

HOST: Final = socket.gethostname()

_id_prefix = secrets.token_hex(8)
_id_seq = itertools.count(1)
_pid = os.getpid()


def _new_id_prefix() -> None:
    global _id_prefix, _id_seq, _pid, _owner_cache
    _id_prefix = secrets.token_hex(8)
    _id_seq = itertools.count(1)
    _pid = os.getpid()
    _owner_cache = threading.local()  # the records cached in the parent name its pid
    thread_owners.__dict__.clear()  # the forking thread's (the only one in the child)


os.register_at_fork(after_in_child=_new_id_prefix)


def unique_id() -> str:
    """A cheap id unique across processes and hosts: a random per-process prefix (renewed in
    a forked child) and a counter. Used for lock holders and request ids."""
    return f"{_id_prefix}{next(_id_seq)}"  # decimal: formatting with :x costs more


def resolve_backend(backend: Backend | str | None) -> Backend:
    """A Backend as given, the cached handle for a URL string, or the default backend."""
    if isinstance(backend, Backend):
        return backend
    if backend is None or isinstance(backend, str):
        return connect(backend)
    raise TypeError(
        f"backend must be a Backend, a URL string or None, not {type(backend).__name__}"
    )


_owner_cache = threading.local()


def owner_info() -> dict[str, JSON]:
    """The owner record published with a lock grant: host, pid, thread name, and ``member``
    (the member id) and ``incarnation`` while a cluster membership is current.

    Built once per thread and reused while the thread's name and the current membership stay
    the same (a forked child starts afresh): the dict is shared, so callers must not modify
    it. This runs on every lock acquisition, so the check is a handful of identity tests.
    """
    try:
        thread, name, member, incarnation, info = _owner_cache.entry
        # Thread.name is a property returning _name; read the attribute (a third of the cost
        # of this function). Without it (another Python), AttributeError rebuilds every time.
        renamed = thread._name is not name
    except AttributeError:
        return _build_owner_info()
    current = memberships[-1] if memberships else None
    if not renamed and current is member and (member is None or member.incarnation is incarnation):
        return info  # type: ignore[no-any-return]
    return _build_owner_info()


def _build_owner_info() -> dict[str, JSON]:
    thread = threading.current_thread()
    name = thread.name
    member = current_member()
    incarnation = None if member is None else member.incarnation
    info: dict[str, JSON] = {"host": HOST, "pid": _pid, "thread": name}
    if member is not None:
        info["member"] = member.member_id
        info["incarnation"] = incarnation
    _owner_cache.entry = (thread, name, member, incarnation, info)
    return info


class ThreadOwner(Mapping[str, JSON]):
    """The owner record of one thread while no cluster membership is current: host, pid and
    the thread's name, read when the record is read (a thread renamed while it holds a lock
    is reported under its new name).

    What an in-process fast path stores per acquisition instead of a dict: one object per
    thread, built once (``thread_owners.record``, see :func:`thread_owner`).
    """

    __slots__ = ("_pid", "_thread")

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread
        self._pid = _pid

    def __getitem__(self, key: str) -> JSON:
        if key == "host":
            return HOST
        if key == "pid":
            return self._pid
        if key == "thread":
            return self._thread.name
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(("host", "pid", "thread"))

    def __len__(self) -> int:
        return 3


#: per thread: ``record``, the thread's ThreadOwner (absent until :func:`thread_owner`).
thread_owners = threading.local()


def thread_owner() -> Mapping[str, JSON]:
    """The calling thread's owner record as a lock fast path stores it: the thread's
    ThreadOwner, or the :func:`owner_info` dict while a cluster membership is current (the
    member id and incarnation are those at acquisition time)."""
    if memberships:
        return owner_info()
    try:
        return thread_owners.record  # type: ignore[no-any-return]
    except AttributeError:
        record = thread_owners.record = ThreadOwner(threading.current_thread())
        return record


class Primitive:
    """Base of the facades: a validated ``name`` on a resolved ``backend``."""

    __slots__ = ("_backend", "_name")
    _kind: str = "name"

    def __init__(self, name: str, backend: Backend | str | None) -> None:
        self._name = check_name(name, self._kind)
        self._backend = resolve_backend(backend)

    @property
    def name(self) -> str:
        """The primitive's name (shared by every object of the same name on the backend)."""
        return self._name

    @property
    def backend(self) -> Backend:
        """The backend this primitive lives on."""
        return self._backend

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} on {self._backend.url}>"
