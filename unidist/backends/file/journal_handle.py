"""One stored object (counter, bucket, queue, group) as seen by one process: files, locks, cache.

Directory of an object (``<root>/<family>/<name>/``, 0700)::

    lock            flock target; one descriptor per object kept open by each process
    sync            group-commit marker: the highest fsynced journal offset (``fsync=always``)
    journal.<G>     the current journal generation G (records, see :mod:`.journal`)
    snap.<G>        the state at the start of generation G (absent for G == 1)
    journal.<G-1>, snap.<G-1>   the previous generation, kept to rebuild a damaged snap.<G>
    *.tmp.*         temporary files of an interrupted snapshot/rotation (removed at open)

Every operation runs under an in-process ``threading.Lock`` and the object's exclusive flock,
for the whole read-modify-write. Each process caches the decoded state plus the generation and
byte offset of the journal it has applied; under the lock it ``fstat``-s its journal and
replays only the records other processes appended since (one ``fstat`` and, when the size
changed, one ``pread`` of the new tail). A journal unlinked under us (``st_nlink == 0``: two or
more rotations behind) triggers a full reload.

Under ``fsync=always`` the ``fdatasync`` of a record is *not* done under those locks: the
record is appended under them, and :meth:`Handle.release` then waits, without them, until
the journal is durable past the record's end, sharing fsyncs with the other writers of the
object, threads and processes (group commit; protocol in :mod:`._groupcommit`).

Compaction: once a generation holds :attr:`StoreConfig.compact_records` records and at least
as many bytes as the last snapshot, the process appends a *seal* record ``{"seal": G+1}`` to
``journal.<G>``, writes the state to ``snap.<G+1>`` (tmp O_EXCL 0600 → fsync → rename → fsync
directory), creates ``journal.<G+1>`` the same way holding only its header record, and deletes
generation G-1. Other processes learn of the rotation from the seal in the tail they read
anyway and continue with ``journal.<G+1>`` without re-reading the snapshot (they had applied
all of G); whoever finds a seal without the next journal finishes the rotation. Every snapshot
and journal header names the object kind, name and generation, so a snapshot is never paired
with the wrong journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from unidist.backends.file import _io
from unidist.backends.file._groupcommit import (
    SYNC_FILE,
    Claim,
    GroupCommit,
    Pending,
    SyncFailed,
    SyncFd,
)
from unidist.backends.file._objects import ObjectState
from unidist.backends.file._objects_queue import GEN_SHIFT
from unidist.backends.file.journal import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAX_RECORD,
    _valid_at,
    decode_payload,
    dumps,
    frame,
    frame_head,
    read_single,
    read_single_parts,
    scan,
)
from unidist.errors import BackendUnavailable, CorruptData

log = logging.getLogger("unidist.backends.file")


def _fdatasync(fd: int) -> None:
    """fdatasync through the injectable I/O layer (tests also replace this name)."""
    _io.fdatasync(fd)


_APPLY_ERRORS = (KeyError, ValueError, TypeError, OverflowError, IndexError, AttributeError)
_SNAPSHOT_LIMIT = 1 << 62
_SNAP_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
#: descriptors of kept older journals a handle keeps open (bodies are read in put order, so
#: the oldest one or two generations are the ones in use).
MAX_SEGMENT_FDS = 2
#: body bytes one relocation record may carry (see Handle._relocate).
RELOCATE_BYTES = 16 << 20
#: a journal this long is compacted whatever its record count (big batch records).
COMPACT_BYTES = 8 << 20


def _sync_fd(fd: int) -> None:
    """``_fdatasync`` looked up per call (tests replace it to inject failures)."""
    _fdatasync(fd)


class TornTailWarning(RuntimeWarning):
    """A torn journal tail was cut at open (names file, offset and bytes cut)."""


class RecoveryWarning(RuntimeWarning):
    """A damaged or missing snapshot was rebuilt from the previous journal generation."""


class Reopen(Exception):
    """The handle was closed (evicted or after fork) before it could be used; get a new one."""


def _warn(category: type[Warning], message: str) -> None:
    log.warning("%s", message)
    warnings.warn(message, category, stacklevel=4)


@dataclass
class StoreConfig:
    """Settings shared by every handle of one backend instance."""

    root: str
    url: str
    fsync_mode: str = "always"
    fsync_interval: float = 0.05
    compact_records: int = 1000
    schedule_flush: Callable[[Handle], None] = field(default=lambda h: None)


class Handle:
    """One object's descriptors, locks and cached state in this process (thread-safe)."""

    def __init__(
        self, cfg: StoreConfig, cls: type[ObjectState], family: str, name: str, dir_fd: int
    ) -> None:
        self.cfg = cfg
        self.cls = cls
        self.name = name
        self.path = f"{cfg.root}/{family}/{name}"
        self.dir_fd = dir_fd
        self.lock_fd = -1
        self.tlock = threading.Lock()
        self.state: ObjectState | None = None
        self.fd = -1
        self.gen = 0
        self.seq = 0
        self.offset = 0
        self.nrec = 0
        self.snap_bytes = 0
        self.compact_at = cfg.compact_records
        self.poisoned: str | None = None
        self.closed = False
        self.dirty = False
        self.last_sync = 0.0
        self.cleaned = False
        self.sealed = False
        self.ino = 0
        self.pending: Pending | None = None
        #: older journal generations on disk (kept while the state reads bodies from them).
        self.old_gens: set[int] = set()
        #: read-only descriptors of kept older generations, by generation.
        self.segs: dict[int, int] = {}
        self.drop_later = False
        #: the last record read by location (a put_many record serves several deliveries).
        self.last_read: tuple[int, dict[str, Any]] = (-1, {})
        self.gc: GroupCommit | None = None
        if cfg.fsync_mode == "always":
            self.gc = GroupCommit(dir_fd, _sync_fd, self._refresh)
        try:
            self.lock_fd = _io.open_file("lock", dir_fd, os.O_RDWR, create=True)
        except BaseException:
            _io.close_quietly(dir_fd)
            raise

    # ------------------------------------------------------------------ lifecycle
    def close(self, *, flush: bool = True) -> None:
        """Close every descriptor (after a final fsync of pending batch writes)."""
        with self.tlock:
            self._close_locked(flush=flush)

    def try_close(self) -> bool:
        """Close unless another thread is using the handle right now."""
        if not self.tlock.acquire(blocking=False):
            return False
        try:
            self._close_locked(flush=True)
        finally:
            self.tlock.release()
        return True

    def _close_locked(self, *, flush: bool) -> None:
        if self.closed:
            return
        if flush and self.dirty and self.poisoned is None and self.fd >= 0:
            with contextlib.suppress(OSError):
                _fdatasync(self.fd)
        self.closed = True
        self.state = None
        if self.gc is not None:
            self.gc.close()
        self._close_segments()
        for fd in (self.fd, self.lock_fd, self.dir_fd):
            _io.close_quietly(fd)
        self.fd = self.lock_fd = self.dir_fd = -1

    def abandon(self) -> None:
        """After fork in the child: close our copies of the descriptors, touch no lock."""
        self.closed = True
        self.state = None
        if self.gc is not None:
            self.gc.abandon()
        self._close_segments()
        for fd in (self.fd, self.lock_fd, self.dir_fd):
            _io.close_quietly(fd)

    def flush(self) -> None:
        """fsync pending batch-mode records (called by the store's flusher thread)."""
        with self.tlock:
            if self.closed or not self.dirty or self.poisoned is not None:
                return
            try:
                _fdatasync(self.fd)
            except OSError as exc:
                self._poison(exc, "fsync")
                return
            self.dirty = False
            self.last_sync = time.monotonic()

    # ------------------------------------------------------------------ locking
    def acquire(self) -> ObjectState:
        """Hold the object exclusively (threads and processes) with the state brought current.

        Pair every successful call with :meth:`release`.

        Raises:
            Reopen: the handle was closed meanwhile (nothing is held).
            BackendUnavailable: an earlier write failed (poisoned) or I/O failed now.
            CorruptData: the stored object is damaged (nothing is held).
        """
        self.tlock.acquire()
        try:
            if self.closed:
                raise Reopen
            if self.poisoned is not None:
                raise BackendUnavailable(self.poisoned, url=self.cfg.url)
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise BackendUnavailable(
                    f"{self.path}: cannot lock: {exc.strerror}", url=self.cfg.url
                ) from exc
            try:
                self._sync()
            except OSError as exc:
                self._forget()
                raise BackendUnavailable(
                    f"{self.path}: cannot read: {exc.strerror or exc}", url=self.cfg.url
                ) from exc
            except BaseException:
                self._forget()
                raise
            finally:
                if self.state is None:
                    with contextlib.suppress(OSError):
                        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        except BaseException:
            self.tlock.release()
            raise
        assert self.state is not None
        return self.state

    def release(self) -> None:
        """Release what :meth:`acquire` took; under ``fsync=always`` then wait for durability.

        Records committed while holding the object are made durable by group commit after
        the locks are released (see :mod:`._groupcommit`), so this returns only once they
        are on disk.

        Raises:
            BackendUnavailable: the fsync failed; the handle is poisoned.
        """
        pending = self.pending
        if pending is None:
            self._unlock()
            return
        self.pending = None
        try:
            self._unlock()
        finally:
            self._await(pending)

    def _unlock(self) -> None:
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        except OSError:
            pass  # closing the descriptor releases it anyway
        finally:
            self.tlock.release()

    def _await(self, pending: Pending) -> None:
        """Wait (without the object's locks) until ``pending`` is durable."""
        gc = self.gc
        assert gc is not None
        if self.poisoned is not None:
            gc.drop(pending.fd)
            raise BackendUnavailable(self.poisoned, url=self.cfg.url)
        try:
            gc.wait(pending)
        except SyncFailed as exc:
            raise self._poison(exc.cause, "fsync", truncate=False) from exc.cause

    def _refresh(self) -> tuple[Claim, SyncFd] | None:
        """For the group-commit leader: the current journal's claim and its descriptor."""
        assert self.gc is not None
        try:
            self.acquire()
        except (Reopen, CorruptData, BackendUnavailable):
            return None
        try:
            return Claim(self.gen, self.ino, self.offset), self.gc.hold(self.gen, self.ino, self.fd)
        except OSError:
            return None
        finally:
            self._unlock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[ObjectState]:
        """:meth:`acquire`/:meth:`release` as a context manager."""
        st = self.acquire()
        try:
            yield st
        finally:
            self.release()

    def _forget(self) -> None:
        _io.close_quietly(self.fd)
        self.fd = -1
        self.state = None
        self._close_segments()

    # ------------------------------------------------------------------ kept segments
    def _snapshot(self, gen: int, state: ObjectState) -> list[bytes]:
        """The snapshot record of ``state`` as buffers to write one after another: the
        record header, then the JSON payload in the parts the state encodes it in (a queue's
        packed index is never joined into one copy)."""
        prefix = _SNAP_ENCODER.encode(self._header(gen))[:-1] + ',"state":'
        parts = [prefix.encode(), *state.dump_parts(), b"}"]
        return [frame_head(0, *parts, limit=_SNAPSHOT_LIMIT), *parts]

    def _compact_bytes(self, snap_size: int) -> int:
        return int(snap_size * self.cls.compact_ratio)

    def _close_segments(self) -> None:
        self.last_read = (-1, {})
        for fd in self.segs.values():
            _io.close_quietly(fd)
        self.segs.clear()

    def _drop_segments(self, old: set[int], pinned: set[int]) -> None:
        """Delete older journals (except generation G-1) that no live message reads from."""
        for g in sorted(old):
            if g >= self.gen - 1 or g in pinned:
                continue
            fd = self.segs.pop(g, None)
            if fd is not None:
                _io.close_quietly(fd)
            with contextlib.suppress(FileNotFoundError):
                _io.unlink(f"journal.{g}", dir_fd=self.dir_fd)
            self.old_gens.discard(g)

    def read_at(self, loc: int) -> dict[str, Any]:
        """The record at location ``loc`` (``generation << 40 | offset``), checksum verified.

        Call while holding :meth:`acquire` (the state's locations are current then).

        Raises:
            CorruptData: the record is missing, damaged or not a JSON object.
        """
        if loc == self.last_read[0]:
            return self.last_read[1]
        gen, off = loc >> GEN_SHIFT, loc & ((1 << GEN_SHIFT) - 1)
        path = self._jpath(gen)
        try:
            fd = self.fd if gen == self.gen else self._segment(gen)
            head = _pread_all(fd, off, HEADER_SIZE)
            length = int.from_bytes(head[2:6], "big") if len(head) == HEADER_SIZE else 0
            data = head + _pread_all(fd, off + HEADER_SIZE, min(length, MAX_RECORD))
        except FileNotFoundError:
            raise CorruptData(
                f"{path} is missing, but a queued message's body is in it (offset {off})",
                path=path,
                offset=off,
            ) from None
        if _valid_at(memoryview(data), 0, MAX_RECORD) is None:
            raise CorruptData(
                f"{path}: the message record at offset {off} is damaged", path=path, offset=off
            )
        rec = decode_payload(data[HEADER_SIZE:], path, off)
        self.last_read = (loc, rec)
        return rec

    def _segment(self, gen: int) -> int:
        fd = self.segs.get(gen)
        if fd is None:
            if len(self.segs) >= MAX_SEGMENT_FDS:
                _io.close_quietly(self.segs.pop(next(iter(self.segs))))
            fd = self.segs[gen] = _io.open_file(f"journal.{gen}", self.dir_fd, os.O_RDONLY)
        return fd

    # ------------------------------------------------------------------ reading
    def _sync(self) -> None:
        if self.state is None:
            self._load()
            return
        if self.drop_later:
            self.drop_later = False
            self._drop_segments(set(self.old_gens), self.state.pinned())
        st = os.fstat(self.fd)
        if st.st_nlink == 0 or st.st_size < self.offset:
            # Our generation was deleted (we are 2+ rotations behind) or shrank under us.
            self._forget()
            self._load()
            return
        if st.st_size > self.offset:
            self._read_tail(st.st_size)
        if self.sealed:
            self._advance()

    def _jpath(self, gen: int) -> str:
        return f"{self.path}/journal.{gen}"

    def _read_tail(self, size: int) -> None:
        assert self.state is not None
        data = _pread_all(self.fd, self.offset, size - self.offset)
        path = self._jpath(self.gen)
        sc = scan(data, path=path, base=self.offset, next_seq=self.seq + 1)
        for off, seq, op in sc.records:
            if self.sealed:
                raise _after_seal(path, off)
            if "seal" in op:
                self.sealed = True
            else:
                self._apply(op, path, off)
                self.nrec += 1
            self.seq = seq
        self.offset = sc.end
        if sc.torn:
            self._cut(self.fd, sc.end, sc.torn, path, hole=sc.hole)

    def _apply(
        self, op: dict[str, Any], path: str, offset: int, state: Any = None, gen: int = 0
    ) -> Any:
        target = self.state if state is None else state
        assert target is not None
        target.at = ((gen or self.gen) << GEN_SHIFT) | offset
        try:
            return target.apply(op)
        except _APPLY_ERRORS as exc:
            raise CorruptData(
                f"{path}: record at offset {offset} does not apply to the stored state ({exc!r})",
                path=path,
                offset=offset,
            ) from None

    def _cut(self, fd: int, end: int, nbytes: int, path: str, *, hole: bool = False) -> None:
        _io.ftruncate(fd, end)
        if self.cfg.fsync_mode != "never":
            _fdatasync(fd)
        why = (
            "a zero-filled hole left by a power loss, with the never-synced records after it"
            if hole
            else "an interrupted write that was never acknowledged"
        )
        _warn(TornTailWarning, f"{path}: cut a torn tail of {nbytes} bytes at offset {end} ({why})")

    def _advance(self) -> None:
        """Move to the next generation(s); we have applied all of the sealed current one."""
        while self.sealed:
            try:
                fd = _io.open_file(f"journal.{self.gen + 1}", self.dir_fd, os.O_RDWR | os.O_APPEND)
            except FileNotFoundError:
                if _gens(set(os.listdir(self.dir_fd)), "journal.") - set(range(self.gen + 2)):
                    # Later generations exist: we are several rotations behind and an
                    # intermediate journal is gone (our own one is a kept segment). Reload.
                    self._forget()
                    self._load()
                    return
                # The rotating process died after sealing: finish its rotation.
                self._rotate()
                return
            try:
                offset, seq, nrec, sealed = self._replay(fd, self.gen + 1, self.state)
            except BaseException:
                _io.close_quietly(fd)
                raise
            _io.close_quietly(self.fd)
            self.old_gens.add(self.gen)
            self.fd, self.gen, self.offset, self.seq, self.nrec = (
                fd,
                self.gen + 1,
                offset,
                seq,
                nrec,
            )
            self.ino = os.fstat(fd).st_ino
            self.sealed = sealed
            self.compact_at = self.cfg.compact_records
            self.snap_bytes = self._compact_bytes(self._snap_size(self.gen))

    def _snap_size(self, gen: int) -> int:
        try:
            return os.stat(f"snap.{gen}", dir_fd=self.dir_fd, follow_symlinks=False).st_size
        except OSError:
            return 0

    def _header(self, gen: int) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, "kind": self.cls.kind, "name": self.name, "gen": gen}

    def _check_header(self, hdr: dict[str, Any], gen: int, path: str) -> None:
        want = self._header(gen)
        if any(hdr.get(k) != v for k, v in want.items()):
            got = {k: hdr.get(k) for k in want}
            raise CorruptData(
                f"{path}: header names {got}, expected {want} (file from another object or "
                "generation)",
                path=path,
                offset=0,
            )

    def _replay(
        self, fd: int, gen: int, state: Any, *, strict: bool = False
    ) -> tuple[int, int, int, bool]:
        """Apply journal ``gen`` (open as ``fd``) to ``state``; cut a torn tail unless strict.

        Returns:
            (end offset, last seq, records applied, whether the journal is sealed).
        """
        path = self._jpath(gen)
        data = _pread_all(fd, 0, os.fstat(fd).st_size)
        sc = scan(data, path=path, base=0, next_seq=0)
        if not sc.records:
            if strict:
                raise CorruptData(f"{path}: journal header is missing", path=path, offset=0)
            header = frame(0, dumps(self._header(gen)))
            if data.strip(b"\0") and not header.startswith(data):
                raise CorruptData(
                    f"{path}: no valid journal header (file damaged or not a unidist journal)",
                    path=path,
                    offset=0,
                )
            # Empty, zero-filled or a prefix of the header: torn right after creation.
            _io.ftruncate(fd, 0)
            _io.write_all(fd, header)
            self._cut(fd, len(header), len(data), path)
            return len(header), 0, 0, False
        self._check_header(sc.records[0][2], gen, path)
        sealed = False
        for off, _, op in sc.records[1:]:
            if sealed:
                raise _after_seal(path, off)
            if "seal" in op:
                sealed = True
            else:
                self._apply(op, path, off, state, gen)
        if sc.torn:
            if strict:
                raise CorruptData(f"{path}: torn tail at offset {sc.end}", path=path, offset=sc.end)
            self._cut(fd, sc.end, sc.torn, path, hole=sc.hole)
        return sc.end, sc.records[-1][1], len(sc.records) - 1 - int(sealed), sealed

    def _read_snapshot(self, gen: int) -> ObjectState:
        path = f"{self.path}/snap.{gen}"
        fd = _io.open_file(f"snap.{gen}", self.dir_fd, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            head = _pread_all(fd, 0, min(size, HEADER_SIZE))
            length = int.from_bytes(head[2:6], "big") if len(head) == HEADER_SIZE else -1
            if HEADER_SIZE + length == size:
                # Header and payload read separately: a large payload is never copied.
                obj = read_single_parts(head, _pread_all(fd, HEADER_SIZE, length), path=path)
            else:
                obj = read_single(head + _pread_all(fd, len(head), size), path=path)
        finally:
            _io.close_quietly(fd)
        self._check_header(obj, gen, path)
        try:
            state = self.cls.load(obj["state"])
        except _APPLY_ERRORS as exc:
            raise CorruptData(
                f"{path}: snapshot content is malformed ({exc!r})", path=path, offset=-1
            ) from None
        return state

    def _load(self) -> None:
        """Full open: clean up, pick the generation, load snapshot, replay the journal."""
        dfd = self.dir_fd
        names = set(os.listdir(dfd))
        if not self.cleaned:
            for tmp in [n for n in names if _io.TMP_MARK in n]:
                with contextlib.suppress(OSError):
                    _io.unlink(tmp, dir_fd=dfd)
                names.discard(tmp)
            self.cleaned = True
        jgens = sorted(_gens(names, "journal."))
        sgens = _gens(names, "snap.")
        if not jgens:
            if sgens:
                path = f"{self.path}/snap.{max(sgens)}"
                raise CorruptData(
                    f"{self.path}: snapshot present but its journal is missing", path=path
                )
            # A fresh journal.1: forget any group-commit claim about an earlier one.
            with contextlib.suppress(OSError):
                _io.unlink(SYNC_FILE, dir_fd=dfd)
            # Durable in every fsync mode (once per object): a power loss must never leave a
            # journal.1 whose header is garbage, which would make the object unopenable.
            _io.atomic_write(dfd, "journal.1", frame(0, dumps(self._header(1))), durable=True)
            jgens = [1]
        gen = jgens[-1]
        stale = [f"snap.{g}" for g in sgens if g > gen or g < gen - 1]
        old = {g for g in jgens if g < gen}
        self.old_gens = set(old)
        self._close_segments()
        for old_name in stale:
            with contextlib.suppress(OSError):
                _io.unlink(old_name, dir_fd=dfd)
        state = self._base(gen, names)
        fd = _io.open_file(f"journal.{gen}", dfd, os.O_RDWR | os.O_APPEND)
        try:
            offset, seq, nrec, sealed = self._replay(fd, gen, state)
        except BaseException:
            _io.close_quietly(fd)
            raise
        self.fd, self.gen, self.offset, self.seq, self.nrec = fd, gen, offset, seq, nrec
        self.ino = os.fstat(fd).st_ino
        self.sealed = sealed
        self.state = state
        self.compact_at = self.cfg.compact_records
        self.snap_bytes = self._compact_bytes(self._snap_size(gen))
        self._drop_segments(old, state.pinned())
        self._advance()

    def _base(self, gen: int, names: set[str]) -> ObjectState:
        """The state at the start of generation ``gen`` (snapshot, or rebuilt from gen-1)."""
        if gen == 1:
            return self.cls.load(None)
        spath = f"{self.path}/snap.{gen}"
        try:
            return self._read_snapshot(gen)
        except FileNotFoundError:
            problem = "is missing"
        except CorruptData as exc:
            problem = f"is damaged ({exc})"
        prev = gen - 1
        if f"journal.{prev}" not in names or (prev > 1 and f"snap.{prev}" not in names):
            raise CorruptData(
                f"{spath} {problem}, and generation {prev} needed to rebuild it is gone; "
                "restore it from a backup",
                path=spath,
            )
        try:
            state = self.cls.load(None) if prev == 1 else self._read_snapshot(prev)
            fd = _io.open_file(f"journal.{prev}", self.dir_fd, os.O_RDONLY)
            try:
                if self._replay(fd, prev, state, strict=True)[3] is False:
                    raise CorruptData(f"{self._jpath(prev)} is not sealed", path=spath)
            finally:
                _io.close_quietly(fd)
        except (CorruptData, OSError) as exc:
            raise CorruptData(
                f"{spath} {problem}, and rebuilding it from generation {prev} failed: {exc}",
                path=spath,
            ) from None
        _io.atomic_write(self.dir_fd, f"snap.{gen}", self._snapshot(gen, state), durable=True)
        _warn(RecoveryWarning, f"{spath} {problem}; rebuilt it from generation {prev}")
        return state

    # ------------------------------------------------------------------ writing
    def commit(self, op: dict[str, Any], payload: bytes | None = None) -> Any:
        """Append ``op`` to the journal (durable per fsync mode), apply it, return its result.

        Must be called while holding :meth:`acquire`. The record is written with one
        ``write``; under ``fsync=always`` it is made durable by group commit in
        :meth:`release` (after the locks are dropped), which returns only once it is on disk.
        ``payload``, when given, is ``op`` already encoded exactly as
        :func:`~.journal.dumps` would (a caller's cheaper encoding of a fixed shape).

        Raises:
            RecordTooLarge: the record exceeds the size limit; nothing was written.
            BackendUnavailable: the write or fsync failed; the handle is poisoned.
        """
        assert self.state is not None
        rec = frame(self.seq + 1, dumps(op) if payload is None else payload)
        gc = self.gc
        self._append(rec, inline=gc is None)
        result = self._apply(op, self._jpath(self.gen), self.offset)
        self.offset += len(rec)
        self.seq += 1
        self.nrec += 1
        if gc is not None:
            self._defer_sync()
        if (self.nrec >= self.compact_at or self.offset >= COMPACT_BYTES) and (
            self.offset >= self.snap_bytes
        ):
            self._compact()
        return result

    def _defer_sync(self) -> None:
        """Leave the fsync of the record just written to group commit (in :meth:`release`)."""
        gc = self.gc
        assert gc is not None
        claim = Claim(self.gen, self.ino, self.offset)
        try:
            sfd = gc.hold(self.gen, self.ino, self.fd)
        except OSError:
            # No descriptor to spare: sync now, under the locks, as without group commit.
            try:
                _fdatasync(self.fd)
            except OSError as exc:
                raise self._poison(exc, "fsync") from exc
            gc.note(claim)
            return
        if self.pending is not None:
            gc.drop(self.pending.fd)
        self.pending = Pending(claim, sfd)

    def _append(self, rec: bytes, *, inline: bool = True) -> None:
        """Write ``rec``; fsync it now per the fsync mode unless ``inline`` is false."""
        try:
            _io.write_all(self.fd, rec)
            mode = self.cfg.fsync_mode if inline else "never"
            if mode == "always":
                _fdatasync(self.fd)
            elif mode == "batch" and not self.dirty:
                # The flusher thread syncs it within fsync_interval, never under the object's
                # flock (an fsync there would stall every process). Already dirty means
                # already handed to the flusher (queued, or taken and waiting for our lock):
                # it syncs this record too, so nothing is done per record.
                self.dirty = True
                self.cfg.schedule_flush(self)
        except OSError as exc:
            raise self._poison(exc, "write") from exc

    def _poison(self, exc: OSError, what: str, *, truncate: bool = True) -> BackendUnavailable:
        """Refuse further use of this handle; ``truncate`` (only under the locks) cuts the
        unacknowledged tail written since the last complete record."""
        if truncate:
            with contextlib.suppress(OSError):
                _io.ftruncate(self.fd, self.offset)
        if self.poisoned is not None:
            return BackendUnavailable(self.poisoned, url=self.cfg.url)
        self.poisoned = (
            f"{self._jpath(self.gen)}: {what} failed ({exc.strerror or exc}); the last operation "
            "may not be durable, so this object refuses further use in this process. Reconnect "
            "(unidist.backends.reset()) to reopen it and replay its journal."
        )
        log.error("%s", self.poisoned)
        return BackendUnavailable(self.poisoned, url=self.cfg.url)

    def _compact(self) -> None:
        """Seal this generation and rotate to the next (snapshot + fresh journal).

        The seal record goes first, so a process still on this generation learns of the
        rotation by reading the tail it reads anyway; whoever finds a seal without the next
        journal (the rotator died) finishes the rotation. If finishing fails here, the
        operation that triggered it has still succeeded: the next operation retries it.

        Before the seal, the few live messages of a sparse older journal (one kept only for
        them) are copied into a relocation record, so that the old journal can go and disk
        use stays proportional to what is queued.
        """
        self._relocate()
        rec = frame(self.seq + 1, dumps({"seal": self.gen + 1}))
        self._append(rec)
        self.offset += len(rec)
        self.seq += 1
        self.sealed = True
        if self.gc is not None:
            # The seal was fdatasynced under the locks, after every record of this journal.
            self.gc.note(Claim(self.gen, self.ino, self.offset))
        try:
            self._rotate()
        except OSError as exc:
            log.warning("%s: journal rotation failed (%s); will retry", self.path, exc)

    def _relocate(self) -> None:
        """Append a relocation record for sparse kept journals (see :meth:`_compact`); it is
        made durable by the seal's fsync that follows."""
        assert self.state is not None
        plan = self.state.relocatable(self.gen)
        if not plan:
            return
        take: list[tuple[int, str, float]] = []
        budget = RELOCATE_BYTES
        for gen, locs in plan:
            try:
                size = os.stat(f"journal.{gen}", dir_fd=self.dir_fd, follow_symlinks=False).st_size
                rows = [(loc, *self.state.body(loc, self.read_at)) for loc in locs]
            except (OSError, CorruptData) as exc:
                log.warning("%s: not relocating journal.%d (%s)", self.path, gen, exc)
                continue
            nbytes = sum(len(body) for _, body, _ in rows)
            if 4 * nbytes < size and nbytes <= budget:
                take += rows
                budget -= nbytes
        if not take:
            return
        op = {"o": "m", "m": take}
        rec = frame(self.seq + 1, dumps(op))
        self._append(rec, inline=False)
        self._apply(op, self._jpath(self.gen), self.offset)
        self.offset += len(rec)
        self.seq += 1
        self.nrec += 1

    def _rotate(self) -> None:
        """Write ``snap.<G+1>`` and ``journal.<G+1>`` for a sealed generation G and switch."""
        assert self.state is not None
        assert self.sealed
        if self.cfg.fsync_mode != "never":
            # The sealed journal is durable before its successor exists (the rotator that
            # sealed it may have died before its fsync).
            try:
                _fdatasync(self.fd)
            except OSError as exc:
                raise self._poison(exc, "fsync", truncate=False) from exc
        new = self.gen + 1
        dfd = self.dir_fd
        snap = self._snapshot(new, self.state)
        header = frame(0, dumps(self._header(new)))
        _io.atomic_write(dfd, f"snap.{new}", snap, durable=True)
        _io.atomic_write(dfd, f"journal.{new}", header, durable=True)
        fd = _io.open_file(f"journal.{new}", dfd, os.O_RDWR | os.O_APPEND)
        _io.close_quietly(self.fd)
        self.fd, self.gen, self.offset, self.seq, self.nrec = fd, new, len(header), 0, 0
        self.ino = os.fstat(fd).st_ino
        self.sealed = False
        self.dirty = False
        self.snap_bytes = self._compact_bytes(sum(len(p) for p in snap))
        del snap
        self.compact_at = self.cfg.compact_records
        with contextlib.suppress(OSError):
            _io.unlink(f"snap.{new - 2}", dir_fd=dfd)
        self.old_gens.add(new - 1)
        # Deleted at the next acquire: the caller may still read a body it just took.
        self.drop_later = True


def _after_seal(path: str, offset: int) -> CorruptData:
    return CorruptData(
        f"{path}: record at offset {offset} follows the generation's seal record",
        path=path,
        offset=offset,
    )


def _gens(names: set[str], prefix: str) -> set[int]:
    out = set()
    for n in names:
        if n.startswith(prefix) and n[len(prefix) :].isdigit():
            out.add(int(n[len(prefix) :]))
    return out


def _pread_all(fd: int, offset: int, size: int) -> bytes:
    """Read exactly ``size`` bytes at ``offset`` (fewer only if the file is shorter)."""
    chunks = []
    while size > 0:
        chunk = _io.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(chunks)
