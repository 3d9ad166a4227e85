"""What every primitive facade shares: resolving its backend and checking its name."""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
from typing import Final

from unidist._names import check_name
from unidist.backends import connect
from unidist.backends.base import Backend
from unidist.cluster._current import current as current_member
from unidist.codec import JSON

HOST: Final = socket.gethostname()

_id_prefix = secrets.token_hex(8)
_id_seq = itertools.count(1)


def _new_id_prefix() -> None:
    global _id_prefix, _id_seq
    _id_prefix = secrets.token_hex(8)
    _id_seq = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


def unique_id() -> str:
    """A cheap id unique across processes and hosts: a random per-process prefix (renewed in
    a forked child) and a counter. Used for lock holders and request ids."""
    return f"{_id_prefix}{next(_id_seq):x}"


def resolve_backend(backend: Backend | str | None) -> Backend:
    """A Backend as given, the cached handle for a URL string, or the default backend."""
    if isinstance(backend, Backend):
        return backend
    if backend is None or isinstance(backend, str):
        return connect(backend)
    raise TypeError(
        f"backend must be a Backend, a URL string or None, not {type(backend).__name__}"
    )


def owner_info() -> dict[str, JSON]:
    """The owner record published with a lock grant: host, pid, thread name, and ``member``
    (the member id) and ``incarnation`` while a cluster membership is current."""
    info: dict[str, JSON] = {
        "host": HOST,
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
    }
    member = current_member()
    if member is not None:
        info["member"] = member.member_id
        info["incarnation"] = member.incarnation
    return info


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
