"""ThreadSafeList behaves like list, method by method, and its extras do what they promise."""

from __future__ import annotations

import copy
import pickle
import threading
import weakref
from collections.abc import Callable, MutableSequence
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from unidist.threadsafe import ThreadSafeList

JOIN_TIMEOUT = 10.0


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run fn and return ("ok", result) or ("raise", exception type)."""
    try:
        result = fn()
    except Exception as exc:
        return ("raise", type(exc))
    if isinstance(result, ThreadSafeList):
        result = ("ThreadSafeList", result.snapshot())
    elif isinstance(result, list):
        result = ("ThreadSafeList", result)  # a list method's list result is a ThreadSafeList
    return ("ok", result)


# -- construction ------------------------------------------------------------------------------


def test_construction() -> None:
    """It builds from nothing, any iterable, or another ThreadSafeList (copied)."""
    assert ThreadSafeList() == []
    assert ThreadSafeList([1, 2]) == [1, 2]
    assert ThreadSafeList(x * 2 for x in range(3)) == [0, 2, 4]
    assert ThreadSafeList("ab") == ["a", "b"]
    src = ThreadSafeList([1])
    new = ThreadSafeList(src)
    src.append(2)
    assert new == [1]
    with pytest.raises(TypeError):
        ThreadSafeList(5)  # type: ignore[arg-type]


def test_is_a_mutable_sequence_generic_weakrefable_unhashable() -> None:
    """It registers as a MutableSequence, subscripts for typing, supports weakref, has no hash."""
    lst = ThreadSafeList[int]([1])
    assert isinstance(lst, MutableSequence)
    assert weakref.ref(lst)() is lst
    with pytest.raises(TypeError):
        hash(lst)


# -- indexing and slicing ----------------------------------------------------------------------

INDEXES: list[Any] = [0, 2, -1, -4, 4, -5, 10, slice(None), slice(1, 3), slice(None, None, -1)]
INDEXES += [slice(0, 4, 2), slice(-2, None), slice(5, 1), slice(None, None, 3), "x", 1.0]


@pytest.mark.parametrize("index", INDEXES, ids=repr)
def test_getitem_matches_list(index: Any) -> None:
    """Indexing and slicing return what list does (a ThreadSafeList for slices) or raise alike."""
    plain = [10, 11, 12, 13]
    ts = ThreadSafeList(plain)
    got = outcome(lambda: ts[index])
    assert got == outcome(lambda: plain[index])
    if isinstance(index, slice):
        assert type(ts[index]) is ThreadSafeList


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 99),
        (-1, 99),
        (4, 99),
        (-5, 99),
        (slice(1, 3), [7, 8, 9]),
        (slice(1, 3), []),
        (slice(None), iter([5, 6])),
        (slice(0, 4, 2), [1, 2]),
        (slice(0, 4, 2), [1, 2, 3]),
        (slice(None, None, -1), "abcd"),
        (slice(1, 2), 5),
        ("x", 1),
    ],
    ids=lambda v: "iterator" if hasattr(v, "__next__") else repr(v),
)
def test_setitem_matches_list(index: Any, value: Any) -> None:
    """Item and slice assignment change the list as list does, or raise the same error."""
    plain = [10, 11, 12, 13]
    ts = ThreadSafeList(plain)
    if not isinstance(value, (list, str, int)):
        value = list(value)
    assert outcome(lambda: ts.__setitem__(index, value)) == outcome(
        lambda: plain.__setitem__(index, value)
    )
    assert ts == plain


def test_slice_assignment_from_generator_and_self() -> None:
    """Slice assignment takes any iterable, including a generator or the list itself."""
    ts = ThreadSafeList([1, 2, 3])
    ts[1:2] = (x * 10 for x in range(3))
    assert ts == [1, 0, 10, 20, 3]
    ts[:] = ts
    assert ts == [1, 0, 10, 20, 3]
    ts[len(ts) :] = ts
    assert ts == [1, 0, 10, 20, 3] * 2


@pytest.mark.parametrize("index", [0, -1, 3, -4, 4, -5, slice(1, 3), slice(None, None, 2), "x"])
def test_delitem_matches_list(index: Any) -> None:
    """Deleting an item or a slice works like list, with IndexError out of range."""
    plain = [10, 11, 12, 13]
    ts = ThreadSafeList(plain)
    assert outcome(lambda: ts.__delitem__(index)) == outcome(lambda: plain.__delitem__(index))
    assert ts == plain


def test_transform() -> None:
    """transform() stores and returns fn(item) at an index; out of range raises IndexError."""
    ts = ThreadSafeList([1, 2, 3])
    assert ts.transform(0, lambda v: v + 10) == 11
    assert ts.transform(-1, lambda v: v * 2) == 6
    assert ts == [11, 2, 6]
    with pytest.raises(IndexError):
        ts.transform(3, lambda v: v)

    def boom(v: int) -> int:
        raise ValueError(v)

    with pytest.raises(ValueError):
        ts.transform(1, boom)
    assert ts == [11, 2, 6]
    assert ts.transform(1, lambda v: v + len(ts)) == 5  # fn may use the list (reentrant)


# -- list methods ------------------------------------------------------------------------------


def test_append_extend_insert() -> None:
    """append, extend (any iterable, itself included) and insert (clamped) match list."""
    plain: list[Any] = [1]
    ts: ThreadSafeList[Any] = ThreadSafeList(plain)
    for lst in (plain, ts):
        lst.append(2)
        lst.extend([3, 4])
        lst.extend(x for x in (5,))
        lst.extend(lst)
        lst.insert(0, "a")
        lst.insert(-1, "b")
        lst.insert(100, "end")
        lst.insert(-100, "start")
    assert ts == plain
    ts.extend(ThreadSafeList(["t"]))
    assert ts[-1] == "t"


def test_extend_with_failing_iterable_changes_nothing() -> None:
    """extend() reads its argument in full first: if that raises, no item was added."""
    ts = ThreadSafeList([1])

    def gen() -> Any:
        yield 2
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ts.extend(gen())
    with pytest.raises(TypeError):
        ts.extend(5)  # type: ignore[arg-type]
    assert ts == [1]


def test_pop() -> None:
    """pop() takes the last or a given item; an empty list or bad index raises IndexError."""
    ts = ThreadSafeList([1, 2, 3, 4])
    assert ts.pop() == 4
    assert ts.pop(0) == 1
    assert ts.pop(-1) == 3
    with pytest.raises(IndexError):
        ts.pop(5)
    assert ts.pop() == 2
    with pytest.raises(IndexError):
        ts.pop()


def test_remove() -> None:
    """remove() deletes the first equal item and raises ValueError when there is none."""
    ts = ThreadSafeList([1, 2, 1, 3])
    ts.remove(1)
    assert ts == [2, 1, 3]
    with pytest.raises(ValueError):
        ts.remove(9)
    assert ts == [2, 1, 3]


@pytest.mark.parametrize(
    "args", [(1,), (1, 1), (1, 3), (1, -2), (9,), (1, 1, 2), (3, 0, 100), (1, 2, 3)]
)
def test_index_matches_list(args: tuple[Any, ...]) -> None:
    """index() with start/stop finds what list finds and raises ValueError alike."""
    plain = [0, 1, 2, 1, 3]
    ts = ThreadSafeList(plain)
    assert outcome(lambda: ts.index(*args)) == outcome(lambda: plain.index(*args))


def test_count() -> None:
    """count() counts equal items."""
    ts = ThreadSafeList([1, 2, 1, 1.0, "1"])
    assert ts.count(1) == 3
    assert ts.count(5) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"reverse": True}, {"key": lambda x: x[1]}, {"key": lambda x: -x[0], "reverse": True}],
)
def test_sort_matches_list(kwargs: dict[str, Any]) -> None:
    """sort() orders like list.sort, stably, with key and reverse."""
    plain = [(3, "a"), (1, "b"), (2, "a"), (1, "a")]
    ts = ThreadSafeList(plain)
    plain.sort(**kwargs)
    ts.sort(**kwargs)
    assert ts == plain


def test_sort_uncomparable_raises_type_error() -> None:
    """Sorting items that cannot be compared raises TypeError, like list.sort."""
    ts = ThreadSafeList[Any]([1, "a"])
    with pytest.raises(TypeError):
        ts.sort()


def test_reverse_clear() -> None:
    """reverse() and clear() match list."""
    ts = ThreadSafeList([1, 2, 3])
    ts.reverse()
    assert ts == [3, 2, 1]
    ts.clear()
    assert ts == []
    assert len(ts) == 0
    assert not ts


def test_contains_len_iter_reversed() -> None:
    """``in``, len(), iter() and reversed() follow the contents."""
    ts = ThreadSafeList([1, 2, 3])
    assert 2 in ts
    assert 5 not in ts
    assert len(ts) == 3
    assert list(ts) == [1, 2, 3]
    assert list(reversed(ts)) == [3, 2, 1]


def test_iterators_are_snapshots() -> None:
    """iter() and reversed() see the list as it was when called; changing it never raises."""
    ts = ThreadSafeList([1, 2, 3])
    it, rev = iter(ts), reversed(ts)
    ts.clear()
    assert list(it) == [1, 2, 3]
    assert list(rev) == [3, 2, 1]
    ts.extend([1, 2, 3])
    for x in ts:
        ts.remove(x)
        ts.append(x * 10)
    assert ts == [10, 20, 30]


def test_copies() -> None:
    """copy(), copy.copy(), slicing [:] and snapshot() give independent shallow copies."""
    ts = ThreadSafeList([[1], [2]])
    for dup in (ts.copy(), copy.copy(ts), ts[:]):
        assert type(dup) is ThreadSafeList
        assert dup == ts
        dup.append([3])
        assert len(ts) == 2
        assert dup[0] is ts[0]
    snap = ts.snapshot()
    assert type(snap) is list
    ts.append([4])
    assert snap == [[1], [2]]


def test_deepcopy_and_pickle() -> None:
    """copy.deepcopy() copies nested items and pickle round-trips the list."""
    ts = ThreadSafeList([[1, 2]])
    deep = copy.deepcopy(ts)
    assert deep == ts
    assert deep[0] is not ts[0]
    back = pickle.loads(pickle.dumps(ts))
    assert type(back) is ThreadSafeList
    assert back == [[1, 2]]


# -- operators ---------------------------------------------------------------------------------


def test_add_radd_iadd() -> None:
    """``+`` with lists or ThreadSafeLists returns a ThreadSafeList; ``+=`` takes any iterable."""
    ts = ThreadSafeList([1, 2])
    for result, expected in [
        (ts + [3], [1, 2, 3]),  # noqa: RUF005
        ([0] + ts, [0, 1, 2]),  # noqa: RUF005
        (ts + ThreadSafeList([9]), [1, 2, 9]),
        (ts + ts, [1, 2, 1, 2]),
    ]:
        assert type(result) is ThreadSafeList
        assert result == expected
    assert ts == [1, 2]
    with pytest.raises(TypeError):
        ts + (3,)  # type: ignore[operator]  # noqa: RUF005
    with pytest.raises(TypeError):
        (3,) + ts  # type: ignore[operator]  # noqa: RUF005
    same = ts
    ts += (3,)
    ts += (x for x in [4])
    ts += ts
    assert ts is same
    assert ts == [1, 2, 3, 4, 1, 2, 3, 4]
    with pytest.raises(TypeError):
        ts += 5  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 1, 3, -1])
def test_mul_rmul_imul(n: int) -> None:
    """``*``, reflected ``*`` and ``*=`` repeat like list."""
    plain = [1, 2]
    ts = ThreadSafeList(plain)
    assert ts * n == plain * n
    assert n * ts == n * plain
    assert type(ts * n) is ThreadSafeList
    assert type(n * ts) is ThreadSafeList
    same = ts
    ts *= n
    plain *= n
    assert ts is same
    assert ts == plain
    with pytest.raises(TypeError):
        ts * 1.5  # type: ignore[operator]


@pytest.mark.parametrize(
    ("a", "b"), [([1, 2], [1, 2]), ([1, 2], [1, 3]), ([1], [1, 0]), ([], []), ([2], [1, 9])]
)
def test_comparisons_match_list(a: list[int], b: list[int]) -> None:
    """==, !=, <, <=, >, >= agree with list, against lists and ThreadSafeLists on either side."""
    ops: list[Callable[[Any, Any], bool]] = [
        lambda x, y: x == y,
        lambda x, y: x != y,
        lambda x, y: x < y,
        lambda x, y: x <= y,
        lambda x, y: x > y,
        lambda x, y: x >= y,
    ]
    ta, tb = ThreadSafeList(a), ThreadSafeList(b)
    for op in ops:
        expected = op(a, b)
        assert op(ta, b) is expected
        assert op(a, tb) is expected
        assert op(ta, tb) is expected


def test_comparisons_with_other_types() -> None:
    """A ThreadSafeList never equals a tuple; ordering against a non-list raises TypeError."""
    ts = ThreadSafeList([1])
    assert ts != (1,)
    assert ts != 1
    assert ts == ts
    with pytest.raises(TypeError):
        ts < (1,)  # type: ignore[operator]
    with pytest.raises(TypeError):
        ts >= 5  # type: ignore[operator]


def test_repr() -> None:
    """repr() shows the class name around the list's repr."""
    assert repr(ThreadSafeList([1, "a"])) == "ThreadSafeList([1, 'a'])"
    assert repr(ThreadSafeList()) == "ThreadSafeList([])"


