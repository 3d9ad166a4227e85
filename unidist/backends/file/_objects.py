"""In-memory state of counters, state buckets and membership groups, driven by journal records.

Each class is a deterministic state machine: :meth:`ObjectState.apply` takes one operation
record (a small JSON object) and changes the state exactly the same way whether the record
was just written by this process or is being replayed from the journal. Records carry every
input the change depends on (including timestamps), so replay never consults the clock.
:meth:`dump`/:meth:`load` convert the whole state to and from a snapshot's JSON.

Malformed records raise ``ValueError``/``KeyError``/``TypeError``; the journal layer turns
them into :class:`~unidist.errors.CorruptData` naming file and offset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


class ObjectState:
    """Base of the per-kind state machines."""

    kind: ClassVar[str] = ""
    #: rotate to a new generation once the journal reaches this fraction of the snapshot size.
    compact_ratio: ClassVar[float] = 1.0
    #: location (``generation << 40 | offset``) of the record being applied; set by the
    #: journal layer before each :meth:`apply`.
    at: int = 0

    def pinned(self) -> set[int]:
        """Older journal generations this state still reads from (kept on disk)."""
        return set()

    def relocatable(self, gen: int) -> list[tuple[int, list[int]]]:
        """Kept journals older than ``gen`` with few live records: (generation, locations)."""
        return []

    def body(self, loc: int, read: Callable[[int], dict[str, Any]]) -> tuple[str, float]:
        """(body, time) of the record item at ``loc`` (objects that keep records on disk)."""
        raise NotImplementedError

    @classmethod
    def load(cls, data: Any) -> ObjectState:
        """Rebuild from :meth:`dump` output (None: a new, empty object)."""
        raise NotImplementedError

    def dump(self) -> Any:
        """The whole state as JSON-compatible data."""
        raise NotImplementedError

    def dump_parts(self) -> list[bytes]:
        """:meth:`dump` as compact UTF-8 JSON, in parts to be written one after another."""
        return [_ENCODER.encode(self.dump()).encode()]

    def apply(self, op: dict[str, Any]) -> Any:
        """Apply one operation record; return the operation's result for the live caller."""
        raise NotImplementedError


class CounterState(ObjectState):
    """A signed 64-bit counter. Record: ``{"v": new_value}``."""

    kind: ClassVar[str] = "counter"

    def __init__(self, value: int = 0) -> None:
        self.value = value

    @classmethod
    def load(cls, data: Any) -> CounterState:
        if data is None:
            return cls()
        return cls(_checked(_int(data["v"])))

    def dump(self) -> Any:
        return {"v": self.value}

    def apply(self, op: dict[str, Any]) -> int:
        self.value = _checked(_int(op["v"]))
        return self.value


def _checked(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"counter value {value} is outside the signed 64-bit range")
    return value


class BucketState(ObjectState):
    """Key → JSON text. Records: set ``s``, update ``u``, delete ``d``, clear ``c``."""

    kind: ClassVar[str] = "state"

    def __init__(self, data: dict[str, str] | None = None) -> None:
        self.data: dict[str, str] = data if data is not None else {}

    @classmethod
    def load(cls, data: Any) -> BucketState:
        if data is None:
            return cls()
        items = data["items"]
        if not isinstance(items, dict):
            raise TypeError("bucket items must be an object")
        return cls({_str(k): _str(v) for k, v in items.items()})

    def dump(self) -> Any:
        return {"items": self.data}

    def apply(self, op: dict[str, Any]) -> Any:
        kind = op["o"]
        if kind == "s":
            self.data[_str(op["k"])] = _str(op["v"])
        elif kind == "u":
            items = op["i"]
            if not isinstance(items, dict):
                raise TypeError("update items must be an object")
            self.data.update({_str(k): _str(v) for k, v in items.items()})
        elif kind == "d":
            return self.data.pop(_str(op["k"]), None)
        elif kind == "c":
            self.data.clear()
        else:
            raise ValueError(f"unknown bucket operation {kind!r}")
        return None


class GroupState(ObjectState):
    """Members of a group: member → (info JSON text, expires_at wall-clock seconds).

    Records: heartbeat ``{"o": "h", "m", "i", "e"}``, leave ``{"o": "l", "m"}``. Expired
    members are invisible; snapshots drop them.
    """

    kind: ClassVar[str] = "group"

    def __init__(self) -> None:
        self.members: dict[str, tuple[str, float]] = {}

    @classmethod
    def load(cls, data: Any) -> GroupState:
        self = cls()
        if data is None:
            return self
        for member, info, expires in data["members"]:
            self.members[_str(member)] = (_str(info), _num(expires))
        return self

    def dump(self) -> Any:
        now = time.time()
        return {"members": [[m, i, e] for m, (i, e) in self.members.items() if e > now]}

    def apply(self, op: dict[str, Any]) -> Any:
        kind = op["o"]
        if kind == "h":
            self.members[_str(op["m"])] = (_str(op["i"]), _num(op["e"]))
        elif kind == "l":
            self.members.pop(_str(op["m"]), None)
        else:
            raise ValueError(f"unknown membership operation {kind!r}")
        return None

    def live(self, now: float) -> dict[str, str]:
        """member → info text of members whose heartbeat has not expired at ``now``."""
        return {m: info for m, (info, exp) in self.members.items() if exp > now}
