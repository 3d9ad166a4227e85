"""B1: non-JSON values on every backend (RELIABILITY.md 3.7).

Sets, bytes, arbitrary objects, circular structures, NaN/Infinity (refused, the documented
choice), non-str keys and lone surrogates are offered to every value-taking call (bucket set,
update, compare-and-set, transform, setdefault, queue put). Pass: ``SerializationError``
(a ``TypeError``) each time, and the stored bytes are identical before and after (the data
directory tree for file://, every key's DUMP for redis://).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import unidist
from tests.reliability._file_storage import fingerprint
from tests.reliability._report import Result, seed
from unidist.backends import Backend


def _circular() -> list[Any]:
    x: list[Any] = []
    x.append(x)
    return x


BAD: list[Any] = [
    {1, 2},
    b"bytes",
    object(),
    _circular(),
    math.nan,
    math.inf,
    -math.inf,
    {1: "int key"},
    {"k": [1, {2}]},
    "\ud800",
    complex(1, 2),
]


def test_b1_non_json_values_change_no_byte(
    backend: Backend, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    s = seed()
    state = unidist.SharedState("b1", backend=backend)
    queue = unidist.MessageQueue("b1", backend=backend)
    state["k"] = "before"
    state["n"] = 1
    queue.put("m0")
    before = fingerprint(backend, backend_kind, request)
    calls: list[tuple[str, Callable[[Any], object]]] = [
        ("set", lambda v: state.__setitem__("k", v)),
        ("set-new", lambda v: state.__setitem__("new", v)),
        ("update", lambda v: state.update({"x": 1, "k": v})),
        ("cas-new", lambda v: state.compare_and_set("k", "before", v)),
        ("cas-expected", lambda v: state.compare_and_set("k", v, "after")),
        ("transform", lambda v: state.transform("n", lambda _: v)),
        ("setdefault", lambda v: state.setdefault("fresh", v)),
        ("put", lambda v: queue.put(v)),
        ("put-in-list", lambda v: queue.put([1, v])),
    ]
    result = Result("B1", backend_kind, s, params={"values": len(BAD), "calls": len(calls)})
    wrong: list[str] = []
    for name, call in calls:
        for value in BAD:
            result.attempted += 1
            try:
                call(value)
            except unidist.SerializationError as exc:
                if isinstance(exc, TypeError):
                    result.ok += 1
                    continue
                wrong.append(f"{name}({type(value).__name__}): not a TypeError")
            except Exception as exc:
                wrong.append(f"{name}({type(value).__name__}): {type(exc).__name__}: {exc}")
            else:
                wrong.append(f"{name}({type(value).__name__}): accepted")
    after = fingerprint(backend, backend_kind, request)
    result.unexpected = len(wrong)
    result.violations = len(wrong) + (before != after)
    result.extra = {"storage_identical": before == after}
    result.emit()
    assert wrong == []
    assert before  # the fingerprint really saw the stored objects
    assert after == before
    assert state.snapshot() == {"k": "before", "n": 1}
    assert queue.get(timeout=1) == "m0"