# -- locked() ----------------------------------------------------------------------------------


def test_locked_is_reentrant() -> None:
    """Inside ``with lst.locked():`` the same thread can use every operation and nest locked()."""
    ts = ThreadSafeList([0])
    done = threading.Event()

    def body() -> None:
        with ts.locked():
            ts.append(1)
            ts[0] += 5
            with ts.locked():
                ts.extend(ts)
                ts.sort(key=lambda x: ts.count(x))
                assert len(ts) == 4
                _ = repr(ts), ts[:], ts + ts, list(ts)
        done.set()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(JOIN_TIMEOUT)
    assert done.is_set(), "locked() was not reentrant (deadlock or error)"


def test_locked_blocks_other_threads_until_released() -> None:
    """While one thread holds locked(), another thread's append waits for the release."""
    ts = ThreadSafeList[int]()
    t = threading.Thread(target=ts.append, args=(1,), daemon=True)
    with ts.locked():
        t.start()
        t.join(0.2)
        assert t.is_alive(), "an append went through while another thread held locked()"
        assert ts == []
    t.join(JOIN_TIMEOUT)
    assert ts == [1]


# -- stateful model check ----------------------------------------------------------------------

VALUES = st.integers(0, 4)
INDEX = st.integers(-6, 6)
SLICES = st.builds(
    slice, st.none() | INDEX, st.none() | INDEX, st.none() | st.sampled_from([-2, -1, 1, 2])
)


