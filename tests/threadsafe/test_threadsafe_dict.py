"""ThreadSafeDict behaves like dict, method by method, and its extras do what they promise."""

from __future__ import annotations

import copy
import pickle
import threading
import weakref
from collections.abc import Callable, ItemsView, KeysView, MutableMapping, ValuesView
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from unidist.threadsafe import ThreadSafeDict

JOIN_TIMEOUT = 10.0


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run fn and return ("ok", result) or ("raise", exception type)."""
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("raise", type(exc))


# -- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_args", "kwargs"),
    [
        (lambda: (), {}),
        (lambda: ({"a": 1, "b": 2},), {}),
        (lambda: ([("a", 1), ("b", 2), ("a", 3)],), {}),
        (lambda: (), {"a": 1, "b": 2}),
        (lambda: ({"a": 1},), {"b": 2, "a": 5}),
        (lambda: ([("x", 1)],), {"data": 2}),
        (lambda: (iter([("g", 1), ("h", 2)]),), {}),
    ],
)
def test_construction_matches_dict(
    make_args: Callable[[], tuple[Any, ...]], kwargs: dict[str, Any]
) -> None:
    """Every dict() calling convention builds the same items, in the same order."""
    plain = dict(*make_args(), **kwargs)
    ts = ThreadSafeDict(*make_args(), **kwargs)
    assert ts.snapshot() == plain
    assert list(ts.items()) == list(plain.items())


def test_construction_from_threadsafe_dict_copies() -> None:
    """Building from a ThreadSafeDict copies it: later changes to either side do not leak."""
    src = ThreadSafeDict(a=1)
    new = ThreadSafeDict(src)
    src["b"] = 2
    new["c"] = 3
    assert new == {"a": 1, "c": 3}
    assert src == {"a": 1, "b": 2}


@pytest.mark.parametrize("bad", [[1, 2], [("a",)], 5, [("a", 1, 2)]])
def test_construction_errors_match_dict(bad: Any) -> None:
    """Malformed input raises the same exception type as dict()."""
    assert outcome(lambda: ThreadSafeDict(bad))[1] is outcome(lambda: dict(bad))[1]
    assert outcome(lambda: dict(bad))[0] == "raise"


def test_is_a_mutable_mapping_and_generic() -> None:
    """It registers as a MutableMapping and can be subscripted for typing."""
    d = ThreadSafeDict[str, int]()
    assert isinstance(d, MutableMapping)
    assert d == {}


def test_supports_weakref_and_is_unhashable() -> None:
    """It can be weakly referenced and, like dict, cannot be hashed."""
    d = ThreadSafeDict(a=1)
    assert weakref.ref(d)() is d
    with pytest.raises(TypeError):
        hash(d)


# -- single-key operations ---------------------------------------------------------------------


def test_getitem_setitem_delitem() -> None:
    """Item access, assignment and deletion behave like dict, KeyError included."""
    d = ThreadSafeDict[str, int]()
    d["a"] = 1
    d["a"] = 2
    d["b"] = 3
    assert d["a"] == 2
    del d["a"]
    assert d == {"b": 3}
    with pytest.raises(KeyError) as exc:
        d["missing"]
    assert exc.value.args == ("missing",)
    with pytest.raises(KeyError):
        del d["missing"]
    with pytest.raises(TypeError):
        d[[1]] = 1  # type: ignore[index]


def test_contains_len_bool() -> None:
    """``in``, len() and truthiness follow the contents."""
    d = ThreadSafeDict[str, int]()
    assert not d
    assert len(d) == 0
    assert "a" not in d
    d["a"] = 0
    assert d
    assert len(d) == 1
    assert "a" in d
    assert 5 not in d


def test_get() -> None:
    """get() returns the value, None or the given default."""
    d = ThreadSafeDict(a=1)
    assert d.get("a") == 1
    assert d.get("b") is None
    assert d.get("b", 7) == 7
    assert d.get("a", 7) == 1


def test_setdefault() -> None:
    """setdefault() inserts only when absent and returns the stored value."""
    d: ThreadSafeDict[str, int | None] = ThreadSafeDict(a=1)
    assert d.setdefault("a", 5) == 1
    assert d.setdefault("b", 5) == 5
    assert d.setdefault("c") is None
    assert d == {"a": 1, "b": 5, "c": None}


def test_pop() -> None:
    """pop() removes and returns, falls back to a default, else raises KeyError."""
    d = ThreadSafeDict(a=1, b=2)
    assert d.pop("a") == 1
    assert d.pop("a", None) is None
    assert d.pop("a", 9) == 9
    with pytest.raises(KeyError):
        d.pop("a")
    assert d == {"b": 2}


def test_popitem_is_lifo_and_raises_when_empty() -> None:
    """popitem() removes the last inserted pair and raises KeyError on an empty dict."""
    d = ThreadSafeDict(a=1, b=2)
    d["c"] = 3
    assert d.popitem() == ("c", 3)
    assert d.popitem() == ("b", 2)
    assert d.popitem() == ("a", 1)
    with pytest.raises(KeyError):
        d.popitem()


# -- transform ---------------------------------------------------------------------------------


def test_transform_existing_absent_and_default() -> None:
    """transform() stores and returns fn(current), using default (None unless given) when absent."""
    d = ThreadSafeDict(n=1)
    assert d.transform("n", lambda v: v + 1) == 2
    assert d.transform("m", lambda v: v * 3, default=5) == 15
    seen: list[Any] = []

    def record(v: Any) -> int:
        seen.append(v)
        return 0

    assert d.transform("z", record) == 0
    assert seen == [None]
    assert d == {"n": 2, "m": 15, "z": 0}


def test_transform_leaves_dict_unchanged_when_fn_raises() -> None:
    """An exception from fn propagates and nothing is stored."""
    d = ThreadSafeDict(n=1)

    def boom(v: int) -> int:
        raise ValueError(v)

    with pytest.raises(ValueError):
        d.transform("n", boom)
    with pytest.raises(ValueError):
        d.transform("new", boom, default=0)
    assert d == {"n": 1}


def test_transform_fn_may_read_the_same_dict() -> None:
    """fn runs under the reentrant lock, so it can read the dict without deadlock."""
    d = ThreadSafeDict(a=10, b=1)
    assert d.transform("b", lambda v: v + d["a"]) == 11


# -- whole-dict operations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (({"b": 20, "z": 26},), {}),
        (([("b", 20), ("y", 25)],), {}),
        ((), {"b": 20, "x": 24}),
        (({"b": 20},), {"b": 21, "w": 23}),
        ((ThreadSafeDict(b=20, v=22),), {}),
    ],
)
def test_update_matches_dict(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """update() accepts a mapping, pairs, kwargs or a ThreadSafeDict, like dict.update."""
    plain = {"a": 1, "b": 2}
    ts = ThreadSafeDict(plain)
    plain.update(*(a.snapshot() if isinstance(a, ThreadSafeDict) else a for a in args), **kwargs)
    ts.update(*args, **kwargs)
    assert list(ts.items()) == list(plain.items())


def test_update_with_malformed_pairs_changes_nothing() -> None:
    """A malformed pair raises like dict.update, but no item is applied (all or nothing)."""
    d = ThreadSafeDict(a=1)
    with pytest.raises(ValueError):
        d.update([("b", 2), ("c",)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        d.update(5)  # type: ignore[call-overload]
    assert d == {"a": 1}


def test_clear() -> None:
    """clear() empties the dict."""
    d = ThreadSafeDict(a=1, b=2)
    d.clear()
    assert d == {}
    assert len(d) == 0


def test_views_match_dict_and_are_snapshots() -> None:
    """keys/values/items equal dict's, support set operations, and ignore later changes."""
    plain = {"a": 1, "b": 2, "c": 3}
    d = ThreadSafeDict(plain)
    keys, values, items = d.keys(), d.values(), d.items()
    assert isinstance(keys, KeysView)
    assert isinstance(values, ValuesView)
    assert isinstance(items, ItemsView)
    assert list(keys) == list(plain.keys())
    assert list(values) == list(plain.values())
    assert list(items) == list(plain.items())
    assert keys & {"a", "z"} == {"a"}
    assert keys - {"a"} == {"b", "c"}
    assert ("a", 1) in items
    assert 2 in values
    d["d"] = 4
    del d["a"]
    assert list(keys) == ["a", "b", "c"]
    assert len(items) == 3
    assert list(d.keys()) == ["b", "c", "d"]


