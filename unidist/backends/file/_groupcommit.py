"""Group commit for ``fsync=always``: writers share fdatasyncs of an object's journal.

A mutating operation appends its record under the object's locks (in-process
``threading.Lock`` + exclusive flock on ``lock``), releases both, and only then makes sure
the journal is synced up to at least the record's end offset before it returns. Writers of
one object, threads and processes alike, thereby share fsyncs instead of queueing behind one
another's while holding the object lock.

The invariant: **a record is acknowledged only after an fdatasync of its journal that
started after the record's write completed has returned successfully.**

Claims. A *claim* ``(gen, ino, end)`` says "journal generation ``gen``, inode ``ino``, is
durable up to byte ``end``". A claim covers a record of ``(gen, ino)`` ending at ``e`` iff
gen and inode are equal and ``end >= e`` (a claim about another generation never covers
anything; a writer whose journal was rotated away just fsyncs its own descriptor). A claim
is made only from this sequence:

1. under the object's locks (after the handle has replayed the tail and cut any torn
   tail), read the current generation, inode and applied end offset ``W``, and take a
   reference to a duplicate of that generation's journal descriptor (:class:`SyncFd`: one
   ``dup`` per generation, shared by every record written to it and closed once the
   generation is superseded and no waiter holds it, so no descriptor is duplicated or
   closed per operation). Every record ending at or below ``W`` is complete (all writes
   happen under the exclusive flock), and none is a torn fragment (only whole, CRC-valid
   records count towards the applied offset);
2. release the object's locks and ``fdatasync`` that descriptor (it flushes the inode,
   whoever wrote the pages); the fsync therefore starts after every covered write completed;
3. only if it succeeded, publish ``(gen, ino, W)``.

Leaders and followers. Per object and process, a :class:`GroupCommit` lets one thread at a
time be the *leader*; the other threads wait on a condition variable and return as soon as
the in-process claim covers their record. Across processes, the leader takes an exclusive
flock on the object's ``sync`` file and holds it through its fsync, so leaders of different
processes also fsync one at a time; ``sync`` holds the highest published claim (44 bytes:
magic, boot id, gen, inode, end, CRC32), read and written only under that flock, so a
leader that waited for another process's fsync first re-reads the claim and skips its own
fsync when it is already covered. Publishing keeps the maximum claim for the generation.

Why a stale claim is harmless: a published claim describes an fsync that succeeded, and a
journal only grows (a torn tail is cut only past the last complete record, which no claim
went beyond), so an old claim stays true for its (gen, inode). After a power loss the
``sync`` file may hold an older version or garbage; the CRC rejects garbage and the boot id
(``/proc/sys/kernel/random/boot_id`` where available) makes every claim of a previous boot
void anyway. Journals are created by O_EXCL/rename and a generation is never reused within
an object directory (``sync`` is removed when ``journal.1`` is (re)created), so an inode
number reused by a later file cannot be mistaken for an old claim's.

Failures (RELIABILITY rule 5): if the leader's fdatasync fails the handle is poisoned, the
leader and every waiting thread whose record no earlier successful claim covers raise
:class:`~unidist.errors.BackendUnavailable`, and nothing is published. Waiters in other
processes then lead themselves: their own fsync either reports the error (errseq: every
descriptor open at the time sees it) and poisons them, or succeeds. The failed record is not
truncated (others may have appended after it): it was never acknowledged, and the next open
replays whatever the journal holds. If the ``sync`` file cannot be used, a writer fsyncs its
own descriptor (never weaker, only slower).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Callable
from typing import NamedTuple

from unidist.backends.file import _io

SYNC_FILE = "sync"
_MAGIC = b"udsync1\n"
_FMT = struct.Struct("<8s8sQQQ")
_CRC = struct.Struct("<I")
_SIZE = _FMT.size + _CRC.size


def _read_boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            raw = f.read().strip().replace(b"-", b"")
        return bytes.fromhex(raw.decode("ascii"))[:8].ljust(8, b"\0")
    except (OSError, ValueError):
        return b"\0" * 8


BOOT_ID = _read_boot_id()


class Claim(NamedTuple):
    """Journal generation ``gen`` (inode ``ino``) is durable up to byte ``end``."""

    gen: int
    ino: int
    end: int

    def covers(self, other: Claim) -> bool:
        """Whether a record of ``other``'s journal ending at ``other.end`` is durable."""
        return self.gen == other.gen and self.ino == other.ino and self.end >= other.end


