"""Thread-safe ``dict`` and ``list`` for the threads of one process.

`ThreadSafeDict` and `ThreadSafeList` have the full API of the built-in ``dict`` and ``list``,
and every single operation on them is atomic: it runs under the object's own reentrant lock
(`threading.RLock`), so no other thread can observe or interleave with half of it.

Several operations in a row are made atomic by holding the lock yourself::

    counts = ThreadSafeDict[str, int]()
    counts.transform("jobs", lambda n: (n or 0) + 1)   # one atomic read-modify-write
    with counts.locked():                               # a compound operation
        if "jobs" in counts and counts["jobs"] > 10:
            counts["jobs"] = 0

Iteration never sees concurrent changes: ``iter(d)``, ``d.keys()``, ``d.values()``,
``d.items()``, ``reversed(d)`` and ``iter(lst)`` work on a consistent copy taken atomically
when they are called. Views are therefore **snapshots, not live views**: they do not reflect
later changes, and changing the object while iterating over them never raises
``RuntimeError: dictionary changed size during iteration``.

Rules that keep the objects deadlock-free:

- An operation never holds the locks of two objects at once: when the other operand of
  ``==``, ``<``, ``|``, ``+``, ``update``, ``extend``... is a ThreadSafe object, it is
  copied first (under its own lock only), and the operation then runs under this object's lock.
- Arguments such as the iterable given to ``update``/``extend``/slice assignment are read in
  full before the lock is taken, so a failing iterable changes nothing.
- Callbacks (``transform``'s ``fn``, ``sort``'s ``key``) and the elements' own ``__eq__``,
  ``__hash__`` or ``__repr__`` run while the lock is held. They may use the same object (the
  lock is reentrant) but should not wait for other threads that use it.

This module imports nothing from the rest of unidist.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    MutableSequence,
    ValuesView,
)
from typing import TYPE_CHECKING, Any, ClassVar, SupportsIndex, TypeVar, overload

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from _typeshed import SupportsKeysAndGetItem, SupportsRichComparison
    from typing_extensions import Self

__all__ = ["ThreadSafeDict", "ThreadSafeList"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
S = TypeVar("S")
K2 = TypeVar("K2")
V2 = TypeVar("V2")
_SortableT = TypeVar("_SortableT", bound="SupportsRichComparison")


class _Missing:
    """Type of the `_MISSING` sentinel: "no default given" (``None`` is a valid default)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _dict_of(other: object) -> dict[Any, Any] | None:
    """A plain dict with the items of a mapping, or None when ``other`` is not a mapping.

    A `ThreadSafeDict` is copied under its own lock; a plain ``dict`` is returned as is.
    """
    if isinstance(other, ThreadSafeDict):
        return other.snapshot()
    if isinstance(other, dict):
        return other
    if isinstance(other, Mapping):
        return dict(other.items())
    return None


def _list_of(other: object) -> list[Any] | None:
    """A plain list for a list or `ThreadSafeList`, or None for any other type.

    A `ThreadSafeList` is copied under its own lock; a plain ``list`` is returned as is.
    """
    if isinstance(other, ThreadSafeList):
        return other.snapshot()
    if isinstance(other, list):
        return other
    return None


def _attach_lock(obj: ThreadSafeDict[Any, Any] | ThreadSafeList[Any]) -> None:
    """Give ``obj`` its own lock.

    Why an RLock, and why ``with self._lock`` in every method (measured on CPython 3.11):

    - ``threading.RLock`` is implemented in C and costs the same as ``threading.Lock`` here, so
      single operations lose nothing by being reentrant, which ``locked()`` needs (operations
      on the object inside ``with obj.locked():`` take the lock again).
    - Calling pre-bound ``lock.acquire``/``lock.release`` in ``try/finally`` is about 20 %
      faster with one thread, but 4-5x slower with 4 threads: the interpreter may hand the GIL
      to another thread right after a call returns, i.e. right after ``acquire()``, while the
      lock is held, and the other threads then queue on the lock. The ``with`` statement
      acquires without such a switch point, so a one-key operation holds the lock only while
      its thread keeps the GIL.
    """
    obj._lock = threading.RLock()


def _wrap_dict(data: dict[K, V]) -> ThreadSafeDict[K, V]:
    """A new `ThreadSafeDict` that owns ``data`` (no copy: the caller gives it up)."""
    new: ThreadSafeDict[K, V] = object.__new__(ThreadSafeDict)
    new._data = data
    _attach_lock(new)
    return new


