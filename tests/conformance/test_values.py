"""Values: JSON round-trips exactly on every backend; anything else is refused, nothing stored."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unidist
from unidist.backends import Backend

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)

SAMPLES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    10**40,
    1.5,
    -0.0,
    1e308,
    "",
    "héllo wörld ✓ 漢字 🎉",
    'quote" backslash\\ newline\n tab\t nul\x00',
    [],
    {},
    [1, "two", [3.0, None], {"four": 4}],
    {"": "empty key", "nested": {"deep": [True, False, None]}},
    "x" * 100_000,
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: repr(v)[:30])
def test_values_round_trip(backend: Backend, value: object) -> None:
    """What is stored in a bucket and sent through a queue comes back equal."""
    s = unidist.SharedState("vals", backend=backend)
    s["k"] = value
    got = s["k"]
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)
    q = unidist.MessageQueue("vals", backend=backend)
    q.put(value)
    assert q.get(timeout=5) == value


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_any_json_value_round_trips(backend: Backend, value: object) -> None:
    """Property: any JSON value (unicode, big ints, nesting) round-trips through a bucket."""
    s = unidist.SharedState("prop", backend=backend)
    s["k"] = value
    assert s["k"] == value


class _Obj:
    pass


def _circular() -> list[object]:
    a: list[object] = []
    a.append(a)
    return a


BAD_VALUES = [
    {1, 2},
    b"bytes",
    _Obj(),
    float("nan"),
    float("inf"),
    {1: "int key"},
    {"ok": {(1, 2): "tuple key"}},
    "lone surrogate \ud800",
    _circular(),
    [complex(1, 2)],
]


@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__)
def test_non_json_values_are_refused_and_nothing_is_stored(backend: Backend, value: object) -> None:
    """A non-JSON value raises SerializationError (a TypeError) and changes nothing."""
    s = unidist.SharedState("bad", backend=backend)
    s["k"] = "before"
    q = unidist.MessageQueue("bad", backend=backend)
    with pytest.raises(unidist.SerializationError) as info:
        s["k"] = value
    assert isinstance(info.value, TypeError)
    with pytest.raises(unidist.SerializationError):
        s.update({"other": 1, "k2": value})
    with pytest.raises(unidist.SerializationError):
        q.put(value)
    assert s.snapshot() == {"k": "before"}
    assert q.stats() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
