"""``memory://`` — shared by the threads of one process.

URL forms: ``memory://`` (the process-wide default store) and ``memory://NAME`` (a separate
store). Options:

* ``snapshot=/path/file.json``: restore counters, state buckets, queues and lock fencing-token
  high-water marks from that file at start, and write them back every ``interval`` seconds
  (when something changed), at :meth:`MemoryBackend.close` and at interpreter exit. Locks are
  never snapshotted; messages in flight at the snapshot come back ready (at-least-once).
* ``interval=S`` (default 5): seconds between snapshots.
* ``archive=/path/file.journal``: instead of snapshots, append every change to a journal
  (CRC-checked records, fsynced) *before* the call returns, and replay it at start; the journal
  is compacted when it grows far beyond the live data. Nothing acknowledged is lost, at the
  price of one fsync per change. Locks are not archived (fencing tokens are).

Guarantees: every operation is atomic (one condition variable guards the whole store); waits
are woken at once by the operation that ends them. Without ``snapshot`` nothing survives the
process; with it, at most the last ``interval`` seconds of changes are lost on a crash, and the
snapshot file itself is always whole (written to a temporary file, fsynced, renamed, directory
fsynced).
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from unidist._names import _VALID as _VALID_NAMES
from unidist._names import check_name
from unidist.backends._memory_archive import Archive, Effect
from unidist.backends._url import OptionParser, ParsedURL, opt_float, opt_str
from unidist.backends.base import STATE_ABSENT, Backend, Delivery, LockGrant, Scope
from unidist.codec import JSON
from unidist.errors import BackendUnavailable, CorruptData, InvalidURL

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_SNAPSHOT_FORMAT = 1
_now = time.time


def _close_at_exit(ref: weakref.ref[MemoryBackend]) -> None:
    backend = ref()
    if backend is not None:
        backend.close()


@dataclass
class _Slot:
    holder: str
    token: int
    acquired_at: float
    expires_at: float | None
    info: dict[str, JSON]

    def record(self, name: str) -> dict[str, JSON]:
        rec: dict[str, JSON] = dict(self.info)
        rec.update(
            name=name,
            holder=self.holder,
            token=self.token,
            acquired_at=self.acquired_at,
            expires_at=self.expires_at,
        )
        return rec


@dataclass
class _Lock:
    slots: dict[str, _Slot] = field(default_factory=dict)
    # holder -> (registration order, expiry monotonic); dicts keep insertion order, and a
    # registration keeps its first place, so iteration order is FIFO order.
    waiters: dict[str, tuple[int, float]] = field(default_factory=dict)
    # holder -> event set when it is that waiter's turn (woken one by one, in FIFO order)
    events: dict[str, threading.Event] = field(default_factory=dict)
    limit: int = 1
    leased: bool = False  # some slot has an expiry (prune has work to do)

    def wake_turns(self) -> None:
        """Set the events of the waiters that could now be granted a slot."""
        free = self.limit - len(self.slots)
        if free <= 0:
            return
        for holder in itertools.islice(self.waiters, free):
            event = self.events.get(holder)
            if event is not None:
                event.set()


_FAST_HOLDER = "fast:"  # holder ids of fast acquisitions: "fast:<token>" (never a unique_id())


class _FastLock:
    """The uncontended shortcut of one lock name (limit 1, no lease), which lock objects take
    and record themselves in directly (see ``LockFastPath``).

    ``gate`` holds the key 0 while the name is free; taking the lock is ``gate.pop(0, None)``
    (atomic, and cheaper than a ``threading.Lock``'s ``acquire(False)``, whose arguments are
    parsed on every call), giving it back ``gate[0] = True``. The gate is taken while the name
    has a holder: either a fast holder, recorded in ``held`` (token -> (acquired_at, owner
    info)), or the general path, which keeps the gate for as long as the name has a record
    in ``MemoryBackend._locks`` (slots or waiters). So a fast acquire never overtakes a
    registered waiter, and the general path takes a fast holder over into a record
    (``MemoryBackend._lock_get``) before it does anything else with the name.

    A fast acquire takes the gate, then records itself; a fast release removes its record,
    then gives the gate back. Removing a record is ``dict.pop``, atomic, so exactly one of
    the holder's release and the general path's takeover gets it and gives back (or keeps)
    the gate. Tokens: only the gate's taker draws from ``tokens``, the name's fencing-token
    sequence.
    """

    __slots__ = ("gate", "held", "synced", "tokens")

    def __init__(self, last_token: int, free: bool) -> None:
        self.gate: MutableMapping[int, bool] = {0: True} if free else {}
        self.tokens: Iterator[int] = itertools.count(last_token + 1)
        self.held: MutableMapping[int, tuple[float, Mapping[str, JSON]]] = {}
        self.synced = last_token  # the token drawn by the last _sync_tokens

    def take(self) -> bool:
        """Take the gate if it is free."""
        return self.gate.pop(0, None) is not None

    def give(self) -> None:
        """Give the gate back (only its taker does)."""
        self.gate[0] = True

    def holder(self, token: int) -> str:
        return f"{_FAST_HOLDER}{token}"

    def record(self) -> tuple[int, float, Mapping[str, JSON]] | None:
        """The fast holder as (token, acquired_at, info), or None."""
        for token, (at, info) in list(self.held.items()):
            return token, at, info
        return None


@dataclass
class _Msg:
    id: str
    body: str
    priority: int
    seq: int
    enqueued_at: float
    attempts: int = 0
    state: str = "ready"  # ready | delayed | inflight | dead
    due: float = 0.0  # delayed: due time; inflight: visibility deadline (wall clock)
    receipt: str = ""


@dataclass
class _Queue:
    name: str
    msgs: dict[str, _Msg] = field(default_factory=dict)
    ready: list[tuple[int, int, str]] = field(default_factory=list)  # (-priority, seq, id)
    delayed: list[tuple[float, int, str]] = field(default_factory=list)  # (due, seq, id)
    inflight: list[tuple[float, str, str]] = field(default_factory=list)  # (deadline, id, receipt)
    dead: dict[str, None] = field(default_factory=dict)  # ordered set of ids


class MemoryBackend(Backend):
    """Threads of one process sharing a store. See the module docs for options."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    options: ClassVar[dict[str, OptionParser]] = {
        "snapshot": opt_str,
        "interval": opt_float,
        "archive": opt_str,
    }
    scope: ClassVar[Scope] = "process"
    #: seconds a lock's fast-path gate may stay held with no holder recorded before the
    #: general path takes it over (see _lock_get; only an interrupted acquire/release).
    FAST_GATE_STUCK: ClassVar[float] = 5.0

    def __init__(self, parsed: ParsedURL) -> None:
        super().__init__(parsed)
        if parsed.path not in ("", "/"):
            raise InvalidURL(f"memory:// URLs take a store name, not a path: {parsed.url!r}")
        if parsed.netloc:
            check_name(parsed.netloc, "memory store name")
        # One re-entrant mutex guards the whole store; the condition shares it. Lock calls
        # take the mutex directly (cheaper than going through the Condition).
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._seq = itertools.count(1)
        self._locks: dict[str, _Lock] = {}
        # Fast paths handed to lock objects (lock_fast_path), by name; see _FastLock.
        self._fast: dict[str, _FastLock] = {}
        self._tokens: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._state: dict[str, dict[str, str]] = {}
        self._queues: dict[str, _Queue] = {}
        self._members: dict[str, dict[str, tuple[float, dict[str, JSON]]]] = {}
        self._dirty = False
        self._closed = False
        self._snapshot_path: Path | None = None
        self._interval: float = parsed.options.get("interval", 5.0)
        if self._interval <= 0:
            raise InvalidURL(f"interval must be > 0 seconds in {parsed.url!r}")
        self._archive: Archive | None = None
        self._replaying = False
        snap = parsed.options.get("snapshot")
        archive = parsed.options.get("archive")
        if snap is not None and archive is not None:
            raise InvalidURL(
                f"memory:// takes snapshot= or archive=, not both, in {parsed.url!r} "
                "(the archive already keeps everything)"
            )
        if archive is not None:
            if not archive.startswith("/"):
                raise InvalidURL(f"archive must be an absolute file path in {parsed.url!r}")
            self._archive = Archive(Path(archive), self.url)
            self._replay(self._archive.load())
        if snap is not None:
            if not snap.startswith("/"):
                raise InvalidURL(f"snapshot must be an absolute file path in {parsed.url!r}")
            self._snapshot_path = Path(snap)
            self._load_snapshot()
            self._stop = threading.Event()
            self._writer = threading.Thread(
                target=self._snapshot_loop, name="unidist-memory-snapshot", daemon=True
            )
            self._writer.start()
            atexit.register(_close_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------ lifecycle
    def ping(self) -> None:
        if self._closed:
            raise BackendUnavailable("memory backend is closed", url=self.url)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._archive is not None:
            with self._cond:
                self._archive.close()
        if self._snapshot_path is not None:
            self._stop.set()
            if self._writer is not threading.current_thread():
                self._writer.join(timeout=5)
            self.write_snapshot()
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ snapshot
    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._mutex:
                dirty = self._sync_tokens() or self._dirty
            if dirty:
                try:
                    self.write_snapshot()
                except OSError:  # pragma: no cover - reported on the next explicit write
                    pass

    def _export(self) -> dict[str, Any]:
        queues: dict[str, list[list[Any]]] = {}
        for qname, q in self._queues.items():
            rows = []
            for m in sorted(q.msgs.values(), key=lambda m: m.seq):
                state = "ready" if m.state == "inflight" else m.state
                rows.append([m.id, m.body, m.priority, m.enqueued_at, m.attempts, state, m.due])
            if rows:
                queues[qname] = rows
        return {
            "format": _SNAPSHOT_FORMAT,
            "written_at": time.time(),
            "counters": dict(self._counters),
            "state": {b: dict(kv) for b, kv in self._state.items() if kv},
            "tokens": dict(self._tokens),  # _sync_tokens() first
            "queues": queues,
        }

    def write_snapshot(self) -> None:
        """Write the snapshot file now (atomic replace + fsync). No-op without ``snapshot=``.

        Raises:
            BackendUnavailable: the file cannot be written.
        """
        path = self._snapshot_path
        if path is None:
            return
        with self._cond:
            self._sync_tokens()
            data = json.dumps(self._export(), ensure_ascii=False, separators=(",", ":"))
            self._dirty = False
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            self._dirty = True
            try:
                tmp.unlink()
            except OSError:
                pass
            raise BackendUnavailable(
                f"cannot write memory snapshot {path}: {exc.strerror}", url=self.url
            ) from exc

    def _load_snapshot(self) -> None:
        path = self._snapshot_path
        assert path is not None
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot read memory snapshot {path}: {exc.strerror}", url=self.url
            ) from exc
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != _SNAPSHOT_FORMAT:
                raise ValueError("not a unidist memory snapshot")
            self._counters = {str(k): int(v) for k, v in data["counters"].items()}
            self._tokens = {str(k): int(v) for k, v in data["tokens"].items()}
            self._state = {
                str(b): {str(k): str(v) for k, v in kv.items()} for b, kv in data["state"].items()
            }
            for qname, rows in data["queues"].items():
                q = self._queue(str(qname))
                for mid, body, prio, enq, attempts, state, due in rows:
                    m = _Msg(str(mid), str(body), int(prio), next(self._seq), float(enq))
                    m.attempts = int(attempts)
                    q.msgs[m.id] = m
                    if state == "dead":
                        m.state = "dead"
                        q.dead[m.id] = None
                    elif state == "delayed":
                        self._q_delay(q, m, float(due))
                    else:
                        self._q_ready(q, m)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptData(
                f"memory snapshot {path} is damaged: {exc}", path=str(path), offset=-1
            ) from exc

    def _changed(self, *effects: Effect) -> None:
        """Note a change; with ``archive=``, journal its effects (fsynced) before returning."""
        self._dirty = True
        archive = self._archive
        if archive is None or self._replaying or not effects:
            return
        archive.append(list(effects))
        live = len(self._counters) + sum(len(kv) for kv in self._state.values())
        live += sum(len(q.msgs) for q in self._queues.values()) + len(self._tokens)
        if archive.wants_compaction(live):
            archive.compact(self._effects_of_state())

    def _effects_of_state(self) -> list[Effect]:
        """The whole persistent state as effects (for archive compaction)."""
        out: list[Effect] = [["c", n, v] for n, v in self._counters.items()]
        out += [["t", n, v] for n, v in self._tokens.items()]
        out += [["s", b, k, v] for b, kv in self._state.items() for k, v in kv.items()]
        for q in self._queues.values():
            out += [
                ["m", q.name, m.id, m.body, m.priority, m.enqueued_at, m.attempts, m.state, m.due]
                for m in sorted(q.msgs.values(), key=lambda m: m.seq)
            ]
        return out

    def _replay(self, effects: list[Effect]) -> None:
        """Apply archived effects in order (idempotent: each names the resulting value)."""
        self._replaying = True
        try:
            for eff in effects:
                kind = eff[0]
                if kind == "c":
                    self._counters[eff[1]] = int(eff[2])
                elif kind == "t":
                    self._tokens[eff[1]] = max(self._tokens.get(eff[1], 0), int(eff[2]))
                elif kind == "s":
                    kv = self._state.setdefault(eff[1], {})
                    if eff[3] is None:
                        kv.pop(eff[2], None)
                    else:
                        kv[eff[2]] = eff[3]
                elif kind == "S":
                    self._state.pop(eff[1], None)
                elif kind == "m":
                    q = self._queue(eff[1])
                    _, _, mid, body, prio, enq, attempts, state, due = eff
                    old = q.msgs.pop(mid, None)
                    if old is not None:
                        q.dead.pop(mid, None)
                    m = _Msg(mid, body, int(prio), next(self._seq), float(enq), int(attempts))
                    q.msgs[mid] = m
                    self._restore_state(q, m, state, float(due))
                elif kind == "u":
                    q = self._queue(eff[1])
                    known = q.msgs.get(eff[2])
                    if known is not None:
                        q.dead.pop(known.id, None)
                        known.attempts = int(eff[3])
                        self._restore_state(q, known, eff[4], float(eff[5]))
                elif kind == "d":
                    q = self._queue(eff[1])
                    if q.msgs.pop(eff[2], None) is not None:
                        q.dead.pop(eff[2], None)
                else:
                    raise ValueError(f"unknown effect {kind!r}")
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise CorruptData(
                f"memory archive {self._archive.path if self._archive else ''} holds an "
                f"invalid record: {exc}",
                path=str(self._archive.path if self._archive else ""),
            ) from exc
        finally:
            self._replaying = False

    def _restore_state(self, q: _Queue, m: _Msg, state: str, due: float) -> None:
        # Messages in flight at the crash come back ready (at-least-once).
        if state == "dead":
            self._q_dead(q, m)
        elif state == "delayed":
            self._q_delay(q, m, due)
        else:
            self._q_ready(q, m)

    # ------------------------------------------------------------------ locks
    def lock_fast_path(self, name: str, limit: int, ttl: float | None) -> _FastLock | None:
        # Not with an archive: every token must then be journaled (fsynced) before it is used.
        if limit != 1 or ttl is not None or self._archive is not None:
            return None
        check_name(name, "lock name")
        with self._mutex:
            fast = self._fast.get(name)
            if fast is None:
                # Taken already when the general path holds the name (see _FastLock).
                fast = self._fast[name] = _FastLock(
                    self._tokens.get(name, 0), name not in self._locks
                )
            return fast

    def _lock_get(self, name: str, create: bool = False) -> _Lock | None:
        """The general record of lock ``name``, taking a fast holder over into it; None when
        the name is free (unless ``create``: then a new empty record). Call with the mutex."""
        lk = self._locks.get(name)
        if lk is not None:
            return lk
        fast = self._fast.get(name)
        if fast is None:
            if create:
                lk = self._locks[name] = _Lock()
            return lk
        stuck_since: float | None = None
        while True:
            try:
                token, (acquired_at, info) = fast.held.popitem()
            except KeyError:
                pass
            else:  # the fast holder becomes a slot; the gate stays held, now by the record
                lk = self._locks[name] = _Lock()
                holder = fast.holder(token)
                lk.slots[holder] = _Slot(holder, token, acquired_at, None, dict(info))
                return lk
            if not create:
                return None  # free (a fast acquire/release half done counts as not yet/already)
            if fast.take():
                lk = self._locks[name] = _Lock()
                return lk
            # A fast acquire holds the gate but has not recorded itself yet, or a fast release
            # removed its record but has not freed the gate yet: let that thread finish (it
            # needs no mutex). Only an exception raised in between (KeyboardInterrupt) leaves
            # the gate so: after FAST_GATE_STUCK seconds the record adopts the gate.
            now = time.monotonic()
            if stuck_since is None:
                stuck_since = now
            elif now - stuck_since > self.FAST_GATE_STUCK:
                lk = self._locks[name] = _Lock()
                return lk
            time.sleep(0 if now - stuck_since < 0.01 else 0.001)

    def _lock_settle(self, name: str, lk: _Lock) -> None:
        """Drop ``lk`` once it has no slot and no waiter (handing the name back to its fast
        path). Call with the mutex."""
        if not lk.slots and not lk.waiters and self._locks.get(name) is lk:
            del self._locks[name]
            fast = self._fast.get(name)
            if fast is not None:
                fast.give()

    def _next_token(self, name: str) -> int:
        """Draw the next fencing token of ``name`` (with the mutex, and the gate if any)."""
        fast = self._fast.get(name)
        token = self._tokens.get(name, 0) + 1 if fast is None else next(fast.tokens)
        self._tokens[name] = token
        return token

    def _sync_tokens(self) -> bool:
        """Note the fast paths' token sequences in ``_tokens`` (drawing one token of each, so
        that every later token is larger); True if any handed out a token since the last call.
        """
        changed = False
        for name, fast in list(self._fast.items()):
            token = next(fast.tokens)
            changed = changed or token != fast.synced + 1
            fast.synced = token
            self._tokens[name] = token
        return changed

    @staticmethod
    def _prune(lk: _Lock) -> None:
        if lk.leased:
            now = time.time()
            expired = [
                h for h, s in lk.slots.items() if s.expires_at is not None and s.expires_at <= now
            ]
            for h in expired:
                del lk.slots[h]
            lk.leased = any(s.expires_at is not None for s in lk.slots.values())
        if lk.waiters:
            mono = time.monotonic()
            for h in [h for h, (_, exp) in lk.waiters.items() if exp <= mono]:
                del lk.waiters[h]
                lk.events.pop(h, None)

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
        if name.__class__ is not str or name not in _VALID_NAMES:
            check_name(name, "lock name")
        with self._mutex:
            lk = self._lock_get(name, create=True)
            assert lk is not None
            self._prune(lk)
            lk.limit = limit
            free = limit - len(lk.slots)
            ahead = len(lk.waiters)
            if holder in lk.waiters:
                ahead = next(i for i, other in enumerate(lk.waiters) if other == holder)
            if free > ahead:
                lk.waiters.pop(holder, None)
                lk.events.pop(holder, None)
                token = self._next_token(name)
                now = time.time()
                slot = _Slot(holder, token, now, None if ttl is None else now + ttl, dict(info))
                lk.slots[holder] = slot
                if ttl is not None:
                    lk.leased = True
                self._changed(["t", name, token])
                return LockGrant(name, holder, token, slot.acquired_at, slot.expires_at)
            if waiting:
                reg = lk.waiters.get(holder)
                order = reg[0] if reg is not None else next(self._seq)
                lk.waiters[holder] = (order, time.monotonic() + self.WAITER_TTL)
                event = lk.events.get(holder)
                if event is None:
                    lk.events[holder] = threading.Event()
                else:
                    event.clear()
            else:
                self._lock_settle(name, lk)
            return None

    def lock_cancel_wait(self, name: str, holder: str) -> None:
        check_name(name, "lock name")
        with self._mutex:
            lk = self._locks.get(name)
            if lk is not None and lk.waiters.pop(holder, None) is not None:
                lk.events.pop(holder, None)
                lk.wake_turns()
                self._lock_settle(name, lk)

    def lock_release(self, name: str, holder: str) -> bool:
        if name.__class__ is not str or name not in _VALID_NAMES:
            check_name(name, "lock name")
        if holder.startswith(_FAST_HOLDER):  # a fast holder (see _FastLock), maybe still fast
            fast = self._fast.get(name)
            token = int(holder[len(_FAST_HOLDER) :])
            if fast is not None and fast.held.pop(token, None) is not None:
                fast.give()
                return True
        with self._mutex:
            lk = self._locks.get(name)
            if lk is None:
                return False
            self._prune(lk)
            if lk.slots.pop(holder, None) is None:
                self._lock_settle(name, lk)
                return False
            woke = bool(lk.waiters)
            if woke:
                lk.wake_turns()
            else:
                self._lock_settle(name, lk)
        if woke:
            # Let the woken waiter thread run now (sched_yield drops the GIL), not after this
            # thread's next blocking call: handovers stay prompt and FIFO stays FIFO.
            os.sched_yield()
        return True

    def lock_renew(self, name: str, holder: str, ttl: float | None) -> float | bool | None:
        check_name(name, "lock name")
        with self._mutex:
            lk = self._lock_get(name)
            if lk is None:
                return False
            self._prune(lk)
            slot = lk.slots.get(holder)
            if slot is None:
                self._lock_settle(name, lk)
                return False
            slot.expires_at = None if ttl is None else time.time() + ttl
            lk.leased = lk.leased or ttl is not None
            return slot.expires_at

    def lock_owners(self, name: str) -> list[dict[str, JSON]]:
        check_name(name, "lock name")
        with self._mutex:
            lk = self._locks.get(name)
            if lk is None:
                fast = self._fast.get(name)
                held = None if fast is None else fast.record()
                if held is None:
                    return []
                token, acquired_at, info = held
                rec: dict[str, JSON] = dict(info)
                rec.update(
                    name=name,
                    holder=fast.holder(token) if fast is not None else "",
                    token=token,
                    acquired_at=acquired_at,
                    expires_at=None,
                )
                return [rec]
            self._prune(lk)
            slots = sorted(lk.slots.values(), key=lambda s: (s.acquired_at, s.token))
            owners = [s.record(name) for s in slots]
            self._lock_settle(name, lk)
            return owners

    def lock_break(self, name: str, holder: str | None = None) -> int:
        check_name(name, "lock name")
        with self._mutex:
            lk = self._lock_get(name)
            if lk is None:
                return 0
            self._prune(lk)
            if holder is not None:
                if lk.slots.pop(holder, None) is None:
                    self._lock_settle(name, lk)
                    return 0
                lk.wake_turns()
                self._lock_settle(name, lk)
                return 1
            n = len(lk.slots)
            lk.slots.clear()
            lk.wake_turns()
            self._lock_settle(name, lk)
            return n

    def locks(self) -> dict[str, list[dict[str, JSON]]]:
        with self._mutex:
            out = {}
            for name in sorted({*self._locks, *self._fast}):
                owners = self.lock_owners(name)
                if owners:
                    out[name] = owners
            return out

    def lock_wait(self, name: str, timeout: float, holder: str | None = None) -> None:
        with self._mutex:
            lk = self._locks.get(name)
            if lk is None or self._closed:
                return
            self._prune(lk)
            # A lease that expires while we wait frees a slot without any release call.
            expiries = [s.expires_at for s in lk.slots.values() if s.expires_at is not None]
            if expiries:
                timeout = min(timeout, max(0.0, min(expiries) - time.time()))
            event = lk.events.get(holder) if holder is not None else None
            if event is None:
                # No registration to wake: wait out the slice (callers always register).
                event = threading.Event()
        event.wait(timeout)

    # ------------------------------------------------------------------ counters
    def counter_add(self, name: str, delta: int, request_id: str) -> int:
        check_name(name, "counter name")
        with self._cond:
            value = self._counters.get(name, 0) + delta
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise OverflowError(f"counter {name!r} would leave the signed 64-bit range")
            self._counters[name] = value
            self._changed(["c", name, value])
            return value

    def counter_get(self, name: str) -> int:
        check_name(name, "counter name")
        with self._cond:
            return self._counters.get(name, 0)

    def counter_set(self, name: str, value: int) -> None:
        check_name(name, "counter name")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise OverflowError(f"counter value {value} is outside the signed 64-bit range")
        with self._cond:
            self._counters[name] = value
            self._changed(["c", name, value])

    def counters(self) -> dict[str, int]:
        with self._cond:
            return dict(sorted(self._counters.items()))

    # ------------------------------------------------------------------ state
    def _bucket(self, bucket: str) -> dict[str, str]:
        check_name(bucket, "bucket name")
        kv = self._state.get(bucket)
        if kv is None:
            kv = self._state[bucket] = {}
        return kv

    def state_get(self, bucket: str, key: str) -> str | None:
        with self._cond:
            return self._bucket(bucket).get(key)

    def state_set(self, bucket: str, key: str, value: str) -> None:
        with self._cond:
            self._bucket(bucket)[key] = value
            self._changed(["s", bucket, key, value])

    def state_update(self, bucket: str, items: Mapping[str, str]) -> None:
        with self._cond:
            self._bucket(bucket).update(items)
            self._changed(*(["s", bucket, k, v] for k, v in items.items()))

    def state_delete(self, bucket: str, key: str) -> str | None:
        with self._cond:
            old = self._bucket(bucket).pop(key, None)
            if old is not None:
                self._changed(["s", bucket, key, None])
            return old

    def state_cas(self, bucket: str, key: str, expected: str | None, new: str | None) -> bool:
        with self._cond:
            kv = self._bucket(bucket)
            current = kv.get(key)
            if expected is None:
                if current is not None and current != "null":
                    return False
            elif expected == STATE_ABSENT:
                if current is not None:
                    return False
            elif current != expected:
                return False
            if new is None:
                kv.pop(key, None)
            else:
                kv[key] = new
            self._changed(["s", bucket, key, new])
            return True

    def state_items(self, bucket: str) -> dict[str, str]:
        with self._cond:
            return dict(self._bucket(bucket))

    def state_len(self, bucket: str) -> int:
        with self._cond:
            return len(self._bucket(bucket))

    def state_clear(self, bucket: str) -> None:
        with self._cond:
            self._bucket(bucket).clear()
            self._changed(["S", bucket])

    def buckets(self) -> list[str]:
        with self._cond:
            return sorted(b for b, kv in self._state.items() if kv)

    # ------------------------------------------------------------------ queues
    def _queue(self, name: str) -> _Queue:
        check_name(name, "queue name")
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue(name)
        return q

    def _q_logged(self, q: _Queue, m: _Msg) -> None:
        self._changed(["u", q.name, m.id, m.attempts, m.state, m.due])

    def _q_ready(self, q: _Queue, m: _Msg) -> None:
        m.state = "ready"
        m.receipt = ""
        heapq.heappush(q.ready, (-m.priority, m.seq, m.id))
        self._q_logged(q, m)

    def _q_delay(self, q: _Queue, m: _Msg, due: float) -> None:
        m.state = "delayed"
        m.due = due
        m.receipt = ""
        heapq.heappush(q.delayed, (due, m.seq, m.id))
        self._q_logged(q, m)

    def _q_dead(self, q: _Queue, m: _Msg) -> None:
        m.state = "dead"
        m.receipt = ""
        q.dead[m.id] = None
        self._q_logged(q, m)

    def _q_delete(self, q: _Queue, m: _Msg) -> None:
        del q.msgs[m.id]
        q.dead.pop(m.id, None)
        self._changed(["d", q.name, m.id])

    def _q_maintain(self, q: _Queue, max_attempts: int) -> None:
        now = time.time()
        while q.delayed and q.delayed[0][0] <= now:
            _, _, mid = heapq.heappop(q.delayed)
            m = q.msgs.get(mid)
            if m is not None and m.state == "delayed":
                m.state = "ready"
                heapq.heappush(q.ready, (-m.priority, m.seq, m.id))
        while q.inflight and q.inflight[0][0] <= now:
            _, mid, receipt = heapq.heappop(q.inflight)
            m = q.msgs.get(mid)
            if m is not None and m.state == "inflight" and m.receipt == receipt:
                if m.attempts >= max_attempts:
                    self._q_dead(q, m)
                else:
                    self._q_ready(q, m)

    def _q_pop_ready(self, q: _Queue) -> _Msg | None:
        while q.ready:
            _, seq, mid = heapq.heappop(q.ready)
            m = q.msgs.get(mid)
            if m is not None and m.state == "ready" and m.seq == seq:
                return m
        return None

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
        with self._cond:
            q = self._queue(name)
            if msg_id in q.msgs:
                return False
            now = time.time()
            m = _Msg(msg_id, body, priority, next(self._seq), now)
            q.msgs[msg_id] = m
            if delay > 0:
                m.state, m.due = "delayed", now + delay
                heapq.heappush(q.delayed, (m.due, m.seq, m.id))
            else:
                heapq.heappush(q.ready, (-m.priority, m.seq, m.id))
            self._changed(["m", name, m.id, body, priority, now, 0, m.state, m.due])
            self._cond.notify_all()
            return True

    def queue_receive(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        consumer: str | None = None,
    ) -> Delivery | None:
        if consumer is not None:
            check_name(consumer, "consumer id")
        with self._cond:
            q = self._queue(name)
            self._q_maintain(q, max_attempts)
            m = self._q_pop_ready(q)
            if m is None:
                return None
            m.attempts += 1
            m.state = "inflight"
            # The receipt names the consumer (after "/", which names never contain).
            m.receipt = f"{m.id}:{m.attempts}:{uuid.uuid4().hex[:12]}"
            if consumer is not None:
                m.receipt += "/" + consumer
            m.due = time.time() + visibility_timeout
            heapq.heappush(q.inflight, (m.due, m.id, m.receipt))
            self._q_logged(q, m)
            return Delivery(m.id, m.body, m.attempts, m.receipt, m.priority, m.enqueued_at)

    def queue_get(self, name: str, max_attempts: int) -> Delivery | None:
        with self._cond:
            q = self._queue(name)
            self._q_maintain(q, max_attempts)
            m = self._q_pop_ready(q)
            if m is None:
                return None
            self._q_delete(q, m)
            return Delivery(m.id, m.body, m.attempts + 1, "", m.priority, m.enqueued_at)

    def queue_put_many(
        self,
        name: str,
        items: Sequence[tuple[str, str, float, int]],
        *,
        new_ids: bool = False,
    ) -> list[bool]:
        """Every put of ``items`` under one hold of the store's lock: another thread sees
        all of them or none (see :meth:`Backend.queue_put_many`)."""
        with self._cond:
            return super().queue_put_many(name, items, new_ids=new_ids)

    def queue_get_many(self, name: str, max_attempts: int, max_n: int) -> list[Delivery]:
        """Up to ``max_n`` gets under one hold of the store's lock (one atomic step)."""
        with self._cond:
            return super().queue_get_many(name, max_attempts, max_n)

    def queue_receive_many(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        max_n: int,
        consumer: str | None = None,
    ) -> list[Delivery]:
        """Up to ``max_n`` receives under one hold of the store's lock (one atomic step)."""
        with self._cond:
            return super().queue_receive_many(
                name, visibility_timeout, max_attempts, max_n, consumer
            )

    def _q_current(self, name: str, msg_id: str, receipt: str) -> tuple[_Queue, _Msg] | None:
        q = self._queue(name)
        m = q.msgs.get(msg_id)
        if m is None or m.state != "inflight" or not receipt or m.receipt != receipt:
            return None
        return q, m

    def queue_ack(self, name: str, msg_id: str, receipt: str) -> bool:
        with self._cond:
            found = self._q_current(name, msg_id, receipt)
            if found is None:
                return False
            q, m = found
            self._q_delete(q, m)
            return True

    def queue_nack(
        self, name: str, msg_id: str, receipt: str, delay: float, max_attempts: int
    ) -> bool:
        with self._cond:
            found = self._q_current(name, msg_id, receipt)
            if found is None:
                return False
            q, m = found
            if m.attempts >= max_attempts:
                self._q_dead(q, m)
            elif delay > 0:
                self._q_delay(q, m, time.time() + delay)
            else:
                self._q_ready(q, m)
            self._cond.notify_all()
            return True

    def queue_release(self, name: str, consumer: str, max_attempts: int) -> int:
        check_name(consumer, "consumer id")
        with self._cond:
            q = self._queue(name)
            held = [
                m
                for m in q.msgs.values()
                if m.state == "inflight" and m.receipt.partition("/")[2] == consumer
            ]
            for m in held:
                if m.attempts >= max_attempts:
                    self._q_dead(q, m)
                else:
                    self._q_ready(q, m)
            if held:
                self._cond.notify_all()
            return len(held)

    def queue_stats(self, name: str) -> dict[str, int]:
        with self._cond:
            q = self._queue(name)
            now = time.time()
            stats = {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
            for m in q.msgs.values():
                if m.state == "ready" or (m.state == "delayed" and m.due <= now):
                    stats["ready"] += 1
                elif m.state == "delayed":
                    stats["delayed"] += 1
                elif m.state == "inflight":
                    stats["in_flight"] += 1
                else:
                    stats["dead"] += 1
            return stats

    def queue_dead(self, name: str) -> list[Delivery]:
        with self._cond:
            q = self._queue(name)
            return [
                Delivery(m.id, m.body, m.attempts, "", m.priority, m.enqueued_at)
                for m in (q.msgs[mid] for mid in q.dead)
            ]

    def queue_requeue_dead(self, name: str) -> int:
        with self._cond:
            q = self._queue(name)
            n = 0
            for mid in list(q.dead):
                m = q.msgs[mid]
                m.attempts = 0
                self._q_ready(q, m)
                n += 1
            q.dead.clear()
            if n:
                self._cond.notify_all()
            return n

    def queue_purge(self, name: str, dead: bool) -> int:
        with self._cond:
            q = self._queue(name)
            gone = [
                mid
                for mid, m in q.msgs.items()
                if m.state in ("ready", "delayed") or (dead and m.state == "dead")
            ]
            for mid in gone:
                self._q_delete(q, q.msgs[mid])
            q.ready.clear()
            q.delayed.clear()
            return len(gone)

    def queue_wait(self, name: str, timeout: float) -> None:
        with self._cond:
            q = self._queue(name)
            if q.delayed:
                timeout = min(timeout, max(0.0, q.delayed[0][0] - time.time()))
            if q.inflight:
                timeout = min(timeout, max(0.0, q.inflight[0][0] - time.time()))
            if self._q_has_ready(q) or self._closed:
                return
            self._cond.wait(timeout)

    @staticmethod
    def _q_has_ready(q: _Queue) -> bool:
        while q.ready:
            _, seq, mid = q.ready[0]
            m = q.msgs.get(mid)
            if m is not None and m.state == "ready" and m.seq == seq:
                return True
            heapq.heappop(q.ready)
        return False

    def queues(self) -> list[str]:
        with self._cond:
            return sorted(n for n, q in self._queues.items() if q.msgs)

    # ------------------------------------------------------------------ membership
    def member_heartbeat(
        self, group: str, member: str, info: Mapping[str, JSON], ttl: float
    ) -> None:
        check_name(group, "group name")
        check_name(member, "member id")
        with self._cond:
            self._members.setdefault(group, {})[member] = (time.time() + ttl, dict(info))

    def member_leave(self, group: str, member: str) -> bool:
        check_name(group, "group name")
        with self._cond:
            return self._members.get(group, {}).pop(member, None) is not None

    def members(self, group: str) -> dict[str, dict[str, JSON]]:
        check_name(group, "group name")
        with self._cond:
            now = time.time()
            group_members = self._members.get(group, {})
            for m in [m for m, (exp, _) in group_members.items() if exp <= now]:
                del group_members[m]
            return {m: dict(info) for m, (_, info) in sorted(group_members.items())}