NONE = Claim(0, 0, 0)


def encode_claim(claim: Claim) -> bytes:
    body = _FMT.pack(_MAGIC, BOOT_ID, claim.gen, claim.ino, claim.end)
    return body + _CRC.pack(zlib.crc32(body))


def decode_claim(data: bytes) -> Claim | None:
    """The claim in ``data``; None if absent, damaged or from another boot."""
    if len(data) < _SIZE:
        return None
    body = data[: _FMT.size]
    if _CRC.unpack_from(data, _FMT.size)[0] != zlib.crc32(body):
        return None
    magic, boot, gen, ino, end = _FMT.unpack(body)
    if magic != _MAGIC or boot != BOOT_ID:
        return None
    return Claim(gen, ino, end)


class SyncFd:
    """A duplicate of one journal generation's descriptor, shared by the records written to
    it (reference-counted under :attr:`GroupCommit.cv`; closed when superseded and unused)."""

    __slots__ = ("fd", "gen", "ino", "refs", "retired")

    def __init__(self, fd: int, gen: int, ino: int) -> None:
        self.fd = fd
        self.gen = gen
        self.ino = ino
        self.refs = 0
        self.retired = False


class Pending(NamedTuple):
    """A record written but not yet known durable: its claim and its journal's :class:`SyncFd`
    (one reference, given back by :meth:`GroupCommit.wait` or :meth:`GroupCommit.drop`)."""

    claim: Claim
    fd: SyncFd


