"""In-memory state of one message queue, driven by journal records.

Messages move delayed → ready → in flight → gone (ack) / ready (nack, timeout) / dead. Ready
messages leave by priority (higher first), then put order (a per-queue put sequence number).

Structures (n = messages): ``msgs`` maps id → :class:`Msg`; three heaps hold
``(key, seq, version, id)`` entries for ready, delayed (by due time) and in-flight (by
visibility deadline) messages; ``dead`` keeps dead ids in the order they died. A heap entry is
valid only while the message's ``ver`` still matches, so state changes are O(log n) pushes and
stale entries are dropped when they surface. Receive is O(log n) amortised.

Records carry their timestamps (``t``) and the caller's ``max_attempts``, so time-driven
transitions (due delayed → ready, expired in-flight → ready or dead) replay identically.
"""

from __future__ import annotations

import heapq
from typing import Any, ClassVar

from unidist.backends.base import Delivery
from unidist.backends.file._objects import ObjectState, _int, _num, _str

READY = "r"
DELAYED = "d"
FLIGHT = "f"
DEAD = "x"
_STATES = (READY, DELAYED, FLIGHT, DEAD)

_Entry = tuple[float, int, int, str]


class Msg:
    """One message and its delivery state."""

    __slots__ = ("att", "body", "due", "enq", "id", "prio", "rcpt", "seq", "st", "ver")

    def __init__(self, mid: str, body: str, prio: int, enq: float, seq: int) -> None:
        self.id = mid
        self.body = body
        self.prio = prio
        self.enq = enq
        self.seq = seq
        self.att = 0
        self.st = READY
        self.due = 0.0
        self.rcpt = ""
        self.ver = 0

    def delivery(self, receipt: str) -> Delivery:
        return Delivery(self.id, self.body, self.att, receipt, self.prio, self.enq)


class QueueState(ObjectState):
    """A message queue (see the module docs for the structures)."""

    kind: ClassVar[str] = "queue"

    def __init__(self) -> None:
        self.msgs: dict[str, Msg] = {}
        self.next_seq = 1
        self.ready: list[_Entry] = []
        self.delayed: list[_Entry] = []
        self.flight: list[_Entry] = []
        self.dead: dict[str, None] = {}
        self.count = dict.fromkeys(_STATES, 0)

    # ------------------------------------------------------------------ snapshot
    @classmethod
    def load(cls, data: Any) -> QueueState:
        self = cls()
        if data is None:
            return self
        self.next_seq = _int(data["seq"])
        for mid, body, prio, enq, seq, att, st, due, rcpt in data["msgs"]:
            m = Msg(_str(mid), _str(body), _int(prio), _num(enq), _int(seq))
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
        self._rebuild()
        return self

    def dump(self) -> Any:
        rows = [
            [m.id, m.body, m.prio, m.enq, m.seq, m.att, m.st, m.due, m.rcpt]
            for m in self.msgs.values()
            if m.st != DEAD
        ]
        rows += [self._row(self.msgs[mid]) for mid in self.dead]
        return {"seq": self.next_seq, "msgs": rows}

    @staticmethod
    def _row(m: Msg) -> list[Any]:
        return [m.id, m.body, m.prio, m.enq, m.seq, m.att, m.st, m.due, m.rcpt]

    def _rebuild(self) -> None:
        self.ready = [(-m.prio, m.seq, m.ver, m.id) for m in self.msgs.values() if m.st == READY]
        self.delayed = [(m.due, m.seq, m.ver, m.id) for m in self.msgs.values() if m.st == DELAYED]
        self.flight = [(m.due, m.seq, m.ver, m.id) for m in self.msgs.values() if m.st == FLIGHT]
        for heap in (self.ready, self.delayed, self.flight):
            heapq.heapify(heap)

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

    def _remove(self, m: Msg) -> None:
        self.count[m.st] -= 1
        if m.st == DEAD:
            del self.dead[m.id]
        m.ver += 1
        del self.msgs[m.id]

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

    def dead_list(self) -> list[Delivery]:
        return [self.msgs[mid].delivery("") for mid in self.dead]

    def __len__(self) -> int:
        return len(self.msgs)

    # ------------------------------------------------------------------ records
    def apply(self, op: dict[str, Any]) -> Any:
        kind = op["o"]
        if kind == "p":
            return self._put(op)
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
        raise ValueError(f"unknown queue operation {kind!r}")

    def _put(self, op: dict[str, Any]) -> bool:
        mid = _str(op["id"])
        if mid in self.msgs:
            return False
        now, due = _num(op["t"]), _num(op["due"])
        m = Msg(mid, _str(op["b"]), _int(op["p"]), now, self.next_seq)
        self.next_seq += 1
        self.msgs[mid] = m
        if due > now:
            self._place(m, DELAYED, due)
        else:
            self._place(m, READY)
        return True

    def _receive(self, op: dict[str, Any]) -> Delivery | None:
        now = _num(op["t"])
        max_attempts = _int(op["ma"])
        receipt = _str(op["r"])
        deadline = op["vt"]
        self._promote(now, max_attempts)
        while self.ready:
            m = self._valid(heapq.heappop(self.ready), READY)
            if m is None:
                continue
            if m.att >= max_attempts:
                self._move(m, DEAD)
                continue
            m.att += 1
            if deadline is None:
                self._remove(m)
                return m.delivery(receipt)
            m.rcpt = receipt
            self._move(m, FLIGHT, _num(deadline))
            return m.delivery(receipt)
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
        self._rebuild()
        return len(gone)

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