def test_iteration_order_and_reversed() -> None:
    """iter() and reversed() follow insertion order, like dict."""
    plain = {"b": 1, "a": 2, "c": 3}
    d = ThreadSafeDict(plain)
    assert list(d) == list(plain)
    assert list(reversed(d)) == list(reversed(plain))


def test_mutating_while_iterating_does_not_raise() -> None:
    """Deleting and adding keys inside a for loop over the dict or its views never raises."""
    d = ThreadSafeDict({i: i for i in range(10)})
    for k in d:
        del d[k]
        d[k + 100] = k
    for k, v in d.items():
        d[k] = v + 1
    for k in d.keys():
        d.pop(k)
    for _ in d.values():
        d.clear()
    for k in reversed(d):
        d[k] = 0
    assert d == {}


def test_copy_is_independent() -> None:
    """copy() and copy.copy() return a new ThreadSafeDict that shares no state."""
    d = ThreadSafeDict(a=[1])
    for dup in (d.copy(), copy.copy(d)):
        assert type(dup) is ThreadSafeDict
        assert dup == d
        dup["b"] = [2]
        assert "b" not in d
        assert dup["a"] is d["a"]  # shallow
        assert dup.locked() is not d.locked()


def test_deepcopy_and_pickle() -> None:
    """copy.deepcopy() copies nested values and pickle round-trips the items."""
    d = ThreadSafeDict(a=[1, 2])
    deep = copy.deepcopy(d)
    assert deep == d
    assert deep["a"] is not d["a"]
    back = pickle.loads(pickle.dumps(d))
    assert type(back) is ThreadSafeDict
    assert back == {"a": [1, 2]}
    back["x"] = [0]
    assert "x" not in d


