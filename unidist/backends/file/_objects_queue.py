"""In-memory index of one message queue, driven by journal records; bodies stay on disk.

Messages move delayed → ready → in flight → gone (ack) / ready (nack, timeout) / dead. Ready
messages leave by priority (higher first), then put order.

Bodies are not kept in memory: a message is known by the *location* of its put record,
``loc = generation << 40 | offset`` in ``journal.<generation>`` (see
:class:`~unidist.backends.file.journal_handle.Handle`), which the store reads back with one
``pread`` when it delivers the message. Locations grow with put order, so a message's
location is also its FIFO position (``seq``). A journal generation that still holds the put
record of a live message is kept on disk as a *segment* (:meth:`QueueState.pinned`); it is
deleted once every message put in it is gone.

Two representations keep memory small at any depth:

* **fresh** messages (put with a generated 32-hex-digit id, no delay, never delivered) live
  in one FIFO per priority: an ``array('q')`` of locations and 16 bytes of id each, nothing
  else (24 bytes per message);
* every other message (custom id, delayed, in flight, returned, dead) is a :class:`Msg`
  object in ``msgs``, indexed by id, with heaps of ``(key, seq, version, id)`` entries for
  ready, delayed (by due time) and in-flight (by visibility deadline) messages; ``dead``
  keeps dead ids in the order they died. A heap entry is valid only while the message's
  ``ver`` still matches, so state changes are O(log n) pushes and stale entries are dropped
  when they surface.

A receive takes the better of the ready heap's head and the best FIFO head. Records carry
their timestamps (``t``) and the caller's ``max_attempts``, so time-driven transitions (due
delayed → ready, expired in-flight → ready or dead) replay identically.

A ``put_many`` is one record ``{"o": "P", "m": [[id, body, priority, due], ...]}``; its
i-th message gets location ``record + i`` (records are longer than their item count, so
locations stay unique and in put order), and ``batches`` remembers where such records start
so that :meth:`QueueState.body` finds the record of a location. A ``get_many`` /
``receive_many`` is one ``r`` record with ``k`` (the most messages to take).

Snapshots hold the index, not the bodies: FIFO locations and ids as base64 of their packed
arrays (fast to load without a Python object per message), :class:`Msg` rows as lists.
Messages that came from an older snapshot format carry their body inline (``loc`` -1).
"""

from __future__ import annotations

import base64
import bisect
import heapq
import re
from array import array
from collections.abc import Callable
from typing import Any, ClassVar

from unidist.backends.base import Delivery
from unidist.backends.file._objects import _ENCODER, ObjectState, _int, _num, _str

READY = "r"
DELAYED = "d"
FLIGHT = "f"
DEAD = "x"
_STATES = (READY, DELAYED, FLIGHT, DEAD)

#: bits of a location that hold the record's offset in its journal (1 TiB per generation).
GEN_SHIFT = 40
OFFSET_MASK = (1 << GEN_SHIFT) - 1
_HEX = frozenset("0123456789abcdef")
#: a kept journal with at most this many live messages is a relocation candidate.
RELOCATE_MAX = 64
_HEX_RUN = re.compile("[0-9a-f]*")

_Entry = tuple[float, int, int, str]
#: reads the record at a location (``generation << 40 | offset``): its JSON object.
RecordReader = Callable[[int], dict[str, Any]]
#: a message's (body, enqueued_at) by its location.
Reader = Callable[[int], tuple[str, float]]


def is_fresh_id(mid: str) -> bool:
    """Whether ``mid`` has the form of a generated id (32 lowercase hex digits)."""
    return len(mid) == 32 and _HEX.issuperset(mid)


