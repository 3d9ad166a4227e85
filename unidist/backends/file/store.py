"""Counters, state buckets, queues and membership of the file backend.

Layout below the data directory (directories 0700, files 0600)::

    counters/<name>/   state/<bucket>/   queues/<name>/   members/<group>/

each an object directory managed by :class:`~unidist.backends.file.journal_handle.Handle`
(a ``lock`` file, ``journal.<G>`` records, ``snap.<G>`` snapshots).

Atomicity: every method is one read-modify-write under the object's in-process lock and its
exclusive flock, so it is atomic across the threads and processes of the host. A mutation is
one journal record (``state_update`` of many keys included), so after a crash it is either
wholly present or wholly absent.

Durability (``fsync`` URL option): ``always`` — a mutating call returns after its record is
``fdatasync``\\ ed (and the directory after any file it created or renamed); the fsync runs
after the object's locks are released and is shared by concurrent writers, threads and
processes alike (group commit, see :mod:`._groupcommit`), so throughput grows with the
number of writers instead of queueing one fsync per lock hold; ``batch`` — records
are synced at most ``fsync_interval`` seconds later by a background flusher; ``never`` — the
kernel decides. A killed process loses nothing that returned, in every mode. Snapshots are
always written durably.

Errors: damaged storage raises :class:`~unidist.errors.CorruptData` naming file and offset; an
I/O failure raises :class:`~unidist.errors.BackendUnavailable`, and a failed journal write or
fsync poisons that object in this process until the backend is closed and reopened (no
retry-then-success, see RELIABILITY rule 5). Calls that change nothing write nothing.
"""

from __future__ import annotations

import json
import operator
import os
import secrets
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from unidist._names import check_name
from unidist.backends.base import STATE_ABSENT, Delivery
from unidist.backends.file import _io
from unidist.backends.file._objects import (
    INT64_MAX,
    INT64_MIN,
    BucketState,
    CounterState,
    GroupState,
    ObjectState,
)
from unidist.backends.file._objects_queue import Msg, QueueState
from unidist.backends.file.journal import MAX_RECORD, RecordTooLarge
from unidist.backends.file.journal_handle import Handle, Reopen, StoreConfig
from unidist.backends.file.repair import RepairReport, repair_object
from unidist.codec import JSON, decode, encode
from unidist.errors import BackendUnavailable, InvalidName

T = TypeVar("T")

#: object handles kept open per backend (3 descriptors each; up to 5 under fsync=always, plus
#: a queue's kept journals while it reads them); older idle ones are closed.
MAX_OPEN_HANDLES: Final = 128

_FAMILIES: Final[dict[str, tuple[str, type[ObjectState], str]]] = {
    "counter": ("counters", CounterState, "counter name"),
    "state": ("state", BucketState, "bucket name"),
    "queue": ("queues", QueueState, "queue name"),
    "group": ("members", GroupState, "group name"),
}

_STORES: weakref.WeakSet[FileStoreMixin] = weakref.WeakSet()

#: a str as a JSON string literal, as :func:`~.journal.dumps` writes it (C-accelerated).
_jstr: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._store_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _fits(*texts: str) -> None:
    """Refuse, before any copy or I/O, values that cannot fit one journal record.

    Raises:
        RecordTooLarge: the texts exceed :data:`~.journal.MAX_RECORD` (a ``ValueError``).
    """
    total = sum(len(t) for t in texts)  # characters <= UTF-8 bytes
    if total > MAX_RECORD:
        raise RecordTooLarge(
            f"a single operation of at least {total} bytes exceeds the file backend's record "
            f"limit of {MAX_RECORD} bytes"
        )


def _reader(h: Handle, st: QueueState) -> Callable[[int], tuple[str, float]]:
    """Reads a message's (body, enqueued_at) by location from the object's journals."""
    return lambda loc: st.body(loc, h.read_at)


def _check_i64(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"{what} {value} is outside the signed 64-bit range")
    return value