class ListMachine(RuleBasedStateMachine):
    """Random sequences of operations on a ThreadSafeList and a plain list stay identical."""

    def __init__(self) -> None:
        super().__init__()
        self.model: list[int] = []
        self.ts: ThreadSafeList[int] = ThreadSafeList()

    def both(self, op: Callable[[Any], Any]) -> None:
        """Apply op to the model and to the ThreadSafeList; results or exceptions must match."""
        assert outcome(lambda: op(self.ts)) == outcome(lambda: op(self.model))

    @rule(v=VALUES)
    def append(self, v: int) -> None:
        self.both(lambda lst: lst.append(v))

    @rule(vs=st.lists(VALUES, max_size=4))
    def extend(self, vs: list[int]) -> None:
        self.both(lambda lst: lst.extend(vs))

    @rule(vs=st.lists(VALUES, max_size=3))
    def iadd(self, vs: list[int]) -> None:
        def op(lst: Any) -> None:
            lst += vs

        self.both(op)

    @rule(n=st.integers(-1, 2))
    def imul(self, n: int) -> None:
        if len(self.model) > 20:
            n = min(n, 1)

        def op(lst: Any) -> None:
            lst *= n

        self.both(op)

    @rule(i=INDEX, v=VALUES)
    def insert(self, i: int, v: int) -> None:
        self.both(lambda lst: lst.insert(i, v))

    @rule(i=st.none() | INDEX)
    def pop(self, i: int | None) -> None:
        self.both(lambda lst: lst.pop() if i is None else lst.pop(i))

    @rule(v=VALUES)
    def remove(self, v: int) -> None:
        self.both(lambda lst: lst.remove(v))

    @rule(v=VALUES, start=INDEX, stop=INDEX)
    def index(self, v: int, start: int, stop: int) -> None:
        self.both(lambda lst: lst.index(v, start, stop))
        self.both(lambda lst: lst.index(v))

    @rule(v=VALUES)
    def count_contains(self, v: int) -> None:
        self.both(lambda lst: (lst.count(v), v in lst))

    @rule(i=INDEX | SLICES)
    def getitem(self, i: int | slice) -> None:
        self.both(lambda lst: lst[i])

    @rule(i=INDEX, v=VALUES)
    def setitem(self, i: int, v: int) -> None:
        self.both(lambda lst: lst.__setitem__(i, v))

    @rule(s=SLICES, vs=st.lists(VALUES, max_size=4))
    def set_slice(self, s: slice, vs: list[int]) -> None:
        self.both(lambda lst: lst.__setitem__(s, vs))

    @rule(s=SLICES, data=st.data())
    def set_slice_same_length(self, s: slice, data: st.DataObject) -> None:
        n = len(range(*s.indices(len(self.model))))
        vs = data.draw(st.lists(VALUES, min_size=n, max_size=n))
        self.both(lambda lst: lst.__setitem__(s, vs))

    @rule(i=INDEX | SLICES)
    def delitem(self, i: int | slice) -> None:
        self.both(lambda lst: lst.__delitem__(i))

    @rule(i=INDEX, delta=VALUES)
    def transform(self, i: int, delta: int) -> None:
        got = outcome(lambda: self.ts.transform(i, lambda v: v + delta))

        def model_op() -> int:
            self.model[i] += delta
            return self.model[i]

        assert got == outcome(model_op)

    @rule(reverse=st.booleans(), keyed=st.booleans())
    def sort(self, reverse: bool, keyed: bool) -> None:
        key = (lambda v: v % 3) if keyed else None
        self.both(lambda lst: lst.sort(key=key, reverse=reverse))

    @rule()
    def reverse(self) -> None:
        self.both(lambda lst: lst.reverse())

    @rule()
    def clear(self) -> None:
        self.both(lambda lst: lst.clear())

    @rule(other=st.lists(VALUES, max_size=3))
    def compare(self, other: list[int]) -> None:
        self.both(lambda lst: (lst == other, lst < other, lst <= other, lst > other, lst >= other))

    @rule(other=st.lists(VALUES, max_size=3))
    def add(self, other: list[int]) -> None:
        self.both(lambda lst: lst + other)
        self.both(lambda lst: other + lst)

    @invariant()
    def same_contents(self) -> None:
        assert self.ts == self.model
        assert self.ts.snapshot() == self.model
        assert list(self.ts) == self.model
        assert list(reversed(self.ts)) == self.model[::-1]
        assert len(self.ts) == len(self.model)


ListMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestListStateMachine = ListMachine.TestCase