class Msg:
    """One message and its delivery state (``body`` None: read it at ``loc``)."""

    __slots__ = ("att", "body", "due", "enq", "id", "loc", "prio", "rcpt", "seq", "st", "ver")

    def __init__(
        self, mid: str, body: str | None, loc: int, prio: int, enq: float, seq: int
    ) -> None:
        self.id = mid
        self.body = body
        self.loc = loc
        self.prio = prio
        self.enq = enq
        self.seq = seq
        self.att = 0
        self.st = READY
        self.due = 0.0
        self.rcpt = ""
        self.ver = 0

    def delivery(self, receipt: str, read: Reader) -> Delivery:
        """The :class:`Delivery` of this message (reads its body from disk if needed)."""
        body, enq = self.body, self.enq
        if body is None:
            body, enq = read(self.loc)
        return Delivery(self.id, body, self.att, receipt, self.prio, enq)


class _Fifo:
    """Fresh ready messages of one priority, in put order (entries before ``head`` are gone)."""

    __slots__ = ("head", "ids", "locs")

    def __init__(self) -> None:
        self.locs = array("q")
        self.ids = bytearray()
        self.head = 0

    def __len__(self) -> int:
        return len(self.locs) - self.head

    def pop(self) -> tuple[int, str]:
        i = self.head
        loc = self.locs[i]
        mid = self.ids[16 * i : 16 * i + 16].hex()
        self.head = i + 1
        if self.head == len(self.locs):
            self.locs = array("q")
            self.ids = bytearray()
            self.head = 0
        elif self.head >= 4096 and 2 * self.head >= len(self.locs):
            del self.locs[: self.head]
            del self.ids[: 16 * self.head]
            self.head = 0
        return loc, mid

    def find(self, raw: bytes) -> int:
        """Index of id ``raw`` (16 bytes) among the live entries, or -1."""
        ids = self.ids
        pos = ids.find(raw, 16 * self.head)
        while pos >= 0 and pos % 16:
            pos = ids.find(raw, pos + 1)
        return -1 if pos < 0 else pos // 16

    def remove(self, i: int) -> int:
        """Take entry ``i`` out of the middle; return its location."""
        loc = self.locs[i]
        del self.locs[i]
        del self.ids[16 * i : 16 * i + 16]
        return loc