class FileStoreMixin:
    """The journaled objects of :class:`~unidist.backends.file.FileBackend` (see module docs)."""

    root: Path
    fsync_mode: str
    fsync_interval: float

    # ------------------------------------------------------------------ lifecycle
    def _init_store(self) -> None:
        self._cfg = StoreConfig(
            root=str(self.root),
            url=str(getattr(self, "url", self.root)),
            fsync_mode=self.fsync_mode,
            fsync_interval=self.fsync_interval,
            compact_records=10_000 if self.fsync_mode == "never" else 1000,
            schedule_flush=self._schedule_flush,
        )
        self._pid = os.getpid()
        self._hlock = threading.Lock()
        self._handles: OrderedDict[tuple[str, str], Handle] = OrderedDict()
        self._dirfds: dict[str, int] = {}
        self._flush_cv = threading.Condition()
        self._dirty: set[Handle] = set()
        self._flusher: threading.Thread | None = None
        self._flush_stop = False
        _STORES.add(self)

    def _close_store(self) -> None:
        """Flush and close every handle; the next operation reopens (and replays) lazily."""
        with self._flush_cv:
            self._flush_stop = True
            self._dirty.clear()
            self._flush_cv.notify_all()
            flusher, self._flusher = self._flusher, None
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=5)
        with self._hlock:
            handles = list(self._handles.values())
            self._handles.clear()
            fds = list(self._dirfds.values())
            self._dirfds.clear()
        for h in handles:
            h.close()
        for fd in fds:
            _io.close_quietly(fd)
        with self._flush_cv:
            self._flush_stop = False

    def _store_after_fork(self) -> None:
        # The child must not use (or release) anything the parent holds: drop every handle,
        # recreate the in-process locks, forget the flusher thread (it does not exist here).
        for h in list(self._handles.values()):
            h.abandon()
        for fd in self._dirfds.values():
            _io.close_quietly(fd)
        self._handles = OrderedDict()
        self._dirfds = {}
        self._hlock = threading.Lock()
        self._flush_cv = threading.Condition()
        self._dirty = set()
        self._flusher = None
        self._flush_stop = False
        self._pid = os.getpid()

    # ------------------------------------------------------------------ batch flusher
    def _schedule_flush(self, h: Handle) -> None:
        with self._flush_cv:
            self._dirty.add(h)
            if self._flusher is None and not self._flush_stop:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="unidist-file-flush", daemon=True
                )
                self._flusher.start()

    def _flush_loop(self) -> None:
        idle = 0
        while True:
            with self._flush_cv:
                if self._flush_stop:
                    return
                self._flush_cv.wait(self.fsync_interval)
                batch = list(self._dirty)
                self._dirty.clear()
                idle = 0 if batch else idle + 1
                if idle > 100:
                    self._flusher = None
                    return
            for h in batch:
                h.flush()

    # ------------------------------------------------------------------ handles
    def _family_fd(self, family: str, create: bool) -> int | None:
        fd = self._dirfds.get(family)
        if fd is not None:
            return fd
        root_fd = self._dirfds.get("")
        if root_fd is None:
            root_fd = os.open(str(self.root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._dirfds[""] = root_fd
        got = _io.open_dir(family, root_fd, create=create)
        if got is not None:
            self._dirfds[family] = got
            if create and self.fsync_mode != "never":
                _io.fsync(root_fd)
        return got

    def _handle(self, kind: str, name: str, create: bool) -> Handle | None:
        family, cls, what = _FAMILIES[kind]
        check_name(name, what)
        if os.getpid() != self._pid:
            self._store_after_fork()
        key = (family, name)
        with self._hlock:
            h = self._handles.get(key)
            if h is not None and not h.closed:
                self._handles.move_to_end(key)
                return h
            try:
                fam_fd = self._family_fd(family, create)
                if fam_fd is None:
                    return None
                dir_fd = _io.open_dir(name, fam_fd, create=create)
                if dir_fd is None:
                    return None
                if create and self.fsync_mode != "never":
                    _io.fsync(fam_fd)
                h = Handle(self._cfg, cls, family, name, dir_fd)
            except OSError as exc:
                raise BackendUnavailable(
                    f"cannot open {self.root}/{family}/{name}: {exc.strerror or exc}",
                    url=self._cfg.url,
                ) from exc
            self._handles[key] = h
            if len(self._handles) > MAX_OPEN_HANDLES:
                for old_key, old in list(self._handles.items()):
                    if len(self._handles) <= MAX_OPEN_HANDLES:
                        break
                    if old is not h and old.try_close():
                        del self._handles[old_key]
            return h

    def _acquire(self, kind: str, name: str, create: bool) -> tuple[Handle, Any] | None:
        """Hold the object (see :meth:`Handle.acquire`): its handle and current state, or
        None if it does not exist and ``create`` is false. Pair with ``handle.release()``.

        The handle of a name in use is found with one dict lookup (its name was checked when
        it was opened); anything else goes through :meth:`_handle`.
        """
        key = (_FAMILIES[kind][0], name)
        h = self._handles.get(key)
        if h is not None:
            try:
                self._handles.move_to_end(key)  # recently used: evicted last
            except KeyError:
                h = None  # evicted by another thread just now
        for _ in range(100):
            if h is None or h.closed or os.getpid() != self._pid:
                h = self._handle(kind, name, create)
                if h is None:
                    return None
            try:
                return h, h.acquire()
            except Reopen:
                h = None
        raise BackendUnavailable(f"could not open {kind} {name!r}", url=self._cfg.url)

    def _run(
        self, kind: str, name: str, fn: Callable[[Handle, Any], T], *, create: bool, default: T
    ) -> T:
        """Run ``fn(handle, state)`` under the object's locks; ``default`` if it does not exist."""
        got = self._acquire(kind, name, create)
        if got is None:
            return default
        h, st = got
        try:
            return fn(h, st)
        finally:
            h.release()

    def _names(self, kind: str) -> list[str]:
        family, _, _ = _FAMILIES[kind]
        try:
            entries = os.listdir(self.root / family)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot list {self.root / family}: {exc.strerror}", url=self._cfg.url
            ) from exc
        out = []
        for n in sorted(entries):
            try:
                check_name(n)
                st = os.stat(self.root / family / n, follow_symlinks=False)
            except (InvalidName, OSError):
                continue
            if stat.S_ISDIR(st.st_mode):
                out.append(n)
        return out

    # ------------------------------------------------------------------ repair
    def repair(self, *, dry_run: bool = False) -> list[RepairReport]:
        """Quarantine damaged journal records of every object and keep the rest.

        For each object (counters, buckets, queues, groups) the bad stretches and records of
        its current journal go to a ``quarantine.*.jsonl`` side file in its directory and the
        journal is rewritten with the records that remain (see
        :mod:`unidist.backends.file.repair`). This process's open handles are closed first,
        so its next operation replays the repaired journal; other processes reload it too.

        Args:
            dry_run: only report what would be quarantined.

        Returns:
            One report per object that had something quarantined or could not be repaired
            (``error`` set: e.g. a damaged snapshot whose previous generation is gone).

        Raises:
            BackendUnavailable: the data directory cannot be read or written.
        """
        self._close_store()
        reports: list[RepairReport] = []
        for kind, (family, cls, _) in _FAMILIES.items():
            for name in self._names(kind):
                try:
                    with self._hlock:
                        fam_fd = self._family_fd(family, False)
                        dir_fd = (
                            None if fam_fd is None else _io.open_dir(name, fam_fd, create=False)
                        )
                    if dir_fd is None:
                        continue
                    rep = repair_object(self._cfg, cls, family, name, dir_fd, dry_run=dry_run)
                except OSError as exc:
                    raise BackendUnavailable(
                        f"cannot repair {self.root}/{family}/{name}: {exc.strerror or exc}",
                        url=self._cfg.url,
                    ) from exc
                if rep.quarantined or rep.error:
                    reports.append(rep)
        return reports

    # ------------------------------------------------------------------ counters
    def counter_add(self, name: str, delta: int, request_id: str) -> int:
        """Add ``delta`` atomically and durably (one record); see :meth:`Backend.counter_add`.

        Raises:
            OverflowError: the result leaves the signed 64-bit range; nothing is written.
        """
        delta = operator.index(delta)
        got = self._acquire("counter", name, True)
        assert got is not None
        h, st = got
        try:
            new = st.value + delta
            if not INT64_MIN <= new <= INT64_MAX:
                _check_i64(new, f"counter {name!r} + {delta} =")
            # The record {"v": new}, encoded directly (what journal.dumps would write).
            return cast(int, h.commit({"v": new}, b'{"v":%d}' % new))
        finally:
            h.release()

    def counter_get(self, name: str) -> int:
        """The current value (0 for a counter never written)."""
        return self._run(
            "counter", name, lambda h, st: cast(int, st.value), create=False, default=0
        )

    def counter_set(self, name: str, value: int) -> None:
        """Set the value (one durable record).

        Raises:
            OverflowError: ``value`` is outside the signed 64-bit range.
        """
        value = _check_i64(operator.index(value), "counter value")
        self._run("counter", name, lambda h, st: h.commit({"v": value}), create=True, default=None)

    def counters(self) -> dict[str, int]:
        """Every counter that has been written, with its value."""
        return {n: self.counter_get(n) for n in self._names("counter")}

    # ------------------------------------------------------------------ state buckets
    def state_get(self, bucket: str, key: str) -> str | None:
        """The stored JSON text of ``key`` or None."""
        got = self._acquire("state", bucket, False)
        if got is None:
            return None
        h, st = got
        try:
            return cast(BucketState, st).data.get(key)
        finally:
            h.release()

    def state_set(self, bucket: str, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (one durable record).

        Raises:
            RecordTooLarge: the record would exceed 256 MiB; nothing is written.
        """
        if len(key) + len(value) > MAX_RECORD:
            _fits(key, value)
        op = {"o": "s", "k": key, "v": value}
        # The record encoded directly (what journal.dumps would write), before any lock.
        payload = ('{"o":"s","k":' + _jstr(key) + ',"v":' + _jstr(value) + "}").encode()
        got = self._acquire("state", bucket, True)
        assert got is not None
        h, _ = got
        try:
            h.commit(op, payload)
        finally:
            h.release()

    def state_update(self, bucket: str, items: Mapping[str, str]) -> None:
        """Store every pair at once: one record, so all or none survive a crash.

        Raises:
            RecordTooLarge: the record would exceed 256 MiB; nothing is written.
        """
        _fits(*items.keys(), *items.values())
        op = {"o": "u", "i": dict(items)}
        if not op["i"]:
            return
        self._run("state", bucket, lambda h, st: h.commit(op), create=True, default=None)

    def state_delete(self, bucket: str, key: str) -> str | None:
        """Remove ``key``; return its text or None (nothing written when absent)."""

        def fn(h: Handle, st: BucketState) -> str | None:
            if key not in st.data:
                return None
            return cast("str | None", h.commit({"o": "d", "k": key}))

        return self._run("state", bucket, fn, create=False, default=None)

    def state_cas(self, bucket: str, key: str, expected: str | None, new: str | None) -> bool:
        """Compare-and-set as in :meth:`Backend.state_cas`, atomically; one record on success."""

        def fn(h: Handle, st: BucketState) -> bool:
            cur = st.data.get(key)
            if expected is None:
                ok = cur is None or cur == "null"
            else:
                ok = cur is None if expected == STATE_ABSENT else cur == expected
            if not ok:
                return False
            if new is None:
                if key in st.data:
                    h.commit({"o": "d", "k": key})
            elif cur != new:
                h.commit({"o": "s", "k": key, "v": new})
            return True

        if new is None:
            absent_ok = expected is None or expected == STATE_ABSENT
            return self._run("state", bucket, fn, create=False, default=absent_ok)
        return self._run("state", bucket, fn, create=True, default=False)

    def state_items(self, bucket: str) -> dict[str, str]:
        """A consistent copy of the bucket."""
        return self._run(
            "state",
            bucket,
            lambda h, st: dict(cast(BucketState, st).data),
            create=False,
            default={},
        )

    def state_len(self, bucket: str) -> int:
        """Number of keys."""
        return self._run(
            "state",
            bucket,
            lambda h, st: len(cast(BucketState, st).data),
            create=False,
            default=0,
        )

    def state_clear(self, bucket: str) -> None:
        """Remove every key (one record; nothing written when already empty)."""

        def fn(h: Handle, st: BucketState) -> None:
            if st.data:
                h.commit({"o": "c"})

        self._run("state", bucket, fn, create=False, default=None)

    def buckets(self) -> list[str]:
        """Buckets holding at least one key, sorted."""
        return [b for b in self._names("state") if self.state_len(b) > 0]

    # ------------------------------------------------------------------ queues
    def queue_put(
        self,
        name: str,
        msg_id: str,
        body: str,
        delay: float,
        priority: int,
        *,
        new_id: bool = False,
    ) -> bool:
        """Enqueue durably (one record); False, writing nothing, if ``msg_id`` is present.

        The due time is absolute (``now + delay``) and survives restarts.

        Raises:
            RecordTooLarge: the record would exceed 256 MiB; nothing is written.
        """
        _fits(msg_id, body)

        def fn(h: Handle, st: QueueState) -> bool:
            if not new_id and st.holds(msg_id):
                return False
            now = time.time()
            op: dict[str, Any] = {"o": "p", "id": msg_id, "b": body, "p": int(priority), "t": now}
            op["due"] = now + max(0.0, float(delay))
            if new_id:
                op["n"] = 1
            return cast(bool, h.commit(op))

        return self._run("queue", name, fn, create=True, default=False)

    def _take(
        self, name: str, max_attempts: int, visibility: float | None, consumer: str | None = None
    ) -> Delivery | None:
        def fn(h: Handle, st: QueueState) -> Delivery | None:
            now = time.time()
            if not st.has_work(now):
                return None
            op: dict[str, Any] = {"o": "r", "t": now, "ma": int(max_attempts)}
            op["vt"] = None if visibility is None else now + max(0.0, float(visibility))
            op["r"] = secrets.token_hex(8)
            if consumer is not None:
                op["r"] += "/" + consumer
            m: Msg | None = h.commit(op)
            return None if m is None else m.delivery(op["r"], _reader(h, st))

        return self._run("queue", name, fn, create=False, default=None)

    def queue_put_many(
        self,
        name: str,
        items: Sequence[tuple[str, str, float, int]],
        *,
        new_ids: bool = False,
    ) -> list[bool]:
        """Enqueue every ``(msg_id, body, delay, priority)`` in ONE journal record: after a
        crash all of them or none are there, and the batch costs one write and one fsync.

        See :meth:`Backend.queue_put_many` (ids already queued, or repeated in ``items``,
        are skipped and get False).

        Raises:
            RecordTooLarge: the batch would exceed 256 MiB; nothing is written.
        """
        batch = [(str(m), str(b), float(d), int(p)) for m, b, d, p in items]
        _fits(*(m for m, _, _, _ in batch), *(b for _, b, _, _ in batch))
        if not batch:
            return []

        def fn(h: Handle, st: QueueState) -> list[bool]:
            now = time.time()
            seen: set[str] = set()
            keep: list[list[Any]] = []
            out: list[bool] = []
            for mid, body, delay, prio in batch:
                dup = mid in seen or (not new_ids and st.holds(mid))
                out.append(not dup)
                if not dup:
                    seen.add(mid)
                    keep.append([mid, body, prio, now + max(0.0, delay)])
            if keep:
                op: dict[str, Any] = {"o": "P", "t": now, "m": keep}
                if new_ids:
                    op["n"] = 1
                h.commit(op)
            return out

        return self._run("queue", name, fn, create=True, default=[False] * len(batch))

    def _take_many(
        self,
        name: str,
        max_attempts: int,
        visibility: float | None,
        max_n: int,
        consumer: str | None = None,
    ) -> list[Delivery]:
        if max_n < 1:
            return []

        def fn(h: Handle, st: QueueState) -> list[Delivery]:
            now = time.time()
            if not st.has_work(now):
                return []
            op: dict[str, Any] = {"o": "r", "t": now, "ma": int(max_attempts), "k": max_n}
            op["vt"] = None if visibility is None else now + max(0.0, float(visibility))
            op["r"] = secrets.token_hex(8)
            if consumer is not None:
                op["r"] += "/" + consumer
            got: list[Msg] = h.commit(op)
            read = _reader(h, st)
            return [m.delivery(m.rcpt or op["r"], read) for m in got]

        return self._run("queue", name, fn, create=False, default=[])

    def queue_get_many(self, name: str, max_attempts: int, max_n: int) -> list[Delivery]:
        """Take up to ``max_n`` ready messages in ONE journal record (atomic: a crash keeps
        all of them queued or none); see :meth:`Backend.queue_get_many`."""
        return self._take_many(name, max_attempts, None, int(max_n))

    def queue_receive_many(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        max_n: int,
        consumer: str | None = None,
    ) -> list[Delivery]:
        """Receive up to ``max_n`` ready messages in ONE journal record; see
        :meth:`Backend.queue_receive_many`."""
        if consumer is not None:
            check_name(consumer, "consumer id")
        return self._take_many(name, max_attempts, visibility_timeout, int(max_n), consumer)

    def queue_receive(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        consumer: str | None = None,
    ) -> Delivery | None:
        """Deliver the first ready message (see :meth:`Backend.queue_receive`); one record.

        Due delayed messages become ready and expired in-flight ones return to ready (or go
        dead after ``max_attempts`` deliveries) in the same atomic step. A ``consumer`` is
        kept in the delivery's receipt (after a ``/``, which names never contain).
        """
        if consumer is not None:
            check_name(consumer, "consumer id")
        return self._take(name, max_attempts, visibility_timeout, consumer)

    def queue_release(self, name: str, consumer: str, max_attempts: int) -> int:
        """Give back every message in flight under ``consumer`` (one record, none if it holds
        nothing); see :meth:`Backend.queue_release`."""
        check_name(consumer, "consumer id")

        def fn(h: Handle, st: QueueState) -> int:
            if not st.held_by(consumer):
                return 0
            op = {"o": "R", "c": consumer, "ma": int(max_attempts)}
            return cast(int, h.commit(op))

        return self._run("queue", name, fn, create=False, default=0)

    def queue_get(self, name: str, max_attempts: int) -> Delivery | None:
        """Receive and acknowledge in one atomic step (one record)."""
        return self._take(name, max_attempts, None)

    def queue_ack(self, name: str, msg_id: str, receipt: str) -> bool:
        """Delete an in-flight message if ``receipt`` is its current delivery (one record)."""

        def fn(h: Handle, st: QueueState) -> bool:
            if not st.current(msg_id, receipt):
                return False
            return cast(bool, h.commit({"o": "a", "id": msg_id}))

        return self._run("queue", name, fn, create=False, default=False)

    def queue_nack(
        self, name: str, msg_id: str, receipt: str, delay: float, max_attempts: int
    ) -> bool:
        """Return an in-flight message (ready after ``delay``, or dead); one record."""

        def fn(h: Handle, st: QueueState) -> bool:
            if not st.current(msg_id, receipt):
                return False
            now = time.time()
            op = {"o": "n", "id": msg_id, "t": now, "due": now + max(0.0, float(delay))}
            op["ma"] = int(max_attempts)
            return cast(bool, h.commit(op))

        return self._run("queue", name, fn, create=False, default=False)

    def queue_stats(self, name: str) -> dict[str, int]:
        """Counts of ready, delayed, in-flight and dead messages as of now."""
        empty = {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
        return self._run(
            "queue",
            name,
            lambda h, st: cast(QueueState, st).stats(time.time()),
            create=False,
            default=empty,
        )

    def queue_dead(self, name: str) -> list[Delivery]:
        """Dead messages in the order they died (``receipt`` empty)."""
        return self._run(
            "queue",
            name,
            lambda h, st: cast(QueueState, st).dead_list(_reader(h, st)),
            create=False,
            default=[],
        )

    def queue_requeue_dead(self, name: str) -> int:
        """Move every dead message back to ready with attempts 0 (one record)."""

        def fn(h: Handle, st: QueueState) -> int:
            if not st.dead:
                return 0
            return cast(int, h.commit({"o": "q"}))

        return self._run("queue", name, fn, create=False, default=0)

    def queue_purge(self, name: str, dead: bool) -> int:
        """Remove ready and delayed (and dead if ``dead``) messages (one record)."""

        def fn(h: Handle, st: QueueState) -> int:
            counts = st.count
            if not (counts["r"] or counts["d"] or (dead and counts["x"])):
                return 0
            return cast(int, h.commit({"o": "g", "dead": bool(dead)}))

        return self._run("queue", name, fn, create=False, default=0)

    def queue_wait(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` s until a message may be ready; may return early.

        Polls the journal's size with backoff (1 ms doubling to 50 ms) and wakes by the next
        delayed message's due time or visibility deadline.
        """
        end = time.monotonic() + max(0.0, float(timeout))

        def probe(h: Handle, st: QueueState) -> tuple[bool, float | None, int, int]:
            now = time.time()
            if st.has_work(now):
                return True, None, h.gen, h.offset
            return False, st.next_event(), h.gen, h.offset

        found = self._run("queue", name, probe, create=False, default=None)
        qdir = self.root / "queues" / name
        if found is not None:
            work, nxt, gen, offset = found
            if work:
                return
            if nxt is not None:
                end = min(end, time.monotonic() + max(0.0, nxt - time.time()))

        def changed() -> bool:
            if found is None:
                return qdir.is_dir()
            try:
                return os.stat(qdir / f"journal.{gen}").st_size != offset
            except OSError:
                return True

        pause = 0.001
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
            if changed():
                return

    def queues(self) -> list[str]:
        """Queues holding any message (ready, delayed, in flight or dead), sorted."""
        return [
            n
            for n in self._names("queue")
            if self._run("queue", n, lambda h, st: len(st) > 0, create=False, default=False)
        ]

    # ------------------------------------------------------------------ membership
    def member_heartbeat(
        self, group: str, member: str, info: Mapping[str, JSON], ttl: float
    ) -> None:
        """Record ``member`` alive until now + ``ttl`` (one durable record)."""
        text = encode(dict(info))

        def fn(h: Handle, st: GroupState) -> None:
            h.commit({"o": "h", "m": member, "i": text, "e": time.time() + float(ttl)})

        self._run("group", group, fn, create=True, default=None)

    def member_leave(self, group: str, member: str) -> bool:
        """Remove ``member``; False if it was not a live member."""

        def fn(h: Handle, st: GroupState) -> bool:
            entry = st.members.get(member)
            if entry is None:
                return False
            h.commit({"o": "l", "m": member})
            return entry[1] > time.time()

        return self._run("group", group, fn, create=False, default=False)

    def members(self, group: str) -> dict[str, dict[str, JSON]]:
        """Live members (heartbeat not expired) with their info records."""
        live: dict[str, str] = self._run(
            "group",
            group,
            lambda h, st: cast(GroupState, st).live(time.time()),
            create=False,
            default={},
        )
        out: dict[str, dict[str, JSON]] = {}
        for member, text in live.items():
            info = decode(text, where=f"{self.root}/members/{group}")
            out[member] = info if isinstance(info, dict) else {}
        return out
