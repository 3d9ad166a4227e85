"""Locks and semaphores of the file backend: flock slots, lease records, fencing tokens.

Layout below ``<root>/locks/<name>/`` (directories 0700, files 0600, every open ``O_NOFOLLOW``
and relative to the lock's directory descriptor):

* ``meta`` — the lock's mutex and persistent state (:mod:`._flock_meta`): fencing-token
  reservations, a wake-up epoch and the FIFO waiter registrations. Every operation that changes
  the lock runs under a short exclusive ``flock`` on it (except a release with no waiter, and a
  waiter's claim: see Release and Hand-over), plus an in-process mutex (threads of one process
  share the cached descriptor, and flock does not tell them apart).
* ``slot-<i>`` for ``i < limit`` — one slot each. Its first line is a state byte and the lease
  record (JSON: the ``info`` record, ``holder``, ``token``, ``acquired_at``, ``expires_at`` and
  the monotonic expiry); an empty first line means no record.
* ``wake-<k>`` — empty files whose ``IN_CLOSE_WRITE`` wakes one waiter (see Waiting).

Holding a slot. The holder of slot ``i`` is the open file description that holds
``flock(LOCK_EX)`` on the inode *currently linked* at ``slot-<i>``. Each acquisition opens the
file afresh (so two acquisitions in one thread contend, and closing one never drops another's
lock) and writes its lease record through a writable descriptor it keeps: when no waiter is
registered it opens the slot read-write, one descriptor for both; otherwise it opens it
read-only and, once it won the flock, a second, write-only one (a failed attempt's close then
wakes no waiter watching the slot). The kernel drops the flock when the holder process dies, so
a dead holder's slot is free at once. ``fcntl``/``lockf`` record locks are never used.

Lease rule (which wins). Judged under the meta flock with ``time.monotonic()`` (one clock for
all processes of the host; a wall-clock jump never expires a lease):

1. flock free (``LOCK_NB`` succeeds) → the slot is free, whatever the record says (released,
   never taken, or the holder died) — except a *hand-over* record (state ``~``, below) whose
   claim window is still open: that slot is reserved for the waiter it names;
2. flock held and the record's expiry passed → the lease is over although its holder lives:
   the taker *steals* the slot by starting a new generation — it creates a fresh inode, flocks
   it, writes its lease record into it and renames it over ``slot-<i>``. The old holder keeps a
   flock on an unlinked inode, which guards nothing;
3. flock held otherwise → held.

So the inode linked at ``slot-<i>`` wins. ``lock_release``/``lock_renew`` first check that the
holder's inode is still linked (a slot inode is only ever linked at its slot name, so a link
count of zero means it was renamed over): an unlinked one (stolen, or broken by
:meth:`lock_break`, which renames an empty inode over every held slot) returns False and
touches nothing; a linked one whose lease expired also returns False (the holder lost it, even
if nobody took it yet) and frees the slot. Locks are never persisted: nothing survives the
holder's process.

Release. With waiters registered, a release runs under the meta flock (hand-over, below). With
none — read without the flock from the checksummed volatile record (:func:`._flock_meta.idle`),
and only for a ``limit`` of at most ``_MAX_SLOT_WATCHES`` — it just closes the holder's
descriptors: the record left behind is stale once the flock is gone, like a dead holder's
(rule 1), and no epoch changes. A waiter that registers meanwhile registered after seeing the
slot's flock held, so it is first in line and watches the slot files: either the close comes
after its watches are armed (an ``IN_CLOSE_WRITE`` wakes it) or its re-check after arming finds
the flock free (see Waiting). A waiter further back is woken by those ahead of it, as always.

Hand-over. A release (or a lease lost at renewal) with live waiters does not just free the
slot: under the meta flock it writes the first waiter's lease record (its info and ttl come
from its registration, its token is allocated then) with state ``~`` and a claim deadline of
``min(now + 0.5 s, the registration's expiry)``, removes that waiter from the line and wakes
it. The waiter claims the slot without the meta flock: it flocks the slot's current inode and
flips the state byte to a space (one-byte writes are atomic for readers). If it never claims
(it died or gave up: :meth:`lock_cancel_wait` passes the slot on), the slot is free at the
deadline. This keeps the meta flock off the waiter's critical path.

Fencing tokens (:mod:`._flock_meta`): strictly increasing per name across processes, crashes
and reboots; a block of 1,024 tokens is reserved and fsynced (unless ``fsync=never``) before the
first of them is handed out, and the exact last token lives in a checksummed record trusted only
within the same kernel boot.

FIFO fairness: waiters register in ``meta`` (holder, registration sequence, expiry = now +
``WAITER_TTL``, refreshed by each ``lock_acquire(waiting=True)``). A caller is granted only if
the free slots exceed the live waiters registered before it; dead waiters lapse after
``WAITER_TTL``.

Waiting (:mod:`._flock_wait`): :meth:`lock_wait` sleeps on inotify events, never polls while a
slot is held. A waiter at the front of the line watches the slot files (a release or the
holder's death closes a writable descriptor there) and its wake file (``wake-<seq % 16>``,
touched by a hand-over, a cancelled wait ahead of it, a steal or a break); one further back
watches only its wake file, so a release wakes one process, not the whole line. A front waiter
with at most ``_MAX_SLOT_WATCHES`` slots re-checks the slot flocks once its watches are armed,
which a release without the meta flock relies on. The wait is
also bounded by the earliest lease expiry seen and by ``WAITER_TTL / 4``, so the caller
refreshes its registration.

Fork hygiene: ``os.register_at_fork`` closes, in the child, every inherited slot and meta
descriptor, so a child never holds or releases its parent's locks, and a parent killed while a
forked child lives still frees its slots.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Final

from unidist._clock import monotonic, wall
from unidist._names import check_name
from unidist.backends.base import LockGrant
from unidist.backends.file import _flock_meta as meta
from unidist.backends.file._flock_wait import DIR_MASK, FILE_MASK, wait_for_change
from unidist.codec import JSON
from unidist.errors import BackendUnavailable, CorruptData, InvalidName, SerializationError

__all__ = ["FileLocksMixin"]

_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_RO: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_WO: Final = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_RW: Final = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_EX_NB: Final = fcntl.LOCK_EX | fcntl.LOCK_NB
#: lock directories whose descriptors one backend keeps open (least recently used are closed).
_MAX_OPEN_DIRS: Final = 128
#: lock_wait returns after at most this fraction of WAITER_TTL, so the caller re-registers.
_WAIT_CAP_FRACTION: Final = 0.25
_LEASE_READ: Final = 4096
_SLOT: Final = "slot-"
_WAKE: Final = "wake-"
#: waiters share this many wake files (by registration sequence); a shared one only means an
#: occasional spurious wake-up.
_WAKE_FILES: Final = 16
#: a waiter near the front watches each slot file for up to this many slots, else the directory.
_MAX_SLOT_WATCHES: Final = 8
#: seconds a waiter has to claim a slot a release handed to it, before anyone may take it.
_CLAIM_WINDOW: Final = 0.5
#: holder ids that need no JSON escaping.
_PLAIN: Final = re.compile(r"[A-Za-z0-9._:@-]*")


_SLOT_NAMES: Final = tuple(f"{_SLOT}{i}" for i in range(64))


def _slot_name(index: int) -> str:
    return _SLOT_NAMES[index] if index < 64 else f"{_SLOT}{index}"


def _wake_name(seq: int) -> str:
    """The wake file of the waiter registered with sequence ``seq``."""
    return f"{_WAKE}{seq % _WAKE_FILES}"


def _slot_index(entry: str) -> int | None:
    """``i`` for a directory entry ``slot-<i>``, else None (temporary files, meta)."""
    if not entry.startswith(_SLOT):
        return None
    digits = entry[len(_SLOT) :]
    if not digits.isdigit() or not digits.isascii() or (digits != "0" and digits[0] == "0"):
        return None
    return int(digits)


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _closer(fd: int) -> Callable[[], None]:
    """A function that closes ``fd`` the first time it is called (never a reused number)."""
    pending = [fd]

    def close() -> None:
        while pending:
            _close(pending.pop())

    return close


def _read_lease(fd: int) -> dict[str, Any] | None:
    """The lease record on the first line of a slot file, or None (empty, cleared, torn).

    A line is a state byte then JSON: ``" "`` for a record its holder owns, ``"~"`` for a slot
    handed to a waiter that has not claimed it yet (``_pending`` is True in the result).
    """
    raw = os.pread(fd, _LEASE_READ, 0)
    end = raw.find(b"\n")
    if end < 0 and len(raw) == _LEASE_READ:
        raw = os.pread(fd, os.fstat(fd).st_size, 0)
        end = raw.find(b"\n")
    if end <= 1:
        return None
    try:
        rec = json.loads(raw[1:end])
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    rec["_pending"] = raw[:1] == b"~"
    return rec


def _handed_deadline(fd: int) -> float | None:
    """:func:`_claim_deadline` of the slot record ``fd`` reads; only a hand-over record (its
    state byte ``~``) is read whole."""
    if os.pread(fd, 1, 0) != b"~":
        return None
    return _claim_deadline(_read_lease(fd))


#: what follows ``~{"holder":<holder JSON>,"token":`` in a hand-over record (see
#: :func:`_lease_line`, which writes these fields in this order).
_HANDED_TAIL: Final = re.compile(
    rb'(\d+),"acquired_at":([^,]+),"expires_at":([^,]+),"mono_expiry":([^,]+),'
    rb'"claim_by":([^,]+),"info":'
)


def _handed_fields(
    raw: bytes, prefix: bytes
) -> tuple[int, float, float | None, float | None, float] | None:
    """``(token, acquired_at, expires_at, mono_expiry, claim_by)`` of a hand-over record that
    starts with ``prefix`` (``~{"holder":<holder JSON>,"token":``), read without a JSON parse
    (the claim is on the next holder's critical path); None if ``raw`` is anything else."""
    if not raw.startswith(prefix) or raw.find(b"\n") < 0:
        return None
    m = _HANDED_TAIL.match(raw, len(prefix))
    if m is None:
        return None
    try:
        tok, acq, exp, mono, claim = m.groups()
        return (
            int(tok),
            float(acq),
            None if exp == b"null" else float(exp),
            None if mono == b"null" else float(mono),
            float(claim),
        )
    except ValueError:
        return None


def _claim_deadline(rec: Mapping[str, Any] | None) -> float | None:
    """Monotonic deadline of an unclaimed hand-over record, else None."""
    if rec is None or not rec.get("_pending"):
        return None
    at = rec.get("claim_by")
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None


def _lease_expiry(rec: Mapping[str, Any] | None) -> float | None:
    if rec is None:
        return None
    exp = rec.get("mono_expiry")
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def _lease_line(
    holder_json: str,
    token: int,
    acquired_at: float,
    expires_at: float | None,
    mono_expiry: float | None,
    info_json: str,
    claim_by: float | None = None,
) -> bytes:
    """One lease record: a state byte, then one line of ASCII JSON (JSON escapes newlines).

    With ``claim_by`` the record hands the slot to a waiter (state ``~``) that must claim it
    (flock it and flip the state byte to a space) before that monotonic deadline.
    """
    exp = "null" if expires_at is None else repr(expires_at)
    mono = "null" if mono_expiry is None else repr(mono_expiry)
    if claim_by is None:
        head, claim = " ", ""
    else:
        head, claim = "~", f',"claim_by":{claim_by!r}'
    return (
        f'{head}{{"holder":{holder_json},"token":{token},"acquired_at":{acquired_at!r},'
        f'"expires_at":{exp},"mono_expiry":{mono}{claim},"info":{info_json}}}\n'
    ).encode("ascii")


def _owner_record(rec: Mapping[str, Any]) -> dict[str, JSON]:
    info = rec.get("info")
    out: dict[str, JSON] = dict(info) if isinstance(info, dict) else {}
    out["holder"] = rec.get("holder")
    out["token"] = rec.get("token")
    out["acquired_at"] = rec.get("acquired_at")
    out["expires_at"] = rec.get("expires_at")
    return out


class _Held:
    """One slot this process holds: the flocked descriptor and the lease-writing one (the
    same descriptor when the slot was opened read-write)."""

    __slots__ = (
        "acquired_at",
        "holder",
        "index",
        "info_json",
        "limit",
        "lock_fd",
        "mono_expiry",
        "name",
        "token",
        "write_fd",
    )

    def __init__(
        self,
        name: str,
        holder: str,
        index: int,
        lock_fd: int,
        write_fd: int,
        token: int,
        acquired_at: float,
        info_json: str,
        mono_expiry: float | None,
        limit: int,
    ) -> None:
        self.name = name
        self.holder = holder
        self.index = index
        self.lock_fd = lock_fd
        self.write_fd = write_fd
        self.token = token
        self.acquired_at = acquired_at
        self.info_json = info_json
        self.mono_expiry = mono_expiry
        self.limit = limit

    def close(self) -> None:
        """Close the descriptors (frees the flock if no other process shares them)."""
        lock_fd, write_fd = self.lock_fd, self.write_fd
        self.lock_fd = self.write_fd = -1
        if write_fd != lock_fd:
            _close(write_fd)
        _close(lock_fd)


class _Seen:
    """What a refused waiting ``lock_acquire`` saw, for the ``lock_wait`` that follows."""

    __slots__ = ("epoch", "limit", "near_front", "seq", "wake_at")

    def __init__(
        self, epoch: int, wake_at: float | None, seq: int, near_front: bool, limit: int
    ) -> None:
        self.epoch = epoch
        self.wake_at = wake_at
        self.seq = seq
        self.near_front = near_front
        self.limit = limit


class _LockDir:
    """Cached descriptors of one lock's directory and meta file; ``mutex`` guards their use."""

    __slots__ = ("closed", "dir_fd", "meta", "meta_fd", "mutex", "name", "path", "wake_files")

    def __init__(self, name: str, path: str, dir_fd: int, meta_fd: int) -> None:
        self.name = name
        self.path = path
        self.dir_fd = dir_fd
        self.meta_fd = meta_fd
        self.meta = meta.MetaFile(meta_fd, os.path.join(path, "meta"))
        self.mutex = threading.Lock()
        self.closed = False
        #: wake files known to exist (they are never removed).
        self.wake_files: set[str] = set()

    def close(self) -> None:
        self.closed = True
        _close(self.meta_fd)
        _close(self.dir_fd)
        self.meta_fd = self.dir_fd = -1


_instances: weakref.WeakSet[FileLocksMixin] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for inst in list(_instances):
        inst._locks_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FileLocksMixin:
    """The ``lock_*`` methods of :class:`~unidist.backends.file.FileBackend` (see module docs).

    Every method is atomic with respect to every thread and process using the same directory:
    it runs under the lock's meta flock. I/O failures raise
    :class:`~unidist.errors.BackendUnavailable`; invalid names raise
    :class:`~unidist.errors.InvalidName` before any I/O.
    """

    root: Path
    fsync_mode: str
    WAITER_TTL: ClassVar[float]

    # ------------------------------------------------------------------ lifecycle
    def _init_locks(self) -> None:
        self._lk_mutex = threading.Lock()
        self._lk_dirs: OrderedDict[str, _LockDir] = OrderedDict()
        self._lk_held: dict[tuple[str, str], _Held] = {}
        self._lk_seen: dict[tuple[str, str], _Seen] = {}
        #: (name, holder) registered as waiters by this backend: a release may hand them a slot.
        self._lk_waiting: set[tuple[str, str]] = set()
        self._lk_root_fd = -1
        self._lk_durable = self.fsync_mode != "never"
        #: the last ``info`` record and its JSON (a facade sends the same record every time).
        self._lk_last_info: tuple[dict[str, JSON], str] | None = None
        self._locks_root_fd()
        _instances.add(self)

    def _close_locks(self) -> None:
        with self._lk_mutex:
            held = list(self._lk_held.values())
            self._lk_held.clear()
            dirs = list(self._lk_dirs.values())
            self._lk_dirs.clear()
            root_fd, self._lk_root_fd = self._lk_root_fd, -1
        for h in held:
            h.close()
        for d in dirs:
            with d.mutex:
                d.close()
        _close(root_fd)

    def _locks_after_fork(self) -> None:
        """In a forked child: forget (close) every inherited lock descriptor."""
        for h in self._lk_held.values():
            h.close()
        for d in self._lk_dirs.values():
            d.close()
        _close(self._lk_root_fd)
        self._lk_mutex = threading.Lock()
        self._lk_dirs = OrderedDict()
        self._lk_held = {}
        self._lk_seen = {}
        self._lk_waiting = set()
        self._lk_root_fd = -1

    # ------------------------------------------------------------------ helpers
    def _unavailable(self, what: str, exc: OSError) -> BackendUnavailable:
        url = str(getattr(self, "url", "file://"))
        return BackendUnavailable(f"{what}: {exc.strerror or exc} ({url})", url=url)

    def _locks_root_fd(self) -> int:
        fd = self._lk_root_fd
        if fd >= 0:
            return fd
        try:
            root_fd = os.open(self.root, _DIR_FLAGS)
            try:
                try:
                    os.mkdir("locks", _DIR_MODE, dir_fd=root_fd)
                    created = True
                except FileExistsError:
                    created = False
                fd = os.open("locks", _DIR_FLAGS, dir_fd=root_fd)
                if created:
                    os.fchmod(fd, _DIR_MODE)
                    if self._lk_durable:
                        os.fsync(root_fd)
            finally:
                os.close(root_fd)
        except OSError as exc:
            raise self._unavailable(
                f"cannot open lock directory {self.root / 'locks'}", exc
            ) from exc
        with self._lk_mutex:
            if self._lk_root_fd >= 0:
                _close(fd)
                return self._lk_root_fd
            self._lk_root_fd = fd
        return fd

    def _create_meta(self, dir_fd: int) -> None:
        tmp = f"meta.new-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, _WO | os.O_CREAT | os.O_EXCL, _FILE_MODE, dir_fd=dir_fd)
        try:
            try:
                os.fchmod(fd, _FILE_MODE)
                os.pwrite(fd, meta.initial_bytes(), 0)
                if self._lk_durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, "meta", src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                pass  # another process created it first; theirs is as good
        finally:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        if self._lk_durable:
            os.fsync(dir_fd)

    def _open_lock_dir(self, name: str, create: bool) -> _LockDir | None:
        root_fd = self._locks_root_fd()
        created = False
        try:
            dir_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, _DIR_MODE, dir_fd=root_fd)
                created = True
            except FileExistsError:
                pass
            dir_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
        try:
            if created:
                os.fchmod(dir_fd, _DIR_MODE)
                if self._lk_durable:
                    os.fsync(root_fd)
            try:
                meta_fd = os.open("meta", _RW, dir_fd=dir_fd)
            except FileNotFoundError:
                if not create:
                    _close(dir_fd)
                    return None
                self._create_meta(dir_fd)
                meta_fd = os.open("meta", _RW, dir_fd=dir_fd)
        except BaseException:
            _close(dir_fd)
            raise
        return _LockDir(name, str(self.root / "locks" / name), dir_fd, meta_fd)

    def _lock_dir(self, name: str, create: bool) -> _LockDir | None:
        d = self._lk_dirs.get(name)  # one dict lookup is atomic; a closed entry is retried
        if d is not None:
            return d
        d = self._open_lock_dir(name, create)
        if d is None:
            return None
        with self._lk_mutex:
            existing = self._lk_dirs.get(name)
            if existing is not None:
                d.close()
                return existing
            self._lk_dirs[name] = d
            if len(self._lk_dirs) > _MAX_OPEN_DIRS:
                for old_name, old in list(self._lk_dirs.items())[: -_MAX_OPEN_DIRS // 2]:
                    if old is not d and old.mutex.acquire(blocking=False):
                        try:
                            old.close()
                        finally:
                            old.mutex.release()
                        del self._lk_dirs[old_name]
        return d

    def _enter(self, name: str, create: bool, flock: bool = True) -> _LockDir | None:
        """Take lock ``name``'s in-process mutex and (``flock``) its meta flock.

        Returns None (holding nothing) when the lock's directory does not exist and ``create``
        is false. Pair with :meth:`_leave`.
        """
        while True:
            d = self._lock_dir(name, create)
            if d is None:
                return None
            d.mutex.acquire()
            if not d.closed:
                break
            d.mutex.release()
        if flock:
            try:
                fcntl.flock(d.meta_fd, fcntl.LOCK_EX)
            except BaseException:
                d.mutex.release()
                raise
        return d

    @staticmethod
    def _leave(d: _LockDir | None, flock: bool = True, failed: bool = False) -> None:
        if d is None:
            return
        try:
            if failed:
                d.meta.invalidate()
            if flock:
                fcntl.flock(d.meta_fd, fcntl.LOCK_UN)
        finally:
            d.mutex.release()

    @contextmanager
    def _session(self, name: str, *, create: bool, flock: bool = True) -> Iterator[_LockDir | None]:
        """:meth:`_enter` ... :meth:`_leave` as a context manager (for the slower paths)."""
        d = self._enter(name, create, flock)
        try:
            yield d
        except BaseException:
            self._leave(d, flock, failed=True)
            raise
        self._leave(d, flock)

    @staticmethod
    def _read_state(d: _LockDir) -> meta.MetaState:
        return d.meta.load()

    @staticmethod
    def _open_slot(d: _LockDir, index: int, flags: int = _RO) -> int:
        """A fresh open file description of ``slot-<index>`` (created if missing), read-only
        unless ``flags`` is ``_RW``."""
        name = _slot_name(index)
        try:
            return os.open(name, flags, dir_fd=d.dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(name, flags | os.O_CREAT, _FILE_MODE, dir_fd=d.dir_fd)
        try:
            os.fchmod(fd, _FILE_MODE)
        except BaseException:
            _close(fd)
            raise
        return fd

    @staticmethod
    def _new_generation(d: _LockDir, index: int, line: bytes) -> int:
        """Rename a fresh inode over ``slot-<index>``: flocked with ``line`` as its record if
        ``line`` is given (a steal), else empty and free (a break). Returns its read-write
        descriptor (-1 for a break)."""
        tmp = f"{_slot_name(index)}.new-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, _RW | os.O_CREAT | os.O_EXCL, _FILE_MODE, dir_fd=d.dir_fd)
        try:
            os.fchmod(fd, _FILE_MODE)
            if line:
                fcntl.flock(fd, _EX_NB)
                os.pwrite(fd, line, 0)
            os.rename(tmp, _slot_name(index), src_dir_fd=d.dir_fd, dst_dir_fd=d.dir_fd)
        except BaseException:
            _close(fd)
            try:
                os.unlink(tmp, dir_fd=d.dir_fd)
            except OSError:
                pass
            raise
        if not line:
            _close(fd)
            return -1
        return fd

    @staticmethod
    def _is_current(h: _Held) -> bool:
        """True if ``h``'s inode is still the one linked at its slot (not stolen or broken).

        A slot inode is only ever linked at ``slot-<i>`` (a new generation is renamed there
        from its temporary name, never linked twice), so it is current while its link count
        is not zero: a rename over it (steal, break) or the directory's removal drops it to 0
        for good."""
        return os.fstat(h.lock_fd).st_nlink > 0

    @staticmethod
    def _bump_epoch(d: _LockDir) -> None:
        d.meta.bump_epoch()

    def _poke_waiters(self, d: _LockDir, state: meta.MetaState, count: int) -> None:
        """Wake the first ``count`` live waiters (their turn may have come): change the epoch,
        then close a writable descriptor of each one's wake file (``IN_CLOSE_WRITE``).

        Best effort, never raises: the operation that calls it has already taken effect."""
        now = monotonic()
        targets = [w for w in state.waiters if float(w[2]) > now][:count]
        if not targets:
            return
        try:
            state.bump_epoch()  # first: a waiter checks the epoch after arming its watch
            for w in targets:
                try:
                    fd = os.open(_wake_name(int(w[1])), _WO, dir_fd=d.dir_fd)
                except FileNotFoundError:
                    continue  # that waiter has not armed its watch yet; it sees the epoch
                _close(fd)
        except OSError:
            pass  # best effort: a waiter not woken re-checks within WAITER_TTL / 4

    def _take_held(self, name: str, holder: str) -> _Held | None:
        with self._lk_mutex:
            return self._lk_held.pop((name, holder), None)

    def _free_held(self, d: _LockDir, h: _Held) -> None:
        """Under the meta flock: pass ``h``'s slot on (or clear it), close it, wake waiters.

        See :meth:`_pass_on` for the order of writes, close and wake-ups."""
        self._pass_on(d, h.write_fd, h.close)

    # ------------------------------------------------------------------ interface
    def lock_acquire(
        self,
        name: str,
        limit: int,
        holder: str,
        info: Mapping[str, JSON],
        ttl: float | None,
        *,
        waiting: bool = False,
    ) -> LockGrant | None:
        """Try once, without blocking, to take one of ``limit`` slots of lock ``name``.

        Atomic under the lock's meta flock: the FIFO check, the slot choice (a free flock, or an
        expired lease taken over as a new generation), the fencing token (its reservation
        fsynced first when ``fsync`` is not ``never``), the lease record and the waiter
        registration all happen or none does. A registered waiter to which a release handed a
        slot claims it first, without the meta flock (the token was allocated and persisted by
        the release). See :meth:`Backend.lock_acquire`.

        Raises:
            InvalidName: bad ``name``.
            ValueError: ``limit`` not an int >= 1, ``ttl`` not None or a finite number > 0, or
                ``holder`` already holds a slot of ``name`` in this backend.
            SerializationError: ``info`` is not JSON.
            BackendUnavailable: the directory cannot be used.
            CorruptData: the lock's meta file has lost both token reservation records.
        """
        check_name(name, "lock name")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
        ):
            raise ValueError(f"ttl must be None or a number of seconds > 0, got {ttl!r}")
        if ttl is not None and not math.isfinite(ttl):
            raise ValueError(f"ttl must be finite, got {ttl!r}")
        if not isinstance(holder, str):
            raise TypeError(f"holder must be a str, not {type(holder).__name__}")
        last_info = self._lk_last_info
        if last_info is not None and last_info[0] == info:
            info_json = last_info[1]
        else:
            try:
                info_json = json.dumps(dict(info), separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise SerializationError(f"lock owner record is not JSON: {exc}") from exc
            self._lk_last_info = (dict(info), info_json)
        holder_json = f'"{holder}"' if _PLAIN.fullmatch(holder) else json.dumps(holder)
        if (name, holder) in self._lk_held:
            raise ValueError(f"holder {holder!r} already holds a slot of lock {name!r}")
        d = None
        retry = False
        try:
            if (name, holder) in self._lk_waiting:
                # A release may have handed this waiter a slot: claim it without the meta flock.
                d = self._enter(name, False, flock=False)
                if d is not None:
                    claimed = self._claim(d, limit, holder, holder_json, info_json)
                    self._leave(d, flock=False)
                    d = None
                    if isinstance(claimed, LockGrant):
                        return claimed
                    retry = claimed
            d = self._enter(name, True)
            assert d is not None
            grant = self._acquire_locked(
                d, limit, holder, holder_json, info_json, ttl, waiting, retry
            )
        except OSError as exc:
            self._leave(d, failed=True)
            raise self._unavailable(f"cannot acquire lock {name!r}", exc) from exc
        except BaseException:
            self._leave(d, failed=True)
            raise
        self._leave(d)
        return grant

    def _claim(
        self, d: _LockDir, limit: int, holder: str, holder_json: str, info_json: str
    ) -> LockGrant | bool:
        """Take a slot a release handed to ``holder`` (a ``~`` record naming it), if any.

        Returns the grant; False if no slot is handed to ``holder``; True if one may be but
        could not be claimed here (retry under the meta flock, which settles it).

        Needs the lock's in-process mutex, not the meta flock: the claim is the flock on the
        slot's current inode plus a one-byte flip of the record's state (atomic for readers);
        anything unexpected (a transient flock by an inspector, a replaced inode, a lapsed
        claim window) returns True and the caller retries under the meta flock.
        """
        needle = f'"holder":{holder_json},'.encode("ascii")
        prefix = b"~{" + needle + b'"token":'
        now = monotonic()
        for index in range(min(limit, _MAX_SLOT_WATCHES)):
            slot = _slot_name(index)
            try:
                fd = os.open(slot, _RO, dir_fd=d.dir_fd)
            except FileNotFoundError:
                continue
            write_fd = -1
            try:
                raw = os.pread(fd, _LEASE_READ, 0)
                if raw[:1] != b"~" or needle not in raw:
                    continue
                try:
                    fcntl.flock(fd, _EX_NB)
                except BlockingIOError:
                    return True
                # Read again under the flock: the record read before may have changed.
                fields = _handed_fields(os.pread(fd, _LEASE_READ, 0), prefix)
                if fields is None:
                    rec = _read_lease(fd)  # written some other way: the general reader
                    deadline = _claim_deadline(rec)
                    if rec is None or rec.get("holder") != holder:
                        return True
                    exp = rec.get("expires_at")
                    fields = (
                        int(rec["token"]),
                        float(rec["acquired_at"]),
                        None if exp is None else float(exp),
                        _lease_expiry(rec),
                        -math.inf if deadline is None else deadline,
                    )
                token, acquired_at, expires_at, mono_expiry, deadline = fields
                if not deadline > now:
                    return True
                # The name must still link the inode we flocked (no steal or break since): an
                # inode renamed over has no link left, and none is ever linked again, so if it
                # has one after this open, the open found it.
                write_fd = os.open(slot, _WO, dir_fd=d.dir_fd)
                if os.fstat(fd).st_nlink == 0:
                    return True
                os.pwrite(write_fd, b" ", 0)  # claimed: from now on an ordinary lease
                h = _Held(
                    d.name,
                    holder,
                    index,
                    fd,
                    write_fd,
                    token,
                    acquired_at,
                    info_json,
                    mono_expiry,
                    limit,
                )
                self._lk_register(h)
                fd = write_fd = -1
                return LockGrant(d.name, holder, token, acquired_at, expires_at)
            finally:
                _close(write_fd)
                _close(fd)
        return False

    def _pass_on(self, d: _LockDir, write_fd: int, close: Callable[[], None]) -> None:
        """Under the meta flock, for a slot being freed whose record ``write_fd`` writes: hand
        it to the first live waiter (a ``~`` record with a fresh token, claimable for up to
        ``_CLAIM_WINDOW`` seconds), or clear the record; then ``close()`` the freeing side's
        descriptors (their last close wakes the waiters watching the slot).

        Order: the new last token (volatile record; the waiter list still unchanged), so that
        a releaser killed right after the hand-over never leaves a handed-out token unrecorded
        (the next grant would repeat it); then the hand-over record, then the epoch (a waiter
        checks it after arming its watches, so a wake-up before that is not lost), then
        ``close`` and the poke of the waiter's wake file, and only then the waiter list, off
        the woken waiter's path (it claims without the meta flock). A plain free also changes
        the epoch before ``close``.
        """
        try:
            state: meta.MetaState | None = self._read_state(d)
        except CorruptData:
            state = None
        if state is not None and state.limit <= _MAX_SLOT_WATCHES:
            now = monotonic()
            live = [w for w in state.waiters if float(w[2]) > now]
            if live:
                holder, seq, lapses, ttl_raw, info_json = live[0]
                ttl = None if float(ttl_raw) < 0 else float(ttl_raw)
                token = state.next_token(self._lk_durable)
                state.write_volatile()  # the token is on record before anyone can claim it
                acquired_at = wall()
                line = _lease_line(
                    f'"{holder}"' if _PLAIN.fullmatch(holder) else json.dumps(holder),
                    token,
                    acquired_at,
                    None if ttl is None else acquired_at + ttl,
                    None if ttl is None else now + ttl,
                    str(info_json),
                    # never longer than the waiter's registration would have lived
                    claim_by=min(now + _CLAIM_WINDOW, float(lapses)),
                )
                os.pwrite(write_fd, line, 0)
                state.bump_epoch()
                close()
                self._poke_seq(d, int(seq))
                state.waiters = live[1:]
                state.write_volatile()
                return
        os.pwrite(write_fd, b"\n", 0)
        if state is not None:
            state.bump_epoch()
        else:
            d.meta.bump_epoch()
        close()

    @staticmethod
    def _poke_seq(d: _LockDir, seq: int | None) -> None:
        """Wake the waiter registered with ``seq`` (best effort)."""
        if seq is None:
            return
        try:
            _close(os.open(_wake_name(seq), _WO, dir_fd=d.dir_fd))
        except OSError:
            pass

    def _scan_slots(
        self, d: _LockDir, limit: int, need: int, now: float, flags: int = _RO
    ) -> tuple[tuple[int, int] | None, int | None, float | None]:
        """Under the meta flock: find a slot for a caller with ``need - 1`` waiters ahead.

        Returns ``(chosen, steal, wake_at)``: ``chosen`` is ``(index, fd)`` of a free slot whose
        flock ``fd`` (opened with ``flags``) now holds, ``steal`` the index of an expired lease
        to take over (only if no slot is free), both None if fewer than ``need`` slots are free
        or expired; ``wake_at`` is the earliest monotonic lease expiry among the held slots seen.
        """
        if need > limit:
            return None, None, None
        free: list[tuple[int, int]] = []
        expired: list[int] = []
        wake_at: float | None = None
        try:
            for index in range(limit):
                fd = self._open_slot(d, index, flags)
                try:
                    fcntl.flock(fd, _EX_NB)
                except BlockingIOError:
                    try:
                        exp = _lease_expiry(_read_lease(fd))
                    finally:
                        _close(fd)
                    if exp is not None and exp <= now:
                        expired.append(index)
                    elif exp is not None:
                        wake_at = exp if wake_at is None else min(wake_at, exp)
                except BaseException:
                    _close(fd)
                    raise
                else:
                    try:
                        deadline = _handed_deadline(fd)
                    except BaseException:
                        _close(fd)
                        raise
                    if deadline is not None and deadline > now:
                        _close(fd)  # handed to a waiter that has not claimed it yet
                        wake_at = deadline if wake_at is None else min(wake_at, deadline)
                        continue
                    free.append((index, fd))
                if len(free) + len(expired) >= need:
                    if free:
                        return free.pop(0), None, wake_at
                    return None, expired[0], wake_at
            return None, None, wake_at
        finally:
            for _, fd in free:
                _close(fd)

    def _acquire_locked(
        self,
        d: _LockDir,
        limit: int,
        holder: str,
        holder_json: str,
        info_json: str,
        ttl: float | None,
        waiting: bool,
        retry_claim: bool,
    ) -> LockGrant | None:
        if retry_claim:
            claimed = self._claim(d, limit, holder, holder_json, info_json)
            if isinstance(claimed, LockGrant):
                return claimed
        state = self._read_state(d)
        now = monotonic()
        pos: int | None = None
        if state.waiters:
            live = [w for w in state.waiters if float(w[2]) > now]
            changed = len(live) != len(state.waiters)
            pos = next((k for k, w in enumerate(live) if w[0] == holder), None)
        else:
            live, changed = [], False
        if pos is None:
            before = len(live)
        elif waiting:
            before = pos
        else:
            before = len(live) - 1
        need = before + 1

        if state.limit != limit:
            state.limit = limit
            changed = True
        # Nobody waits: open the slots read-write, so a grant needs no second descriptor (the
        # close of a failed attempt's writable descriptor then wakes no registered waiter).
        flags = _RO if live else _RW
        chosen, steal, wake_at = self._scan_slots(d, limit, need, now, flags)
        if chosen is None and steal is None:
            if waiting:
                reg = [now + self.WAITER_TTL, -1.0 if ttl is None else float(ttl), info_json]
                if pos is None:
                    seq = state.waiter_seq
                    live.append([holder, seq, *reg])
                    state.waiter_seq += 1
                else:
                    seq = int(live[pos][1])
                    live[pos][2:] = reg
                changed = True
                seen = _Seen(state.epoch, wake_at, seq, need <= limit, limit)
                with self._lk_mutex:
                    self._lk_seen[(d.name, holder)] = seen
                    self._lk_waiting.add((d.name, holder))
            if changed:
                state.waiters = live
                state.write_volatile()
            return None

        if pos is not None:
            del live[pos]
        state.waiters = live
        grant = self._grant(
            d, state, chosen, steal, holder, holder_json, info_json, ttl, now, limit, flags
        )
        if live:
            # The waiters now first in line may run (semaphore) or must start watching the
            # slots; after a steal, their slot watches point at the replaced inode.
            self._poke_waiters(d, state, limit)
        return grant

    def _grant(
        self,
        d: _LockDir,
        state: meta.MetaState,
        chosen: tuple[int, int] | None,
        steal: int | None,
        holder: str,
        holder_json: str,
        info_json: str,
        ttl: float | None,
        now: float,
        limit: int,
        flags: int,
    ) -> LockGrant:
        """Under the meta flock: token, lease record, volatile record; register the hold.

        ``chosen``'s descriptor was opened with ``flags``: a read-write one also writes the
        record, a read-only one gets a write-only companion."""
        index, lock_fd = chosen if chosen is not None else (-1, -1)
        write_fd = -1
        try:
            token = state.next_token(self._lk_durable)
            acquired_at = wall()
            expires_at = None if ttl is None else acquired_at + ttl
            mono_expiry = None if ttl is None else now + ttl
            line = _lease_line(holder_json, token, acquired_at, expires_at, mono_expiry, info_json)
            if chosen is not None:
                if flags == _RW:
                    write_fd = lock_fd
                else:
                    write_fd = os.open(_slot_name(index), _WO, dir_fd=d.dir_fd)
                os.pwrite(write_fd, line, 0)
            else:
                assert steal is not None
                index = steal
                lock_fd = write_fd = self._new_generation(d, index, line)
            state.write_volatile()
        except BaseException:
            if write_fd != lock_fd:
                _close(write_fd)
            _close(lock_fd)
            raise
        h = _Held(
            d.name,
            holder,
            index,
            lock_fd,
            write_fd,
            token,
            acquired_at,
            info_json,
            mono_expiry,
            limit,
        )
        self._lk_register(h)
        return LockGrant(d.name, holder, token, acquired_at, expires_at)

    def _lk_register(self, h: _Held) -> None:
        """Record a granted slot as held by this process (and no longer waiting)."""
        key = (h.name, h.holder)
        with self._lk_mutex:
            self._lk_held[key] = h
            self._lk_seen.pop(key, None)
            self._lk_waiting.discard(key)

    def lock_cancel_wait(self, name: str, holder: str) -> None:
        """Remove ``holder``'s waiter registration (atomic; no-op if it has none).

        Waiters registered after it are woken, since they may now be first in line.

        Raises:
            InvalidName: bad ``name``.
            BackendUnavailable: the directory cannot be used.
        """
        check_name(name, "lock name")
        with self._lk_mutex:
            self._lk_seen.pop((name, holder), None)
            handed = (name, holder) in self._lk_waiting
            self._lk_waiting.discard((name, holder))
        try:
            with self._session(name, create=False) as d:
                if d is None:
                    return
                state = self._read_state(d)
                now = monotonic()
                live = [w for w in state.waiters if float(w[2]) > now and w[0] != holder]
                if len(live) != len(state.waiters):
                    state.waiters = live
                    state.write_volatile()
                    self._poke_waiters(d, state, state.limit)
                if handed:
                    self._unclaim(d, holder, state.limit)
        except OSError as exc:
            raise self._unavailable(f"cannot update waiters of lock {name!r}", exc) from exc

    def _unclaim(self, d: _LockDir, holder: str, limit: int) -> None:
        """Under the meta flock: pass on a slot handed to ``holder`` that it never claimed."""
        for index in range(min(limit, _MAX_SLOT_WATCHES)):
            try:
                fd = os.open(_slot_name(index), _RO, dir_fd=d.dir_fd)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, _EX_NB)
                except BlockingIOError:
                    continue
                rec = _read_lease(fd)
                if rec is None or rec.get("holder") != holder or _claim_deadline(rec) is None:
                    continue
                write_fd = os.open(_slot_name(index), _WO, dir_fd=d.dir_fd)
                close = _closer(write_fd)
                try:
                    self._pass_on(d, write_fd, close)
                finally:
                    close()
            finally:
                _close(fd)
            return

    def lock_release(self, name: str, holder: str) -> bool:
        """Free the slot ``holder`` holds. Atomic under the meta flock, or without it when no
        waiter is registered (see the module docs: then only the descriptors are closed).

        Returns:
            True if it was held; False if ``holder`` holds nothing here (never acquired in this
            process, released already), its lease expired (the slot is freed all the same) or
            the slot was taken over or broken (then nothing is touched).

        Raises:
            InvalidName: bad ``name``.
            BackendUnavailable: the directory cannot be used (the descriptors are closed anyway,
                so the flock is gone).
        """
        check_name(name, "lock name")
        h = self._take_held(name, holder)
        if h is None:
            return False
        d = None
        flock = False
        try:
            d = self._enter(name, False, flock=False)
            ok = False
            if d is not None:
                if h.limit > _MAX_SLOT_WATCHES or not meta.idle(d.meta_fd, _MAX_SLOT_WATCHES):
                    fcntl.flock(d.meta_fd, fcntl.LOCK_EX)
                    flock = True
                if self._is_current(h):
                    ok = h.mono_expiry is None or h.mono_expiry > monotonic()
                    if flock:
                        self._free_held(d, h)
        except OSError as exc:
            self._leave(d, flock, failed=True)
            raise self._unavailable(f"cannot release lock {name!r}", exc) from exc
        except BaseException:
            self._leave(d, flock, failed=True)
            raise
        finally:
            h.close()
        self._leave(d, flock)
        return ok

    def lock_renew(self, name: str, holder: str, ttl: float | None) -> float | None | bool:
        """Extend ``holder``'s lease to now + ``ttl`` (None: no expiry). Atomic under the meta
        flock: the lease record is rewritten in place.

        Returns:
            The new ``expires_at`` (None without ttl), or False if ``holder`` no longer holds
            the slot (expired — the slot is then freed —, taken over, broken, released).

        Raises:
            InvalidName: bad ``name``.
            ValueError: ``ttl`` is not None or a finite number > 0.
            BackendUnavailable: the directory cannot be used.
        """
        check_name(name, "lock name")
        if ttl is not None and (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not ttl > 0
            or not math.isfinite(ttl)
        ):
            raise ValueError(f"ttl must be None or a finite number of seconds > 0, got {ttl!r}")
        key = (name, holder)
        with self._lk_mutex:
            h = self._lk_held.get(key)
        if h is None:
            return False
        try:
            with self._session(name, create=False) as d:
                with self._lk_mutex:
                    if self._lk_held.get(key) is not h:
                        return False  # released meanwhile
                now = monotonic()
                current = d is not None and self._is_current(h)
                if d is None or not current or (h.mono_expiry is not None and h.mono_expiry <= now):
                    self._take_held(name, holder)
                    if d is not None and current:
                        self._free_held(d, h)
                    h.close()
                    return False
                acquired_wall = wall()
                expires_at = None if ttl is None else acquired_wall + ttl
                mono_expiry = None if ttl is None else now + ttl
                line = _lease_line(
                    json.dumps(holder),
                    h.token,
                    h.acquired_at,
                    expires_at,
                    mono_expiry,
                    h.info_json,
                )
                os.pwrite(h.write_fd, line, 0)
                h.mono_expiry = mono_expiry
                return expires_at
        except OSError as exc:
            raise self._unavailable(f"cannot renew lock {name!r}", exc) from exc

    def _owners_locked(self, d: _LockDir) -> list[dict[str, JSON]]:
        now = monotonic()
        owners: list[dict[str, JSON]] = []
        for entry in os.listdir(d.dir_fd):
            if _slot_index(entry) is None:
                continue
            try:
                fd = os.open(entry, _RO, dir_fd=d.dir_fd)
            except FileNotFoundError:
                continue
            try:
                rec = _read_lease(fd)
                try:
                    fcntl.flock(fd, _EX_NB)
                    deadline = _claim_deadline(rec)
                    if deadline is None or deadline <= now:
                        continue  # free (a dead or gone holder's record is stale)
                    # else: handed to a waiter that is about to claim it: it is the owner
                except BlockingIOError:
                    pass
            finally:
                _close(fd)
            if rec is None:
                continue
            exp = _lease_expiry(rec)
            if exp is not None and exp <= now:
                continue
            owners.append(_owner_record(rec))

        def acquired(rec: dict[str, JSON]) -> float:
            at = rec.get("acquired_at")
            return float(at) if isinstance(at, (int, float)) else 0.0

        owners.sort(key=acquired)
        return owners

    def lock_owners(self, name: str) -> list[dict[str, JSON]]:
        """Live holders of ``name`` (flock held, lease not expired), ordered by ``acquired_at``.

        A consistent view: taken under the meta flock.

        Raises:
            InvalidName: bad ``name``.
            BackendUnavailable: the directory cannot be used.
        """
        check_name(name, "lock name")
        try:
            with self._session(name, create=False) as d:
                return [] if d is None else self._owners_locked(d)
        except OSError as exc:
            raise self._unavailable(f"cannot read owners of lock {name!r}", exc) from exc

    def lock_break(self, name: str, holder: str | None = None) -> int:
        """Free every held slot of ``name`` (or only the one whose lease record names
        ``holder``) by renaming an empty inode over it (administrative; membership fencing).

        Atomic under the meta flock. The former holders' release and renew then return False,
        even when the holder is a stopped process that still holds its flock (the flocked
        inode is no longer the one linked at the slot's name).

        Returns:
            How many slots had a holder (live or with an expired lease) and were freed.

        Raises:
            InvalidName: bad ``name``.
            BackendUnavailable: the directory cannot be used.
        """
        check_name(name, "lock name")
        try:
            with self._session(name, create=False) as d:
                if d is None:
                    return 0
                freed = 0
                self._bump_epoch(d)  # before the renames wake anyone (see _free_held)
                for entry in os.listdir(d.dir_fd):
                    index = _slot_index(entry)
                    if index is None:
                        continue
                    try:
                        fd = os.open(entry, _RO, dir_fd=d.dir_fd)
                    except FileNotFoundError:
                        continue
                    try:
                        if holder is not None:
                            rec = _read_lease(fd)
                            if rec is None or rec.get("holder") != holder:
                                continue  # another holder's slot, or no record
                        fcntl.flock(fd, _EX_NB)
                        deadline = _claim_deadline(_read_lease(fd))
                        if deadline is None or deadline <= monotonic():
                            continue  # already free
                    except BlockingIOError:
                        pass
                    finally:
                        _close(fd)
                    self._new_generation(d, index, b"")
                    freed += 1
                if freed:
                    state = self._read_state(d)
                    self._poke_waiters(d, state, len(state.waiters))
                return freed
        except OSError as exc:
            raise self._unavailable(f"cannot break lock {name!r}", exc) from exc

    def locks(self) -> dict[str, list[dict[str, JSON]]]:
        """Every lock name with at least one live holder, mapped to its owners (sorted by name).

        Each lock is read atomically; the whole map is not one snapshot.

        Raises:
            BackendUnavailable: the directory cannot be used.
        """
        try:
            entries = sorted(os.listdir(self._locks_root_fd()))
        except OSError as exc:
            raise self._unavailable("cannot list locks", exc) from exc
        out: dict[str, list[dict[str, JSON]]] = {}
        for entry in entries:
            try:
                check_name(entry)
            except InvalidName:
                continue
            owners = self.lock_owners(entry)
            if owners:
                out[entry] = owners
        return out

    def lock_wait(self, name: str, timeout: float, holder: str | None = None) -> None:
        """Block until a slot of ``name`` may have been freed for ``holder``, or ``timeout``.

        Event-driven (inotify; see module docs), never spinning. With the ``holder`` of a
        refused ``lock_acquire(..., waiting=True)``, only that waiter's own events wake it: a
        waiter near the front of the line watches the slot files (a release or a holder's death
        closes a writable descriptor there) and its wake file; one further back only its wake
        file, poked when the line moves up to it. Without ``holder``, any change in the lock's
        directory wakes it. Returns at the earliest lease expiry the refused attempt saw, and
        after at most ``WAITER_TTL / 4`` so the caller refreshes its registration. A change
        between the refused attempt and this call is not missed (the meta epoch, and for a
        waiter at the front the slots themselves, are re-checked once the watches are armed).
        Spurious early returns are possible.

        Raises:
            InvalidName: bad ``name``.
            BackendUnavailable: the directory cannot be used.
        """
        check_name(name, "lock name")
        if not timeout > 0:  # also NaN
            return
        budget = min(float(timeout), self.WAITER_TTL * _WAIT_CAP_FRACTION)
        seen: _Seen | None = None
        if holder is not None:
            with self._lk_mutex:
                seen = self._lk_seen.pop((name, holder), None)
        if seen is not None and seen.wake_at is not None:
            budget = min(budget, max(0.0, seen.wake_at - monotonic()) + 0.001)
        cached = self._lk_dirs.get(name)
        lock_dir = cached.path if cached is not None else str(self.root / "locks" / name)
        try:
            if seen is None:
                targets = [(lock_dir, DIR_MASK)]
            else:
                wake = _wake_name(seen.seq)
                d = self._enter(name, False, flock=False)
                if d is not None:
                    try:
                        if wake not in d.wake_files:
                            _close(os.open(wake, _RO | os.O_CREAT, _FILE_MODE, dir_fd=d.dir_fd))
                            d.wake_files.add(wake)
                    finally:
                        self._leave(d, flock=False)
                targets = [(os.path.join(lock_dir, wake), FILE_MASK)]
                if seen.near_front and seen.limit <= _MAX_SLOT_WATCHES:
                    targets += [
                        (os.path.join(lock_dir, _slot_name(i)), FILE_MASK)
                        for i in range(seen.limit)
                    ]
                elif seen.near_front:
                    targets.append((lock_dir, DIR_MASK))
            wait_for_change(targets, budget, lambda: self._unchanged(name, seen, holder))
        except OSError as exc:
            raise self._unavailable(f"cannot wait for lock {name!r}", exc) from exc

    def _unchanged(self, name: str, seen: _Seen | None, holder: str | None) -> bool:
        """True if nothing a waiter cares about changed since its refused attempt."""
        if seen is None:
            return True
        d = self._enter(name, False, flock=seen.near_front)
        if d is None:
            return False
        failed = True
        try:
            if meta.read_epoch(d.meta_fd) != seen.epoch:
                result = False
            elif seen.near_front and seen.limit <= _MAX_SLOT_WATCHES:
                # A holder that died before the watches were armed left no epoch change.
                result = all(self._slot_held(d, i, holder) for i in range(seen.limit))
            else:
                result = True
            failed = False
        finally:
            self._leave(d, flock=seen.near_front, failed=failed)
        return result

    def _slot_held(self, d: _LockDir, index: int, holder: str | None) -> bool:
        """Under the meta flock: True if slot ``index`` is not free for ``holder``: its flock
        is held, or it is handed to another waiter that may still claim it."""
        fd = self._open_slot(d, index)
        try:
            fcntl.flock(fd, _EX_NB)
            rec = _read_lease(fd)
        except BlockingIOError:
            return True
        finally:
            _close(fd)
        deadline = _claim_deadline(rec)
        return (
            deadline is not None
            and deadline > monotonic()
            and rec is not None
            and rec.get("holder") != holder
        )