class QueueState(ObjectState):
    """A message queue (see the module docs for the structures)."""

    kind: ClassVar[str] = "queue"
    #: rotate once the journal holds this fraction of the snapshot's size (snapshots are small).
    compact_ratio: ClassVar[float] = 0.25

    def __init__(self) -> None:
        self.msgs: dict[str, Msg] = {}
        self.fifos: dict[int, _Fifo] = {}
        self.fresh = 0
        self.ready: list[_Entry] = []
        self.delayed: list[_Entry] = []
        self.flight: list[_Entry] = []
        self.dead: dict[str, None] = {}
        self.count = dict.fromkeys(_STATES, 0)
        #: generation → live messages whose put record (body) is in it.
        self.live: dict[int, int] = {}
        #: start locations of put_many records and their item counts (sorted by location).
        self.bstarts = array("q")
        self.bcounts = array("q")
        #: location of the record being applied (set by the journal layer before apply).
        self.at = 0
        self._top: int | None = None

    # ------------------------------------------------------------------ snapshot
    @classmethod
    def load(cls, data: Any) -> QueueState:
        self = cls()
        if data is None:
            return self
        if "msgs" in data and "fifo" not in data:
            # The first snapshot format: bodies inline, seq a put counter.
            for mid, body, prio, enq, seq, att, st, due, rcpt in data["msgs"]:
                self._load_row(mid, body, -1, prio, enq, seq, att, st, due, rcpt)
        else:
            for mid, body, loc, prio, enq, seq, att, st, due, rcpt in data["rows"]:
                self._load_row(mid, body, loc, prio, enq, seq, att, st, due, rcpt)
            for prio, (locs_b64, ids_b64) in data["fifo"].items():
                f = _Fifo()
                f.locs.frombytes(base64.b64decode(locs_b64, validate=True))
                f.ids = bytearray(base64.b64decode(ids_b64, validate=True))
                if len(f.ids) != 16 * len(f.locs):
                    raise ValueError("fifo ids and locations differ in length")
                if f.locs:
                    self.fifos[int(prio)] = f
                    self.fresh += len(f.locs)
                    self.count[READY] += len(f.locs)
                    self._count_gens(f.locs)
        batches = data.get("batches")
        if batches:
            self.bstarts.frombytes(base64.b64decode(batches[0], validate=True))
            self.bcounts.frombytes(base64.b64decode(batches[1], validate=True))
            if len(self.bstarts) != len(self.bcounts):
                raise ValueError("batch starts and counts differ in length")
        self._rebuild()
        return self

    def _load_row(self, mid: Any, body: Any, loc: Any, *rest: Any) -> None:
        prio, enq, seq, att, st, due, rcpt = rest
        m = Msg(_str(mid), None if body is None else _str(body), _int(loc), _int(prio),
                _num(enq), _int(seq))  # fmt: skip
        if m.body is None and m.loc < 0:
            raise ValueError(f"message {m.id!r} has neither a body nor a location")
        m.att = _int(att)
        if st not in _STATES:
            raise ValueError(f"unknown message state {st!r}")
        m.st, m.due, m.rcpt = st, _num(due), _str(rcpt)
        if m.id in self.msgs:
            raise ValueError(f"message {m.id!r} appears twice")
        self.msgs[m.id] = m
        self.count[st] += 1
        if st == DEAD:
            self.dead[m.id] = None
        if m.body is None:
            g = m.loc >> GEN_SHIFT
            self.live[g] = self.live.get(g, 0) + 1

    def _count_gens(self, locs: array[int], start: int = 0, sign: int = 1) -> None:
        # Locations are sorted: count each generation's run by bisection, not per message.
        i, n = start, len(locs)
        while i < n:
            g = locs[i] >> GEN_SHIFT
            j = bisect.bisect_left(locs, (g + 1) << GEN_SHIFT, i, n)
            left = self.live.get(g, 0) + sign * (j - i)
            if left:
                self.live[g] = left
            else:
                self.live.pop(g, None)
            i = j

    def dump(self) -> Any:
        rows = [self._row(m) for m in self.msgs.values() if m.st != DEAD]
        rows += [self._row(self.msgs[mid]) for mid in self.dead]
        fifo = {}
        for prio, f in self.fifos.items():
            if len(f):
                fifo[str(prio)] = [
                    base64.b64encode(f.locs[f.head :].tobytes()).decode("ascii"),
                    base64.b64encode(f.ids[16 * f.head :]).decode("ascii"),
                ]
        out: dict[str, Any] = {"rows": rows, "fifo": fifo}
        batches = self._dump_batches()
        if batches:
            out["batches"] = batches
        return out

    def _dump_batches(self) -> list[str] | None:
        """put_many records still holding a live message: base64 of (starts, counts)."""
        pinned = self.pinned()
        keep = [i for i, b in enumerate(self.bstarts) if b >> GEN_SHIFT in pinned]
        if not keep:
            return None
        starts = array("q", (self.bstarts[i] for i in keep))
        counts = array("q", (self.bcounts[i] for i in keep))
        return [
            base64.b64encode(starts.tobytes()).decode("ascii"),
            base64.b64encode(counts.tobytes()).decode("ascii"),
        ]

    def dump_parts(self) -> list[bytes]:
        """:meth:`dump` as JSON in parts: the packed FIFO arrays are base64-encoded straight
        from their buffers, never joined with the rest (a 1M-message index is 32 MB)."""
        rows = [self._row(m) for m in self.msgs.values() if m.st != DEAD]
        rows += [self._row(self.msgs[mid]) for mid in self.dead]
        parts = [b'{"rows":', _ENCODER.encode(rows).encode(), b',"fifo":{']
        first = True
        for prio, f in self.fifos.items():
            if not len(f):
                continue
            parts.append(b'"%d":["' % prio if first else b',"%d":["' % prio)
            parts.append(base64.b64encode(memoryview(f.locs)[f.head :]))
            parts.append(b'","')
            parts.append(base64.b64encode(memoryview(f.ids)[16 * f.head :]))
            parts.append(b'"]')
            first = False
        parts.append(b"}")
        batches = self._dump_batches()
        if batches:
            parts.append(b',"batches":' + _ENCODER.encode(batches).encode())
        parts.append(b"}")
        return parts

    def body(self, loc: int, read: RecordReader) -> tuple[str, float]:
        """(body, enqueued_at) of the message at ``loc``, read from its put record."""
        i = bisect.bisect_right(self.bstarts, loc) - 1
        if i >= 0 and loc - self.bstarts[i] < self.bcounts[i]:
            rec = read(self.bstarts[i])
            item = rec["m"][loc - self.bstarts[i]]
            return _str(item[1]), _num(rec["t"])
        rec = read(loc)
        return _str(rec["b"]), _num(rec["t"])

    @staticmethod
    def _row(m: Msg) -> list[Any]:
        return [m.id, m.body, m.loc, m.prio, m.enq, m.seq, m.att, m.st, m.due, m.rcpt]

    def _rebuild(self) -> None:
        msgs = self.msgs.values()
        self.ready = [(-m.prio, m.seq, m.ver, m.id) for m in msgs if m.st == READY]
        self.delayed = [(m.due, m.seq, m.ver, m.id) for m in msgs if m.st == DELAYED]
        self.flight = [(m.due, m.seq, m.ver, m.id) for m in msgs if m.st == FLIGHT]
        for heap in (self.ready, self.delayed, self.flight):
            heapq.heapify(heap)
        self._top = None

    def pinned(self) -> set[int]:
        """Journal generations that hold the body of a live message (keep them on disk)."""
        return {g for g, n in self.live.items() if n > 0}

    def relocatable(self, gen: int) -> list[tuple[int, list[int]]]:
        """Kept generations older than ``gen`` with at most :data:`RELOCATE_MAX` live
        messages, with those messages' locations (the journal decides by bytes)."""
        sparse = {g for g, n in self.live.items() if g < gen and n <= RELOCATE_MAX}
        if not sparse:
            return []
        found: dict[int, list[int]] = {g: [] for g in sparse}
        for m in self.msgs.values():
            if m.body is None and m.loc >> GEN_SHIFT in sparse:
                found[m.loc >> GEN_SHIFT].append(m.loc)
        for f in self.fifos.values():
            for g in sparse:
                lo = bisect.bisect_left(f.locs, g << GEN_SHIFT, f.head)
                hi = bisect.bisect_left(f.locs, (g + 1) << GEN_SHIFT, lo)
                found[g] += f.locs[lo:hi]
        return sorted((g, sorted(locs)) for g, locs in found.items() if locs)

    def _relocate(self, rows: Any) -> int:
        """Give the messages at the listed locations their bodies inline (record ``m``)."""
        if not isinstance(rows, list):
            raise TypeError("relocation rows must be a list")
        by_loc = {m.loc: m for m in self.msgs.values() if m.body is None}
        for row in rows:
            loc, body, enq = _int(row[0]), _str(row[1]), _num(row[2])
            m = by_loc.get(loc)
            if m is None:
                m = self._unfresh(loc, enq)
            m.body, m.enq = body, enq
            self._unpin(loc)
        return len(rows)

    def _unfresh(self, loc: int, enq: float) -> Msg:
        """Take the fresh message at ``loc`` out of its FIFO as a ready :class:`Msg`."""
        for prio, f in self.fifos.items():
            i = bisect.bisect_left(f.locs, loc, f.head)
            if i < len(f.locs) and f.locs[i] == loc:
                mid = f.ids[16 * i : 16 * i + 16].hex()
                f.remove(i)
                if not len(f):
                    del self.fifos[prio]
                    self._top = None
                self.fresh -= 1
                self.count[READY] -= 1
                m = Msg(mid, None, loc, prio, enq, loc)
                self.msgs[mid] = m
                self._place(m, READY)
                return m
        raise KeyError(f"no message at location {loc}")

    # ------------------------------------------------------------------ transitions
    def _move(self, m: Msg, st: str, due: float = 0.0) -> None:
        self.count[m.st] -= 1
        if m.st == DEAD:
            del self.dead[m.id]
        self._place(m, st, due)

    def _place(self, m: Msg, st: str, due: float = 0.0) -> None:
        m.st = st
        m.due = due
        m.ver += 1
        if st == READY:
            heapq.heappush(self.ready, (-m.prio, m.seq, m.ver, m.id))
        elif st == DELAYED:
            heapq.heappush(self.delayed, (due, m.seq, m.ver, m.id))
        elif st == FLIGHT:
            heapq.heappush(self.flight, (due, m.seq, m.ver, m.id))
        else:
            self.dead[m.id] = None
        self.count[st] += 1

    def _unpin(self, loc: int) -> None:
        if loc >= 0:
            g = loc >> GEN_SHIFT
            n = self.live[g] - 1
            if n:
                self.live[g] = n
            else:
                del self.live[g]

    def _remove(self, m: Msg) -> None:
        self.count[m.st] -= 1
        if m.st == DEAD:
            del self.dead[m.id]
        m.ver += 1
        del self.msgs[m.id]
        if m.body is None:
            self._unpin(m.loc)

    def _valid(self, entry: _Entry, st: str) -> Msg | None:
        m = self.msgs.get(entry[3])
        if m is None or m.ver != entry[2] or m.st != st:
            return None
        return m

    def _drop_stale_flight(self) -> None:
        flight = self.flight
        while flight and self._valid(flight[0], FLIGHT) is None:
            heapq.heappop(flight)
        if len(flight) > 1024 and len(flight) > 4 * self.count[FLIGHT]:
            self.flight = [e for e in flight if self._valid(e, FLIGHT) is not None]
            heapq.heapify(self.flight)

    def _promote(self, now: float, max_attempts: int) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            m = self._valid(heapq.heappop(self.delayed), DELAYED)
            if m is not None:
                self._move(m, READY)
        while self.flight and self.flight[0][0] <= now:
            m = self._valid(heapq.heappop(self.flight), FLIGHT)
            if m is not None:
                m.rcpt = ""
                self._move(m, DEAD if m.att >= max_attempts else READY)

    def _best_fifo(self) -> int | None:
        """Priority of the best non-empty FIFO (cached until a FIFO is added or empties)."""
        top = self._top
        if top is not None and top in self.fifos:
            return top
        top = max(self.fifos) if self.fifos else None
        self._top = top
        return top

    # ------------------------------------------------------------------ queries
    def has_work(self, now: float) -> bool:
        """Would a receive at ``now`` change anything (deliver, promote or kill a message)?"""
        if self.count[READY]:
            return True
        if self.delayed and self.delayed[0][0] <= now:
            return True
        self._drop_stale_flight()
        return bool(self.flight) and self.flight[0][0] <= now

    def next_event(self) -> float | None:
        """Wall-clock time of the next due delayed message or visibility deadline."""
        self._drop_stale_flight()
        times = [h[0][0] for h in (self.delayed, self.flight) if h]
        return min(times) if times else None

    def holds(self, mid: str) -> bool:
        """Whether the queue holds a message with id ``mid`` (in any state)."""
        if mid in self.msgs:
            return True
        if self.fresh and is_fresh_id(mid):
            raw = bytes.fromhex(mid)
            return any(f.find(raw) >= 0 for f in self.fifos.values())
        return False

    def current(self, mid: str, receipt: str) -> bool:
        """Is ``receipt`` the current delivery of in-flight message ``mid``?"""
        m = self.msgs.get(mid)
        return m is not None and m.st == FLIGHT and bool(receipt) and m.rcpt == receipt

    def held_by(self, consumer: str) -> list[Msg]:
        """In-flight messages whose current receipt names ``consumer`` (``token/consumer``)."""
        return [
            m for m in self.msgs.values() if m.st == FLIGHT and m.rcpt.partition("/")[2] == consumer
        ]

    def stats(self, now: float) -> dict[str, int]:
        due = 0
        heap = self.delayed
        stack = [0] if heap else []
        while stack:
            i = stack.pop()
            if i < len(heap) and heap[i][0] <= now:
                if self._valid(heap[i], DELAYED) is not None:
                    due += 1
                stack += (2 * i + 1, 2 * i + 2)
        return {
            "ready": self.count[READY] + due,
            "delayed": self.count[DELAYED] - due,
            "in_flight": self.count[FLIGHT],
            "dead": self.count[DEAD],
        }

    def dead_list(self, read: Reader) -> list[Delivery]:
        return [self.msgs[mid].delivery("", read) for mid in self.dead]

    def __len__(self) -> int:
        return len(self.msgs) + self.fresh

    # ------------------------------------------------------------------ records
    def apply(self, op: dict[str, Any]) -> Any:
        kind = op["o"]
        if kind == "p":
            return self._put(op)
        if kind == "P":
            return self._put_many(op)
        if kind == "r":
            return self._receive(op)
        if kind == "a":
            m = self.msgs[_str(op["id"])]
            self._remove(m)
            return True
        if kind == "n":
            return self._nack(op)
        if kind == "g":
            return self._purge(bool(op["dead"]))
        if kind == "q":
            return self._requeue()
        if kind == "R":
            return self._release(_str(op["c"]), _int(op["ma"]))
        if kind == "m":
            return self._relocate(op["m"])
        raise ValueError(f"unknown queue operation {kind!r}")

    def _put(self, op: dict[str, Any]) -> bool:
        _str(op["b"])
        return self._add(
            _str(op["id"]), _int(op["p"]), _num(op["t"]), _num(op["due"]), self.at, op.get("n")
        )

    def _put_many(self, op: dict[str, Any]) -> list[bool]:
        now, new = _num(op["t"]), op.get("n")
        items = op["m"]
        if not isinstance(items, list) or not items:
            raise ValueError("put_many record without messages")
        if self.bstarts and self.bstarts[-1] >= self.at:
            raise ValueError("put_many records out of order")
        at, n = self.at, len(items)
        self.bstarts.append(at)
        self.bcounts.append(n)
        if new and n > 1 and self._fresh_batch(items, now, at):
            return [True] * n
        out = []
        for i, (mid, body, prio, due) in enumerate(items):
            _str(body)
            out.append(self._add(_str(mid), _int(prio), now, _num(due), self.at + i, new))
        return out

    def _fresh_batch(self, items: list[Any], now: float, at: int) -> bool:
        """Fast path: every item fresh, ready and of one priority (one FIFO extend)."""
        try:
            ids, bodies, prios, dues = zip(*items, strict=True)
            joined = "".join(ids)
        except (TypeError, ValueError):
            return False
        prio = prios[0]
        if (
            set(map(type, prios)) != {int}
            or prios.count(prio) != len(prios)
            or set(map(type, bodies)) != {str}
            or set(map(len, ids)) != {32}
            or _HEX_RUN.fullmatch(joined) is None
            or not all(isinstance(d, (int, float)) and d <= now for d in dues)
        ):
            return False
        raw = bytes.fromhex(joined)
        f = self.fifos.get(prio)
        if f is None:
            f = self.fifos[prio] = _Fifo()
            self._top = None
        n = len(items)
        f.locs.extend(range(at, at + n))
        f.ids += raw
        self.fresh += n
        self.count[READY] += n
        g = at >> GEN_SHIFT
        self.live[g] = self.live.get(g, 0) + n
        return True

    def _add(self, mid: str, prio: int, now: float, due: float, loc: int, new: Any) -> bool:
        g = loc >> GEN_SHIFT
        if new and due <= now and is_fresh_id(mid):
            f = self.fifos.get(prio)
            if f is None:
                f = self.fifos[prio] = _Fifo()
                self._top = None
            f.locs.append(loc)
            f.ids += bytes.fromhex(mid)
            self.fresh += 1
            self.count[READY] += 1
            self.live[g] = self.live.get(g, 0) + 1
            return True
        if mid in self.msgs:
            return False
        m = Msg(mid, None, loc, prio, now, loc)
        self.msgs[mid] = m
        self.live[g] = self.live.get(g, 0) + 1
        if due > now:
            self._place(m, DELAYED, due)
        else:
            self._place(m, READY)
        return True

    def _pop_fresh(self, prio: int) -> Msg:
        f = self.fifos[prio]
        loc, mid = f.pop()
        if not len(f):
            del self.fifos[prio]
            self._top = None
        self.fresh -= 1
        self.count[READY] -= 1
        m = Msg(mid, None, loc, prio, -1.0, loc)
        m.st = READY
        return m

    def _receive(self, op: dict[str, Any]) -> Msg | None | list[Msg]:
        """Deliver the best ready message (returned, its ``att`` already counted), or with
        ``k`` up to ``k`` of them as a list (receipts ``token-i/consumer``)."""
        now = _num(op["t"])
        max_attempts = _int(op["ma"])
        receipt = _str(op["r"])
        deadline = op["vt"]
        self._promote(now, max_attempts)
        k = op.get("k")
        if k is None:
            return self._take(max_attempts, receipt, deadline)
        tok, sep, consumer = receipt.partition("/")
        out = []
        for i in range(_int(k)):
            m = self._take(max_attempts, f"{tok}-{i}{sep}{consumer}", deadline)
            if m is None:
                break
            out.append(m)
        return out

    def _take(self, max_attempts: int, receipt: str, deadline: Any) -> Msg | None:
        ready = self.ready
        while ready or self.fresh:
            while ready and self._valid(ready[0], READY) is None:
                heapq.heappop(ready)
            prio = self._best_fifo()
            if prio is not None and (
                not ready or (-prio, self.fifos[prio].locs[self.fifos[prio].head]) < ready[0][:2]
            ):
                m = self._pop_fresh(prio)
                m.att = 1
                if deadline is None:
                    self._unpin(m.loc)
                    return m
                m.rcpt = receipt
                self.msgs[m.id] = m
                self._place(m, FLIGHT, _num(deadline))
                return m
            if not ready:
                break
            m = self.msgs[heapq.heappop(ready)[3]]
            if m.att >= max_attempts:
                self._move(m, DEAD)
                continue
            m.att += 1
            if deadline is None:
                self._remove(m)
                return m
            m.rcpt = receipt
            self._move(m, FLIGHT, _num(deadline))
            return m
        return None

    def _nack(self, op: dict[str, Any]) -> bool:
        m = self.msgs[_str(op["id"])]
        now, due = _num(op["t"]), _num(op["due"])
        m.rcpt = ""
        if m.att >= _int(op["ma"]):
            self._move(m, DEAD)
        elif due > now:
            self._move(m, DELAYED, due)
        else:
            self._move(m, READY)
        return True

    def _purge(self, dead: bool) -> int:
        gone = [
            m for m in self.msgs.values() if m.st in (READY, DELAYED) or (dead and m.st == DEAD)
        ]
        for m in gone:
            self._remove(m)
        n = len(gone) + self.fresh
        for f in self.fifos.values():
            self._count_gens(f.locs, f.head, -1)
        self.count[READY] -= self.fresh
        self.fifos.clear()
        self.fresh = 0
        self._rebuild()
        return n

    def _release(self, consumer: str, max_attempts: int) -> int:
        held = self.held_by(consumer)
        for m in held:
            m.rcpt = ""
            self._move(m, DEAD if m.att >= max_attempts else READY)
        return len(held)

    def _requeue(self) -> int:
        ids = list(self.dead)
        for mid in ids:
            m = self.msgs[mid]
            m.att = 0
            self._move(m, READY)
        return len(ids)
