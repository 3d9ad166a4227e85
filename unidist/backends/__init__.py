"""Backend registry: URL scheme → backend class, imported on first use.

``connect(url)`` returns one backend object per URL per process: a cached, thread-safe handle
shared by every primitive naming that URL. After ``os.fork()`` the child gets fresh handles
(a parent's connections, file descriptors and lock registrations are never reused).
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Final

from unidist.backends._url import redact
from unidist.backends.base import Backend, Delivery, LockGrant
from unidist.errors import InvalidURL

__all__ = ["Backend", "Delivery", "LockGrant", "connect", "default_url", "register", "reset"]

DEFAULT_URL: Final = "memory://"

_REGISTRY: dict[str, str] = {
    "memory": "unidist.backends.memory:MemoryBackend",
    "file": "unidist.backends.file:FileBackend",
    "redis": "unidist.backends.redis:RedisBackend",
    "rediss": "unidist.backends.redis:RedisBackend",
    "unix": "unidist.backends.redis:RedisBackend",
    "redis+sentinel": "unidist.backends.redis:RedisBackend",
    "redis+cluster": "unidist.backends.redis:RedisBackend",
}

_cache: dict[str, Backend] = {}
_cache_lock = threading.Lock()


def register(scheme: str, target: str) -> None:
    """Map URL ``scheme`` to ``"package.module:Class"`` (a :class:`Backend` subclass)."""
    with _cache_lock:
        _REGISTRY[scheme] = target


def default_url() -> str:
    """``$UNIDIST_URL`` if set and non-empty, else ``memory://``."""
    return os.environ.get("UNIDIST_URL") or DEFAULT_URL


def _backend_class(url: str) -> type[Backend]:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise InvalidURL(
            f"backend URL {redact(url)!r} has no scheme; use one of: "
            + ", ".join(f"{s}://" for s in sorted(_REGISTRY))
        )
    target = _REGISTRY.get(scheme.lower())
    if target is None:
        raise InvalidURL(
            f"unknown backend scheme {scheme!r} in {redact(url)!r}; known: "
            + ", ".join(f"{s}://" for s in sorted(_REGISTRY))
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidURL(f"{target} registered for {scheme}:// is not a Backend subclass")
    return cls


def connect(url: str | None = None) -> Backend:
    """Return the process-wide backend handle for ``url``.

    Args:
        url: a backend URL (``memory://``, ``file:///dir``, ``redis://host:6379/0``,
            ``rediss://...``); None means ``$UNIDIST_URL``, else ``memory://``.

    Raises:
        InvalidURL: unknown scheme or option (named in the message).
        BackendUnavailable: the backend cannot be used (unwritable directory, ...). Network
            backends connect lazily or with a short timeout; see each backend's docs.
    """
    if url is None:
        url = default_url()
    if not isinstance(url, str):
        raise InvalidURL(f"backend URL must be a str, not {type(url).__name__}")
    backend = _cache.get(url)
    if backend is not None:
        return backend
    cls = _backend_class(url)
    with _cache_lock:
        backend = _cache.get(url)
        if backend is None:
            backend = cls.from_url(url)
            _cache[url] = backend
    return backend


def reset() -> None:
    """Close and forget every cached backend handle (tests, long-running reconfiguration)."""
    with _cache_lock:
        handles = list(_cache.values())
        _cache.clear()
    for handle in handles:
        handle.close()


def _after_fork_in_child() -> None:
    # The child must not share the parent's sockets, descriptors or locks. Drop the cache
    # without closing (closing could release flocks or send QUITs on the parent's behalf).
    global _cache_lock
    _cache.clear()
    _cache_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