class SyncFailed(Exception):
    """The leader's fdatasync failed (``cause``); the handle has been poisoned."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class GroupCommit:
    """One object's group-commit state in this process (see the module docs).

    Args:
        dir_fd: the object directory (``sync`` is opened in it lazily, by the leader).
        sync: ``fdatasync`` (looked up per call, so tests can replace it).
        refresh: take the object's locks and return the current journal's claim
            (generation, inode, applied end) with a reference to its :class:`SyncFd` (from
            :meth:`hold`), or None if the handle cannot do so now (closed, damaged); must not
            be called with the locks held.
    """

    def __init__(
        self,
        dir_fd: int,
        sync: Callable[[int], None],
        refresh: Callable[[], tuple[Claim, SyncFd] | None],
    ) -> None:
        self.dir_fd = dir_fd
        self.sync = sync
        self.refresh = refresh
        #: guards every field below; ``cv`` waits on it (plain ``with self.lock`` where no
        #: waiting is involved: no Python-level ``Condition.__enter__`` per operation).
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.leader = False
        self.synced = NONE
        self.failed = False
        self.closed = False
        self.marker_fd = -1
        self.cur: SyncFd | None = None
        #: the marker bytes this process last wrote and the claim they encode (read back
        #: unchanged, they need no decoding).
        self.marker_raw = b""
        self.marker_claim: Claim | None = None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the ``sync`` descriptor and the journal duplicate (now, or when the last
        waiter using them is done)."""
        with self.cv:
            self.closed = True
            cur, self.cur = self.cur, None
            if cur is not None:
                self._retire(cur)
            if not self.leader:
                self._close_marker()

    def abandon(self) -> None:
        """After fork in the child: close our copies of the descriptors, take no lock."""
        self.closed = True
        _io.close_quietly(self.marker_fd)
        self.marker_fd = -1
        if self.cur is not None:
            _io.close_quietly(self.cur.fd)
            self.cur = None

    # ------------------------------------------------------------------ journal descriptor
    def hold(self, gen: int, ino: int, journal_fd: int) -> SyncFd:
        """A reference to the :class:`SyncFd` of journal ``(gen, ino)`` open as
        ``journal_fd`` (duplicated on the first record of a generation). Call under the
        object's locks; give it back with :meth:`drop` (or through :meth:`wait`).

        Raises:
            OSError: ``dup`` failed (no descriptor to spare).
        """
        with self.lock:
            cur = self.cur
            if cur is None or cur.gen != gen or cur.ino != ino:
                cur = SyncFd(os.dup(journal_fd), gen, ino)
                if self.cur is not None:
                    self._retire(self.cur)
                if self.closed:
                    cur.retired = True
                else:
                    self.cur = cur
            cur.refs += 1
            return cur

    def drop(self, sfd: SyncFd) -> None:
        """Give back a reference taken by :meth:`hold`."""
        with self.lock:
            self._drop(sfd)

    def _drop(self, sfd: SyncFd) -> None:
        sfd.refs -= 1
        if sfd.refs <= 0 and sfd.retired:
            _io.close_quietly(sfd.fd)
            sfd.fd = -1

    def _retire(self, sfd: SyncFd) -> None:
        sfd.retired = True
        if sfd.refs <= 0:
            _io.close_quietly(sfd.fd)
            sfd.fd = -1

    def _close_marker(self) -> None:
        _io.close_quietly(self.marker_fd)
        self.marker_fd = -1

    def note(self, claim: Claim) -> None:
        """Record a claim made by an fsync that succeeded under the object's locks."""
        with self.lock:
            if _newer(claim, self.synced):
                self.synced = claim

    # ------------------------------------------------------------------ waiting
    def wait(self, pending: Pending) -> None:
        """Return once ``pending`` is durable (gives back its descriptor in every case).

        Raises:
            SyncFailed: an fsync this record depended on failed.
        """
        claim = pending.claim
        cv = self.cv
        with self.lock:
            while True:
                if self.synced.covers(claim):
                    self._drop(pending.fd)
                    return
                if self.failed:
                    self._drop(pending.fd)
                    raise SyncFailed(OSError("an earlier fsync of this journal failed"))
                if not self.leader:
                    self.leader = True
                    mfd = self._marker()
                    break
                cv.wait()
        made = NONE
        error: OSError | None = None
        try:
            made = self._lead(pending, mfd)
        except OSError as exc:
            error = exc
        finally:
            with self.lock:
                self.leader = False
                if error is not None:
                    self.failed = True
                elif _newer(made, self.synced):
                    self.synced = made
                if self.closed:
                    self._close_marker()
                self._drop(pending.fd)
                cv.notify_all()
        if error is not None:
            raise SyncFailed(error)

    def _lead(self, pending: Pending, mfd: int) -> Claim:
        """Make ``pending`` durable as the in-process leader; return the newest claim made."""
        own = pending.fd.fd
        if mfd < 0:
            self.sync(own)
            return pending.claim
        try:
            fcntl.flock(mfd, fcntl.LOCK_EX)
        except OSError:
            self.sync(own)
            return pending.claim
        try:
            published = self._read_marker(mfd)
            if published is not None and published.covers(pending.claim):
                return published
            got = None if _last_writer(own, pending.claim) else self.refresh()
            if got is None:
                claim = pending.claim
                self.sync(own)
            else:
                claim, sfd = got
                try:
                    self.sync(sfd.fd)
                finally:
                    self.drop(sfd)
                if not claim.covers(pending.claim):
                    # The journal was rotated (or replaced) since our write: sync ours too.
                    self.sync(own)
            if published is None or _newer(claim, published):
                raw = encode_claim(claim)
                try:
                    _io.pwrite(mfd, raw, 0)
                except OSError:
                    pass  # only a hint for other processes: they fsync themselves
                else:
                    self.marker_raw, self.marker_claim = raw, claim
            return claim
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(mfd, fcntl.LOCK_UN)

    def _read_marker(self, fd: int) -> Claim | None:
        """The published claim (call as leader, under the ``sync`` flock)."""
        try:
            raw = os.pread(fd, _SIZE, 0)
        except OSError:
            return None
        if raw == self.marker_raw:
            return self.marker_claim
        return decode_claim(raw)

    def _marker(self) -> int:
        """The ``sync`` descriptor (opened on first use; call under ``cv``), or -1."""
        if self.marker_fd < 0 and not self.closed:
            try:
                self.marker_fd = _io.open_file(SYNC_FILE, self.dir_fd, os.O_RDWR, create=True)
            except OSError:
                return -1
        return self.marker_fd


def _newer(a: Claim, b: Claim) -> bool:
    """Whether ``a`` should replace ``b`` as the remembered claim."""
    if a.gen != b.gen:
        return a.gen > b.gen
    if a.ino != b.ino:
        return True
    return a.end > b.end


def _last_writer(fd: int, claim: Claim) -> bool:
    """Whether nothing was appended after ``claim`` (then nobody else needs our fsync).

    Only a shortcut: the claim made is then our own record's end, never the file size.
    """
    try:
        return os.fstat(fd).st_size == claim.end
    except OSError:
        return False