def _wrap_list(data: list[T]) -> ThreadSafeList[T]:
    """A new `ThreadSafeList` that owns ``data`` (no copy: the caller gives it up)."""
    new: ThreadSafeList[T] = object.__new__(ThreadSafeList)
    new._data = data
    _attach_lock(new)
    return new


class ThreadSafeDict(MutableMapping[K, V]):
    """A ``dict`` whose every operation is atomic across threads.

    It has the whole ``dict`` API (``d[k]``, ``get``, ``setdefault``, ``pop``, ``popitem``,
    ``update``, ``keys``/``values``/``items``, ``clear``, ``copy``, ``fromkeys``, ``|``,
    ``|=``, ``reversed``...), keeps insertion order, and compares equal to a ``dict`` or
    another mapping with the same items. Each method runs under one internal
    `threading.RLock`, so it is atomic; errors are those of ``dict`` (``KeyError`` for a
    missing key in ``d[k]``, ``del d[k]``, ``pop(k)`` without default and ``popitem()`` on
    an empty dict; ``TypeError`` for an unhashable key).

    Extras:

    - `transform` is an atomic read-modify-write of one key.
    - `locked` holds the lock for a compound operation (reentrant: the same thread may use
      the dict, or nest ``locked()``, inside the block).
    - `snapshot` returns a plain ``dict`` copy taken atomically.

    Iteration (``iter(d)``, ``keys()``, ``values()``, ``items()``, ``reversed(d)``) works on a
    copy taken atomically: the views are snapshots, not live views, and the dict may be
    changed while they are iterated. Note that the built-in ``dict(d)`` reads the keys, then
    each value, in separate steps (a concurrent delete makes it raise ``KeyError``): use
    ``d.snapshot()`` for a consistent plain copy.

    Example:
        >>> d = ThreadSafeDict(a=1)
        >>> d.transform("a", lambda v: v + 1)
        2
        >>> d
        ThreadSafeDict({'a': 2})
    """

    __slots__ = ("__weakref__", "_data", "_lock")
    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable: unhashable, like dict

    _data: dict[K, V]
    _lock: threading.RLock

    @overload
    def __init__(self, /) -> None: ...
    @overload
    def __init__(self: ThreadSafeDict[str, V], /, **kwargs: V) -> None: ...
    @overload
    def __init__(self, data: SupportsKeysAndGetItem[K, V], /) -> None: ...
    @overload
    def __init__(
        self: ThreadSafeDict[str, V], data: SupportsKeysAndGetItem[str, V], /, **kwargs: V
    ) -> None: ...
    @overload
    def __init__(self, data: Iterable[tuple[K, V]], /) -> None: ...
    @overload
    def __init__(
        self: ThreadSafeDict[str, V], data: Iterable[tuple[str, V]], /, **kwargs: V
    ) -> None: ...
    def __init__(self, data: Any = (), /, **kwargs: Any) -> None:
        """Create the dict like ``dict(data, **kwargs)``.

        Args:
            data: a mapping (a `ThreadSafeDict` is copied atomically) or an iterable of
                key/value pairs.
            **kwargs: more items, with string keys.

        Raises:
            TypeError, ValueError: as ``dict()`` does for malformed arguments.
        """
        if isinstance(data, ThreadSafeDict):
            data = data.snapshot()
        self._data = dict(data, **kwargs)
        _attach_lock(self)

    # -- locking and copies ------------------------------------------------------------

    def locked(self) -> AbstractContextManager[bool]:
        """Hold the dict's lock for a compound operation: ``with d.locked(): ...``.

        Other threads block on any operation on this dict until the block exits. The lock is
        reentrant: inside the block this thread may use the dict and nest ``locked()``.
        Holding the locks of two ThreadSafe objects in opposite orders in two threads
        deadlocks, as with any pair of locks.

        Returns:
            A context manager (the lock itself; ``as`` binds ``True``).
        """
        return self._lock

    def snapshot(self) -> dict[K, V]:
        """Return a plain ``dict`` copy of the items, taken atomically."""
        with self._lock:
            return self._data.copy()

    def copy(self) -> ThreadSafeDict[K, V]:
        """Return a new, independent `ThreadSafeDict` with the same items (shallow copy)."""
        with self._lock:
            data = self._data.copy()
        return _wrap_dict(data)

    __copy__ = copy

    def __reduce__(self) -> tuple[Any, ...]:
        """Support ``copy.deepcopy`` and pickle through a snapshot of the items."""
        return (type(self), (self.snapshot(),))

    @classmethod
    @overload
    def fromkeys(cls, iterable: Iterable[T], value: None = None, /) -> ThreadSafeDict[T, Any]: ...
    @classmethod
    @overload
    def fromkeys(cls, iterable: Iterable[T], value: S, /) -> ThreadSafeDict[T, S]: ...
    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None, /) -> ThreadSafeDict[Any, Any]:
        """Return a new `ThreadSafeDict` with keys from ``iterable``, each set to ``value``."""
        return _wrap_dict(dict.fromkeys(iterable, value))

    # -- single-key operations (the hot paths: keep them lean) -------------------------

    def __getitem__(self, key: K) -> V:
        """Return ``d[key]``; raise ``KeyError`` when the key is absent."""
        with self._lock:
            return self._data[key]

    def __setitem__(self, key: K, value: V) -> None:
        """Set ``d[key] = value``."""
        with self._lock:
            self._data[key] = value

    def __delitem__(self, key: K) -> None:
        """Delete ``d[key]``; raise ``KeyError`` when the key is absent."""
        with self._lock:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        """Return whether ``key`` is in the dict."""
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        """Return the number of items."""
        with self._lock:
            return len(self._data)

    @overload
    def get(self, key: K, default: None = None, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V, /) -> V: ...
    @overload
    def get(self, key: K, default: T, /) -> V | T: ...
    def get(self, key: K, default: Any = None, /) -> Any:
        """Return ``d[key]`` if the key is present, else ``default``."""
        with self._lock:
            return self._data.get(key, default)

    @overload
    def transform(self, key: K, fn: Callable[[V | None], V], default: None = None) -> V: ...
    @overload
    def transform(self, key: K, fn: Callable[[V], V], default: V) -> V: ...
    def transform(self, key: K, fn: Callable[[Any], V], default: Any = None) -> V:
        """Atomically set ``d[key] = fn(d.get(key, default))`` and return the new value.

        ``fn`` runs under the lock, so no other thread changes or reads the key in between.

        Args:
            key: the key to update (created when absent).
            fn: computes the new value from the current one (or ``default``).
            default: the value given to ``fn`` when the key is absent.

        Returns:
            The new value.

        Raises:
            Exception: whatever ``fn`` raises; the dict is then left unchanged.
        """
        with self._lock:  # one statement, the fewest bytecodes: this is a hot path
            self._data[key] = new = fn(self._data.get(key, default))
        return new

    @overload
    def setdefault(
        self: ThreadSafeDict[K, T | None], key: K, default: None = None, /
    ) -> T | None: ...
    @overload
    def setdefault(self, key: K, default: V, /) -> V: ...
    def setdefault(self, key: K, default: Any = None, /) -> Any:
        """Return ``d[key]``, first setting it to ``default`` when absent (atomically)."""
        with self._lock:
            return self._data.setdefault(key, default)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V, /) -> V: ...
    @overload
    def pop(self, key: K, default: T, /) -> V | T: ...
    def pop(self, key: K, default: Any = _MISSING, /) -> Any:
        """Remove ``key`` and return its value, or ``default`` when the key is absent.

        Raises:
            KeyError: the key is absent and no default is given.
        """
        with self._lock:
            if default is _MISSING:
                return self._data.pop(key)
            return self._data.pop(key, default)

    def popitem(self) -> tuple[K, V]:
        """Remove and return the last inserted ``(key, value)`` pair (LIFO, like ``dict``).

        Raises:
            KeyError: the dict is empty.
        """
        with self._lock:
            return self._data.popitem()

    # -- whole-dict operations ---------------------------------------------------------

    @overload
    def update(self, m: SupportsKeysAndGetItem[K, V], /) -> None: ...
    @overload
    def update(
        self: ThreadSafeDict[str, V], m: SupportsKeysAndGetItem[str, V], /, **kwargs: V
    ) -> None: ...
    @overload
    def update(self, m: Iterable[tuple[K, V]], /) -> None: ...
    @overload
    def update(
        self: ThreadSafeDict[str, V], m: Iterable[tuple[str, V]], /, **kwargs: V
    ) -> None: ...
    @overload
    def update(self: ThreadSafeDict[str, V], /, **kwargs: V) -> None: ...
    def update(self, m: Any = (), /, **kwargs: Any) -> None:
        """Add the items of a mapping or iterable of pairs, then ``kwargs``, atomically.

        The argument is read in full before the lock is taken: when it raises (for example a
        malformed pair), the dict is left unchanged.

        Raises:
            TypeError, ValueError: as ``dict.update`` does for a malformed argument.
        """
        if isinstance(m, ThreadSafeDict):
            m = m.snapshot()
        new = dict(m, **kwargs)
        with self._lock:
            self._data.update(new)

    def clear(self) -> None:
        """Remove all items."""
        with self._lock:
            self._data.clear()

    def keys(self) -> KeysView[K]:
        """Return a snapshot of the keys (a ``dict_keys`` of a copy, not a live view)."""
        with self._lock:
            return self._data.copy().keys()

    def values(self) -> ValuesView[V]:
        """Return a snapshot of the values (a ``dict_values`` of a copy, not a live view)."""
        with self._lock:
            return self._data.copy().values()

    def items(self) -> ItemsView[K, V]:
        """Return a snapshot of the items (a ``dict_items`` of a copy, not a live view)."""
        with self._lock:
            return self._data.copy().items()

    def __iter__(self) -> Iterator[K]:
        """Iterate over a snapshot of the keys, taken atomically; the dict may change meanwhile."""
        with self._lock:
            keys = list(self._data)
        return iter(keys)

    def __reversed__(self) -> Iterator[K]:
        """Iterate in reverse insertion order over a snapshot of the keys."""
        with self._lock:
            keys = list(self._data)
        return reversed(keys)

    @overload
    def __or__(self, other: Mapping[K, V], /) -> ThreadSafeDict[K, V]: ...
    @overload
    def __or__(self, other: Mapping[K2, V2], /) -> ThreadSafeDict[K | K2, V | V2]: ...
    def __or__(self, other: Mapping[Any, Any], /) -> ThreadSafeDict[Any, Any]:
        """Return a new `ThreadSafeDict` with the items of ``self`` then ``other`` (``d | m``)."""
        data = _dict_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            new: dict[Any, Any] = dict(self._data)
        new.update(data)
        return _wrap_dict(new)

    @overload
    def __ror__(self, other: Mapping[K, V], /) -> ThreadSafeDict[K, V]: ...
    @overload
    def __ror__(self, other: Mapping[K2, V2], /) -> ThreadSafeDict[K | K2, V | V2]: ...
    def __ror__(self, other: Mapping[Any, Any], /) -> ThreadSafeDict[Any, Any]:
        """Return a new `ThreadSafeDict` with the items of ``other`` then ``self`` (``m | d``)."""
        data = _dict_of(other)
        if data is None:
            return NotImplemented
        new: dict[Any, Any] = dict(data)
        with self._lock:
            new.update(self._data)
        return _wrap_dict(new)

    # ``|=`` keeps K and V (like dict) while ``|`` may widen them, which mypy reports as
    # incompatible signatures; typeshed's dict and set make the same choice.
    @overload  # type: ignore[misc]
    def __ior__(self, other: SupportsKeysAndGetItem[K, V], /) -> Self: ...
    @overload
    def __ior__(self, other: Iterable[tuple[K, V]], /) -> Self: ...
    def __ior__(self, other: Any, /) -> Self:  # type: ignore[misc]
        """Update in place from a mapping or iterable of pairs (``d |= m``), atomically."""
        self.update(other)
        return self

    def __eq__(self, other: object) -> bool:
        """Return whether ``other`` is a mapping with the same items (order is ignored)."""
        if other is self:
            return True
        data = _dict_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            return self._data == data

    def __repr__(self) -> str:
        """Return ``ThreadSafeDict({...})``."""
        with self._lock:
            return f"{type(self).__name__}({self._data!r})"


