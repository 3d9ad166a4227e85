"""What every primitive facade shares: resolving its backend and checking its name."""

from __future__ import annotations

import os
import socket
import threading
from typing import Final

from unidist._names import check_name
from unidist.backends import connect
from unidist.backends.base import Backend
from unidist.codec import JSON

HOST: Final = socket.gethostname()


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
    """The owner record published with a lock grant: host, pid and thread name."""
    info: dict[str, JSON] = {
        "host": HOST,
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
    }
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
