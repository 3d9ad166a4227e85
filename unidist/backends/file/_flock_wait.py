"""Prompt, non-spinning waits for the file backend's locks: inotify on slot and wake files.

The events that matter are all ``IN_CLOSE_WRITE`` (a writable descriptor's last close) or, for
a whole directory, also ``IN_MOVED_TO``:

* a release or the death of the holder (``kill -9``) closes the holder's writable descriptor of
  its slot file — the kernel emits the event when the last reference goes, so a forked child's
  copy closing does not count, but the holder process dying does;
* a hand-over, a cancelled wait, a lease steal or a break closes a writable descriptor of the
  wake file of the waiter concerned (see :mod:`.locks`);
* a steal or a break renames a fresh inode over ``slot-<i>`` (``IN_MOVED_TO`` on the directory).

While a waiter is registered, acquisition attempts open slot files read-only and a holder writes
its record through a descriptor it keeps open, so failed attempts and lease writes produce no
event (with no waiter registered, attempts open them read-write: nobody is watching then).

Closing an inotify instance is slow (the kernel waits for an SRCU grace period, milliseconds on
a busy host), so instances are pooled per process and reused: a wait borrows one, adds (or
re-adds, which is idempotent) its watches, removes the watches of earlier waits that it does
not need, drains stale events, and gives it back. A watch left in place would wake every later
wait on that instance (poll, read, ignore) for each event of a file it no longer cares about —
every other waiter's wake file, every release of a slot it once watched — which costs a loaded
host more than the lock itself. Removal can be slow under load, so it happens while arming,
before the re-check and the sleep, never between a wake-up and the caller's next attempt. A
forked child drops the pool it inherited.
Where inotify is unavailable (not Linux, or the libc lacks it) :func:`wait_for_change` sleeps a
short slice instead (spurious early returns are allowed by the interface).
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["DIR_MASK", "FILE_MASK", "inotify_available", "wait_for_change"]

IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
_IN_Q_OVERFLOW: Final = 0x00004000
_IN_ONLYDIR: Final = 0x01000000
_IN_DONT_FOLLOW: Final = 0x02000000
_EVENT = struct.Struct("iIII")
_READ_SIZE: Final = 16384
#: watches one pooled instance keeps before it drops them all (bounds kernel memory).
_MAX_WATCHES: Final = 256
#: seconds slept per call when inotify is unavailable.
FALLBACK_SLEEP: Final = 0.002

_api_lock = threading.Lock()
_api: tuple[Any, Any, Any] | None = None
_api_checked = False


def _load() -> tuple[Any, Any, Any] | None:
    """libc ``inotify_init1``, ``inotify_add_watch``, ``inotify_rm_watch``, or None."""
    global _api, _api_checked
    if _api_checked:
        return _api
    with _api_lock:
        if not _api_checked:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                init1 = libc.inotify_init1
                init1.argtypes = [ctypes.c_int]
                init1.restype = ctypes.c_int
                add = libc.inotify_add_watch
                add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
                add.restype = ctypes.c_int
                rm = libc.inotify_rm_watch
                rm.argtypes = [ctypes.c_int, ctypes.c_int]
                rm.restype = ctypes.c_int
                _api = (init1, add, rm)
            except (OSError, AttributeError):
                _api = None
            _api_checked = True
    return _api


def inotify_available() -> bool:
    """True when :func:`wait_for_change` is event-driven (Linux inotify) rather than polling."""
    return _load() is not None


class _Instance:
    """One inotify descriptor and the watch descriptors it holds."""

    __slots__ = ("fd", "poller", "watches")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.watches: set[int] = set()
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def drain(self, wds: set[int], once: bool = False) -> bool:
        """Read every queued event (``once``: one read's worth, the rest stays queued); True
        if one concerns ``wds`` (or the queue overflowed)."""
        hit = False
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return hit
            offset = 0
            while offset + _EVENT.size <= len(data):
                ev_wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if ev_wd in wds or mask & _IN_Q_OVERFLOW:
                    hit = True
            if once:
                return hit


_pool: list[_Instance] = []
_pool_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _pool_lock
    for inst in _pool:
        try:
            os.close(inst.fd)  # the parent still holds it: no teardown cost here
        except OSError:
            pass
    _pool.clear()
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _borrow(init1: Any) -> _Instance:
    with _pool_lock:
        if _pool:
            return _pool.pop()
    fd = int(init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return _Instance(fd)


def _give_back(inst: _Instance, rm_watch: Any) -> None:
    if len(inst.watches) > _MAX_WATCHES:
        for wd in inst.watches:
            rm_watch(inst.fd, wd)
        inst.watches.clear()
        inst.drain(set())
    with _pool_lock:
        _pool.append(inst)


#: mask for a directory watch: any slot freed (a writable descriptor closed) or renamed.
DIR_MASK: Final = IN_CLOSE_WRITE | IN_MOVED_TO | _IN_ONLYDIR | _IN_DONT_FOLLOW
#: mask for a file watch (a slot file, a waiter's wake file).
FILE_MASK: Final = IN_CLOSE_WRITE | _IN_DONT_FOLLOW


def wait_for_change(
    targets: list[tuple[str, int]], timeout: float, still_unchanged: Callable[[], bool]
) -> None:
    """Block until an event on one of ``targets`` (``(absolute path, mask)``), or ``timeout``.

    The watches are set up (and stale events drained) first, then ``still_unchanged()`` is
    asked whether the state the caller last saw is still current; if not, return at once. That
    closes the window between the caller's failed attempt and the watch: a change in that
    window is not lost.

    Args:
        targets: what to watch, e.g. the lock's directory with :data:`DIR_MASK` or slot and
            wake files with :data:`FILE_MASK`.
        timeout: seconds, at most.
        still_unchanged: re-check run once the watches are in place.

    Raises:
        OSError: inotify failed for a reason other than a missing file or directory.
    """
    if timeout <= 0:
        return
    api = _load()
    if api is None:
        if still_unchanged():
            time.sleep(min(timeout, FALLBACK_SLEEP))
        return
    init1, add_watch, rm_watch = api
    deadline = time.monotonic() + timeout
    inst = _borrow(init1)
    try:
        wds: set[int] = set()
        for path, mask in targets:
            wd = int(add_watch(inst.fd, os.fsencode(path), mask))
            if wd < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOENT, errno.ENOTDIR):
                    continue  # not created yet (or just renamed away): the re-check covers it
                raise OSError(err, os.strerror(err), path)
            wds.add(wd)
            inst.watches.add(wd)
        for wd in inst.watches - wds:
            rm_watch(inst.fd, wd)  # fails harmlessly if the kernel dropped it (file removed)
        inst.watches = set(wds)
        if not wds:
            time.sleep(min(timeout, FALLBACK_SLEEP))
            return
        inst.drain(wds)  # events from before this wait are stale: the caller re-checks below
        if not still_unchanged():
            return
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # One read after a wake-up: what it leaves queued wakes the next poll (or is
            # drained as stale by the next wait), and the caller's attempt comes sooner.
            if inst.poller.poll(math.ceil(left * 1000.0)) and inst.drain(wds, once=True):
                return
    finally:
        _give_back(inst, rm_watch)
