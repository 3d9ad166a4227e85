"""``SharedState``: a named bucket of str → JSON values shared by threads, processes or hosts."""

from __future__ import annotations

import random
import time
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any, Final, TypeVar, overload

from unidist._facade import Primitive
from unidist.backends.base import STATE_ABSENT, Backend
from unidist.codec import JSON, decode, encode
from unidist.errors import SerializationError

__all__ = ["SharedState"]

_T = TypeVar("_T")
_MISSING: Final = object()
MAX_KEY_BYTES: Final = 64 * 1024


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"state keys must be str, not {type(key).__name__}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SerializationError(f"state key {key!r} is not valid unicode text") from exc
    if size > MAX_KEY_BYTES:
        raise ValueError(f"state key is {size} bytes long; the limit is {MAX_KEY_BYTES}")
    return key


class SharedState(Primitive, MutableMapping[str, JSON]):
    """A bucket: a ``MutableMapping`` of ``str`` keys to JSON values, shared on a backend.

    Every single operation is atomic. Reads return copies: mutating a returned list or dict
    changes nothing stored; write it back (or use :meth:`transform`). Iteration, ``keys()``,
    ``values()`` and ``items()`` work on one consistent copy of the bucket taken at the call.

    Keys are any ``str`` (the empty string included) up to 64 KiB of UTF-8. Values are JSON
    (see :mod:`unidist.codec`): object key order is not kept and tuples come back as lists.
    A value that is not JSON raises :class:`unidist.SerializationError` and stores nothing.

    Example::

        cfg = unidist.SharedState("config", backend="file:///var/lib/unidist")
        cfg["retries"] = 3
        cfg.transform("deploys", lambda n: n + 1, default=0)

    Raises (every method):
        BackendUnavailable: the backend cannot be reached.
        CorruptData: stored data failed its integrity check.
    """

    __slots__ = ()
    _kind = "bucket name"

    def __init__(self, bucket: str, backend: Backend | str | None = None) -> None:
        super().__init__(bucket, backend)

    # ------------------------------------------------------------------ Mapping core
    def __getitem__(self, key: str) -> JSON:
        raw = self._backend.state_get(self._name, _check_key(key))
        if raw is None:
            raise KeyError(key)
        return decode(raw)

    def __setitem__(self, key: str, value: JSON) -> None:
        self._backend.state_set(self._name, _check_key(key), encode(value))

    def __delitem__(self, key: str) -> None:
        if self._backend.state_delete(self._name, _check_key(key)) is None:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._backend.state_get(self._name, _check_key(key)) is not None

    def __len__(self) -> int:
        return self._backend.state_len(self._name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._backend.state_items(self._name)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.snapshot() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ consistent copies
    def snapshot(self) -> dict[str, JSON]:
        """A plain ``dict`` copy of the whole bucket, taken atomically."""
        where = f"bucket {self._name!r}"
        return {k: decode(v, where=where) for k, v in self._backend.state_items(self._name).items()}

    def keys(self) -> KeysView[str]:
        """The keys of one consistent copy of the bucket."""
        return self.snapshot().keys()

    def values(self) -> ValuesView[JSON]:
        """The values of one consistent copy of the bucket."""
        return self.snapshot().values()

    def items(self) -> ItemsView[str, JSON]:
        """The (key, value) pairs of one consistent copy of the bucket."""
        return self.snapshot().items()

    # ------------------------------------------------------------------ convenience
    @overload
    def get(self, key: str, /) -> JSON: ...
    @overload
    def get(self, key: str, /, default: JSON | _T) -> JSON | _T: ...
    def get(self, key: str, /, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when absent."""
        raw = self._backend.state_get(self._name, _check_key(key))
        return default if raw is None else decode(raw)

    def pop(self, key: str, /, default: Any = _MISSING) -> Any:
        """Remove ``key`` atomically and return its value (``default``, or KeyError, if absent)."""
        raw = self._backend.state_delete(self._name, _check_key(key))
        if raw is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return decode(raw)

    def popitem(self) -> tuple[str, JSON]:
        """Remove and return some (key, value) pair atomically; KeyError when empty."""
        while True:
            items = self._backend.state_items(self._name)
            if not items:
                raise KeyError("popitem(): bucket is empty")
            key = next(iter(items))
            raw = self._backend.state_delete(self._name, key)
            if raw is not None:
                return key, decode(raw)

    def setdefault(self, key: str, default: JSON = None, /) -> JSON:  # type: ignore[override]
        """Return the value of ``key``; if absent, store ``default`` atomically and return it."""
        _check_key(key)
        new = encode(default)
        while True:
            raw = self._backend.state_get(self._name, key)
            if raw is not None:
                return decode(raw)
            if self._backend.state_cas(self._name, key, STATE_ABSENT, new):
                return default

    def update(self, other: Any = (), /, **kwargs: JSON) -> None:
        """Store every pair at once (all or none; every value is checked before any is stored).

        Raises:
            SerializationError: a value is not JSON; nothing is stored.
        """
        pairs: Iterable[tuple[str, JSON]]
        if isinstance(other, Mapping):
            pairs = other.items()
        elif hasattr(other, "keys"):
            pairs = ((k, other[k]) for k in other.keys())  # noqa: SIM118 - any .keys() mapping
        else:
            pairs = other
        encoded = {_check_key(k): encode(v) for k, v in pairs}
        encoded.update({_check_key(k): encode(v) for k, v in kwargs.items()})
        if encoded:
            self._backend.state_update(self._name, encoded)

    def clear(self) -> None:
        """Remove every key of the bucket atomically."""
        self._backend.state_clear(self._name)

    # ------------------------------------------------------------------ atomic updates
    def compare_and_set(self, key: str, expected: JSON, new: JSON) -> bool:
        """Store ``new`` under ``key`` only if the current value equals ``expected``.

        ``expected=None`` matches an absent key or a stored ``null``. Equality is JSON
        equality of the canonical encoding (``1`` and ``1.0`` differ, as do ``1`` and ``True``).

        Returns:
            True if ``new`` was stored, False if the value differed (nothing changed).

        Raises:
            SerializationError: ``expected`` or ``new`` is not JSON.
        """
        _check_key(key)
        exp = None if expected is None else encode(expected)
        return self._backend.state_cas(self._name, key, exp, encode(new))

    def transform(self, key: str, fn: Callable[[Any], JSON], default: JSON = None) -> JSON:
        """Atomically replace the value of ``key`` with ``fn(current)`` and return it.

        ``current`` is the stored value, or ``default`` when the key is absent (a stored
        ``null`` is passed as ``None``, not as ``default``). The update is an optimistic
        compare-and-set loop that writes only if the key still holds exactly what ``fn`` was
        given (still absent, for ``default``): ``fn`` may be called more than once under
        contention (keep it free of side effects), and no concurrent update is ever lost.

        Raises:
            SerializationError: ``fn`` returned a non-JSON value; nothing is stored.
            Whatever ``fn`` raises, with nothing stored.
        """
        _check_key(key)
        attempt = 0
        while True:
            raw = self._backend.state_get(self._name, key)
            current = default if raw is None else decode(raw)
            new = fn(current)
            expected = STATE_ABSENT if raw is None else raw  # absent only, never a new null
            if self._backend.state_cas(self._name, key, expected, encode(new)):
                return new
            attempt += 1
            if attempt > 3:
                time.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