def test_snapshot_is_a_plain_independent_dict() -> None:
    """snapshot() returns a plain dict that later changes do not affect."""
    d = ThreadSafeDict(a=1)
    snap = d.snapshot()
    assert type(snap) is dict
    d["b"] = 2
    assert snap == {"a": 1}


def test_fromkeys() -> None:
    """fromkeys() builds a ThreadSafeDict like dict.fromkeys."""
    d = ThreadSafeDict.fromkeys("abc")
    assert type(d) is ThreadSafeDict
    assert d == dict.fromkeys("abc")
    assert ThreadSafeDict.fromkeys(["x", "y"], 0) == {"x": 0, "y": 0}


def test_or_ror_ior() -> None:
    """``|``, reflected ``|`` and ``|=`` merge like dict, returning ThreadSafeDicts."""
    d = ThreadSafeDict(a=1, b=2)
    merged = d | {"b": 3, "c": 4}
    assert type(merged) is ThreadSafeDict
    assert list(merged.items()) == [("a", 1), ("b", 3), ("c", 4)]
    assert d == {"a": 1, "b": 2}
    rmerged = {"b": 0, "z": 9} | d
    assert type(rmerged) is ThreadSafeDict
    assert list(rmerged.items()) == [("b", 2), ("z", 9), ("a", 1)]
    assert d | ThreadSafeDict(c=3) == {"a": 1, "b": 2, "c": 3}
    same = d
    d |= {"c": 3}
    d |= [("d", 4)]
    d |= ThreadSafeDict(e=5)
    assert d is same
    assert d == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    with pytest.raises(TypeError):
        d | 5  # type: ignore[operator]
    with pytest.raises(TypeError):
        d | [("x", 1)]  # type: ignore[operator]
    with pytest.raises(TypeError):
        5 | d  # type: ignore[operator]


def test_equality() -> None:
    """Equality ignores order and holds with dicts, other mappings and ThreadSafeDicts."""
    d = ThreadSafeDict(a=1, b=2)
    assert d == {"b": 2, "a": 1}
    assert {"b": 2, "a": 1} == d
    assert d == ThreadSafeDict(b=2, a=1)
    assert d == d
    assert d != {"a": 1}
    assert d != ThreadSafeDict(a=1, b=3)
    assert d != [("a", 1), ("b", 2)]
    assert d != 5
    from types import MappingProxyType

    assert d == MappingProxyType({"a": 1, "b": 2})


def test_repr() -> None:
    """repr() shows the class name around the dict's repr, and survives self-reference."""
    d: ThreadSafeDict[str, Any] = ThreadSafeDict(a=1)
    assert repr(d) == "ThreadSafeDict({'a': 1})"
    assert repr(ThreadSafeDict()) == "ThreadSafeDict({})"
    d["self"] = d
    assert repr(d).startswith("ThreadSafeDict({'a': 1, 'self': ThreadSafeDict({")


# -- locked() ----------------------------------------------------------------------------------