class ThreadSafeList(MutableSequence[T]):
    """A ``list`` whose every operation is atomic across threads.

    It has the whole ``list`` API (indexing and slicing to get, set and delete, ``append``,
    ``extend``, ``insert``, ``remove``, ``pop``, ``index``, ``count``, ``sort``, ``reverse``,
    ``clear``, ``copy``, ``+``, ``+=``, ``*``, ``*=``, ``<``/``<=``/``>``/``>=``, ``in``,
    ``reversed``...) and compares equal to a ``list`` with the same items. Each method runs
    under one internal `threading.RLock`, so it is atomic; errors are those of ``list``
    (``IndexError`` for an index out of range or ``pop`` on an empty list, ``ValueError``
    from ``remove``/``index`` when the value is absent or from an extended-slice assignment
    of the wrong length, ``TypeError`` for a bad index).

    A slice (``lst[1:3]``), ``copy()``, ``lst + other`` and ``lst * n`` return a new
    `ThreadSafeList`. `transform` is an atomic read-modify-write of one position, `locked`
    holds the lock for a compound operation (reentrant), `snapshot` returns a plain ``list``.

    ``iter(lst)`` and ``reversed(lst)`` work on a copy taken atomically: the list may be
    changed while they are iterated, and they do not see the change.

    Example:
        >>> lst = ThreadSafeList([3, 1, 2])
        >>> lst.sort()
        >>> lst.transform(0, lambda v: v * 10)
        10
        >>> lst
        ThreadSafeList([10, 2, 3])
    """

    __slots__ = ("__weakref__", "_data", "_lock")
    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable: unhashable, like dict

    _data: list[T]
    _lock: threading.RLock

    def __init__(self, iterable: Iterable[T] = (), /) -> None:
        """Create the list like ``list(iterable)`` (a `ThreadSafeList` is copied atomically)."""
        self._data = list(iterable)
        _attach_lock(self)

    # -- locking and copies ------------------------------------------------------------

    def locked(self) -> AbstractContextManager[bool]:
        """Hold the list's lock for a compound operation: ``with lst.locked(): ...``.

        Other threads block on any operation on this list until the block exits. The lock is
        reentrant: inside the block this thread may use the list and nest ``locked()``.
        Holding the locks of two ThreadSafe objects in opposite orders in two threads
        deadlocks, as with any pair of locks.

        Returns:
            A context manager (the lock itself; ``as`` binds ``True``).
        """
        return self._lock

    def snapshot(self) -> list[T]:
        """Return a plain ``list`` copy of the items, taken atomically."""
        with self._lock:
            return self._data.copy()

    def copy(self) -> ThreadSafeList[T]:
        """Return a new, independent `ThreadSafeList` with the same items (shallow copy)."""
        with self._lock:
            data = self._data.copy()
        return _wrap_list(data)

    __copy__ = copy

    def __reduce__(self) -> tuple[Any, ...]:
        """Support ``copy.deepcopy`` and pickle through a snapshot of the items."""
        return (type(self), (self.snapshot(),))

    # -- indexing and slicing ----------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> ThreadSafeList[T]: ...
    def __getitem__(self, index: int | slice) -> T | ThreadSafeList[T]:
        """Return ``lst[index]``, or a new `ThreadSafeList` for a slice.

        Raises:
            IndexError: the index is out of range.
            TypeError: the index is neither an integer nor a slice.
        """
        if isinstance(index, slice):
            with self._lock:
                part = self._data[index]
            return _wrap_list(part)
        with self._lock:
            return self._data[index]

    @overload
    def __setitem__(self, index: int, value: T) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Iterable[T]) -> None: ...
    def __setitem__(self, index: int | slice, value: Any) -> None:
        """Set ``lst[index] = value``, or replace a slice with the items of an iterable.

        The iterable is read in full before the lock is taken.

        Raises:
            IndexError: the index is out of range.
            ValueError: an extended slice (step other than 1) gets a different number of items.
            TypeError: the index is neither an integer nor a slice, or a slice gets a
                non-iterable.
        """
        if isinstance(index, slice):
            value = list(value)
        with self._lock:
            self._data[index] = value

    @overload
    def __delitem__(self, index: int) -> None: ...
    @overload
    def __delitem__(self, index: slice) -> None: ...
    def __delitem__(self, index: int | slice) -> None:
        """Delete ``lst[index]`` or a slice.

        Raises:
            IndexError: the index is out of range.
        """
        with self._lock:
            del self._data[index]

    def transform(self, index: int, fn: Callable[[T], T]) -> T:
        """Atomically set ``lst[index] = fn(lst[index])`` and return the new value.

        Raises:
            IndexError: the index is out of range.
            Exception: whatever ``fn`` raises; the list is then left unchanged.
        """
        with self._lock:
            self._data[index] = new = fn(self._data[index])
        return new

    def __len__(self) -> int:
        """Return the number of items."""
        with self._lock:
            return len(self._data)

    def __contains__(self, value: object) -> bool:
        """Return whether an item equals ``value``."""
        with self._lock:
            return value in self._data

    def __iter__(self) -> Iterator[T]:
        """Iterate over a snapshot taken atomically; the list may change meanwhile."""
        with self._lock:
            data = self._data.copy()
        return iter(data)

    def __reversed__(self) -> Iterator[T]:
        """Iterate backwards over a snapshot taken atomically."""
        with self._lock:
            data = self._data.copy()
        return reversed(data)

    # -- list methods ------------------------------------------------------------------

    def append(self, value: T) -> None:
        """Add ``value`` at the end."""
        with self._lock:
            self._data.append(value)

    def extend(self, values: Iterable[T]) -> None:
        """Add the items of ``values`` at the end, all at once.

        The iterable is read in full before the lock is taken (so ``lst.extend(lst)``
        doubles the list, and a failing iterable changes nothing).
        """
        items = list(values)
        with self._lock:
            self._data.extend(items)

    def insert(self, index: int, value: T) -> None:
        """Insert ``value`` before ``index`` (clamped to the list like ``list.insert``)."""
        with self._lock:
            self._data.insert(index, value)

    def pop(self, index: int = -1) -> T:
        """Remove and return the item at ``index`` (the last by default).

        Raises:
            IndexError: the list is empty or the index is out of range.
        """
        with self._lock:
            return self._data.pop(index)

    def remove(self, value: T) -> None:
        """Remove the first item equal to ``value``.

        Raises:
            ValueError: no item equals ``value``.
        """
        with self._lock:
            self._data.remove(value)

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex = sys.maxsize) -> int:
        """Return the position of the first item equal to ``value`` in ``lst[start:stop]``.

        Raises:
            ValueError: no such item.
        """
        with self._lock:
            return self._data.index(value, start, stop)

    def count(self, value: Any) -> int:
        """Return how many items equal ``value``."""
        with self._lock:
            return self._data.count(value)

    @overload
    def sort(
        self: ThreadSafeList[_SortableT], *, key: None = None, reverse: bool = False
    ) -> None: ...
    @overload
    def sort(
        self, *, key: Callable[[T], SupportsRichComparison], reverse: bool = False
    ) -> None: ...
    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        """Sort in place, stably (``key`` runs under the lock).

        Raises:
            TypeError: items cannot be compared.
        """
        with self._lock:
            self._data.sort(key=key, reverse=reverse)

    def reverse(self) -> None:
        """Reverse the items in place."""
        with self._lock:
            self._data.reverse()

    def clear(self) -> None:
        """Remove all items."""
        with self._lock:
            self._data.clear()

    # -- operators ---------------------------------------------------------------------

    def __add__(self, other: ThreadSafeList[T] | list[T]) -> ThreadSafeList[T]:
        """Return a new `ThreadSafeList`: ``self`` followed by a list or `ThreadSafeList`."""
        data = _list_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            new = self._data + data
        return _wrap_list(new)

    def __radd__(self, other: list[T]) -> ThreadSafeList[T]:
        """Return a new `ThreadSafeList`: a list followed by ``self``."""
        data = _list_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            new = data + self._data
        return _wrap_list(new)

    def __iadd__(self, values: Iterable[T]) -> Self:
        """Extend in place with any iterable (``lst += it``), atomically."""
        self.extend(values)
        return self

    def __mul__(self, n: SupportsIndex) -> ThreadSafeList[T]:
        """Return a new `ThreadSafeList` with the items repeated ``n`` times."""
        with self._lock:
            new = self._data * n
        return _wrap_list(new)

    __rmul__ = __mul__

    def __imul__(self, n: SupportsIndex) -> Self:
        """Repeat the items in place ``n`` times (``lst *= n``)."""
        with self._lock:
            self._data *= n
        return self

    def __eq__(self, other: object) -> bool:
        """Return whether ``other`` is a list or `ThreadSafeList` with equal items."""
        if other is self:
            return True
        data = _list_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            return self._data == data

    def __lt__(self, other: ThreadSafeList[T] | list[T]) -> bool:
        """Compare lexicographically with a list or `ThreadSafeList`, like ``list``."""
        data = _list_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            return self._data < data

    def __le__(self, other: ThreadSafeList[T] | list[T]) -> bool:
        """Compare lexicographically with a list or `ThreadSafeList`, like ``list``."""
        data = _list_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            return self._data <= data

    def __gt__(self, other: ThreadSafeList[T] | list[T]) -> bool:
        """Compare lexicographically with a list or `ThreadSafeList`, like ``list``."""
        data = _list_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            return self._data > data

    def __ge__(self, other: ThreadSafeList[T] | list[T]) -> bool:
        """Compare lexicographically with a list or `ThreadSafeList`, like ``list``."""
        data = _list_of(other)
        if data is None:
            return NotImplemented
        with self._lock:
            return self._data >= data

    def __repr__(self) -> str:
        """Return ``ThreadSafeList([...])``."""
        with self._lock:
            return f"{type(self).__name__}({self._data!r})"