def test_locked_is_reentrant() -> None:
    """Inside ``with d.locked():`` the same thread can use every operation and nest locked()."""
    d = ThreadSafeDict(n=0)
    done = threading.Event()

    def body() -> None:
        with d.locked():
            d["n"] += 1
            d.transform("n", lambda v: v + 1)
            with d.locked():
                d.update(m=1)
                assert list(d.items()) == [("n", 2), ("m", 1)]
                assert d == {"n": 2, "m": 1}
                _ = repr(d), d.copy(), d | {}
        done.set()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(JOIN_TIMEOUT)
    assert done.is_set(), "locked() was not reentrant (deadlock or error)"


def test_locked_blocks_other_threads_until_released() -> None:
    """While one thread holds locked(), another thread's write waits for the release."""
    d = ThreadSafeDict(n=0)
    wrote = threading.Event()

    def writer() -> None:
        d["n"] = 99
        wrote.set()

    with d.locked():
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        t.join(0.2)
        assert t.is_alive(), "a write went through while another thread held locked()"
        assert d["n"] == 0
    t.join(JOIN_TIMEOUT)
    assert wrote.is_set()
    assert d["n"] == 99


# -- stateful model check ----------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d", 1, 2])
VALUES = st.integers(-3, 3)


class DictMachine(RuleBasedStateMachine):
    """Random sequences of operations on a ThreadSafeDict and a plain dict stay identical."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[Any, int] = {}
        self.ts: ThreadSafeDict[Any, int] = ThreadSafeDict()

    def both(self, op: Callable[[Any], Any]) -> None:
        """Apply op to the model and to the ThreadSafeDict; results or exceptions must match."""
        assert outcome(lambda: op(self.ts)) == outcome(lambda: op(self.model))

    @rule(k=KEYS, v=VALUES)
    def setitem(self, k: Any, v: int) -> None:
        self.both(lambda d: d.__setitem__(k, v))

    @rule(k=KEYS)
    def getitem(self, k: Any) -> None:
        self.both(lambda d: d[k])

    @rule(k=KEYS)
    def delitem(self, k: Any) -> None:
        self.both(lambda d: d.__delitem__(k))

    @rule(k=KEYS, v=VALUES)
    def get(self, k: Any, v: int) -> None:
        self.both(lambda d: (d.get(k), d.get(k, v)))

    @rule(k=KEYS, v=VALUES)
    def setdefault(self, k: Any, v: int) -> None:
        self.both(lambda d: d.setdefault(k, v))

    @rule(k=KEYS, default=st.none() | VALUES, use_default=st.booleans())
    def pop(self, k: Any, default: int | None, use_default: bool) -> None:
        self.both(lambda d: d.pop(k, default) if use_default else d.pop(k))

    @rule()
    def popitem(self) -> None:
        self.both(lambda d: d.popitem())

    @rule(items=st.lists(st.tuples(KEYS, VALUES), max_size=4), as_dict=st.booleans())
    def update(self, items: list[tuple[Any, int]], as_dict: bool) -> None:
        arg: Any = dict(items) if as_dict else items
        self.both(lambda d: d.update(arg))

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=3))
    def ior(self, items: dict[Any, int]) -> None:
        def op(d: Any) -> None:
            d |= items

        self.both(op)

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=3))
    def or_(self, items: dict[Any, int]) -> None:
        self.both(lambda d: list((d | items).items()))
        self.both(lambda d: list((items | d).items()))

    @rule(k=KEYS, delta=VALUES)
    def transform(self, k: Any, delta: int) -> None:
        new = self.ts.transform(k, lambda v: v + delta, default=0)
        self.model[k] = self.model.get(k, 0) + delta
        assert new == self.model[k]

    @rule(k=KEYS)
    def contains(self, k: Any) -> None:
        self.both(lambda d: k in d)

    @rule()
    def clear(self) -> None:
        self.both(lambda d: d.clear())

    @rule()
    def copy_(self) -> None:
        dup = self.ts.copy()
        assert dup == self.model
        assert list(dup.items()) == list(self.model.items())

    @rule(k=KEYS, v=VALUES)
    def mutate_while_iterating(self, k: Any, v: int) -> None:
        for key in self.ts:
            self.ts[key] = v
        for key in list(self.model):
            self.model[key] = v

    @invariant()
    def same_contents_and_order(self) -> None:
        assert self.ts == self.model
        assert self.ts.snapshot() == self.model
        assert list(self.ts.items()) == list(self.model.items())
        assert list(reversed(self.ts)) == list(reversed(self.model))
        assert len(self.ts) == len(self.model)


DictMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestDictStateMachine = DictMachine.TestCase
