"""Real threads hammering one ThreadSafeDict or ThreadSafeList: no lost update, error or deadlock.

Every test starts its threads together on a Barrier, joins every thread with a timeout (a thread
still alive after it is a deadlock and fails the test), and re-raises any error a thread hit.
The interpreter's thread switch interval is shortened so that threads interleave often.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from unidist.threadsafe import ThreadSafeDict, ThreadSafeList

JOIN_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    """Make CPython switch threads every few microseconds instead of every 5 ms."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run target(i) for i in range(n) in n threads started together; raise the first error."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def wrapper(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    # daemon: a deadlocked thread fails the test without keeping the interpreter alive
    threads = [
        threading.Thread(target=wrapper, args=(i,), name=f"stress-{i}", daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {JOIN_TIMEOUT}s (deadlock?): {alive}"
    if errors:
        raise errors[0]


def incr(v: int) -> int:
    return v + 1


# -- ThreadSafeDict ----------------------------------------------------------------------------


def test_dict_transform_loses_no_update() -> None:
    """8 threads x 10,000 transform() increments of one key give exactly 80,000."""
    d: ThreadSafeDict[str, int] = ThreadSafeDict()

    def work(_: int) -> None:
        for _ in range(10_000):
            d.transform("n", incr, default=0)

    run_threads(8, work)
    assert d == {"n": 80_000}


def test_dict_transform_over_several_keys_loses_no_update() -> None:
    """8 threads x 10,000 increments spread over 10 keys give exactly 8,000 per key."""
    d: ThreadSafeDict[int, int] = ThreadSafeDict()

    def work(_: int) -> None:
        for i in range(10_000):
            d.transform(i % 10, incr, default=0)

    run_threads(8, work)
    assert d.snapshot() == dict.fromkeys(range(10), 8_000)


def test_dict_locked_compound_update_loses_no_update() -> None:
    """A read-then-write under ``with d.locked():`` in 8 threads x 5,000 gives exactly 40,000."""
    d = ThreadSafeDict(n=0)

    def work(_: int) -> None:
        for _ in range(5_000):
            with d.locked():
                current = d["n"]
                d["n"] = current + 1

    run_threads(8, work)
    assert d["n"] == 40_000


def test_dict_concurrent_inserts_and_setdefault() -> None:
    """8 threads inserting 5,000 keys each and racing on setdefault() lose nothing."""
    d: ThreadSafeDict[Any, Any] = ThreadSafeDict()
    winners: list[list[int]] = [[] for _ in range(8)]

    def work(t: int) -> None:
        for i in range(5_000):
            d[(t, i)] = i
            if d.setdefault(("shared", i % 100), t) == t:
                winners[t].append(i % 100)

    run_threads(8, work)
    assert len(d) == 8 * 5_000 + 100
    assert all(d[(t, i)] == i for t in range(8) for i in range(5_000))
    # setdefault is atomic: each shared key was won by exactly one thread, the stored one
    owners = {k: t for t in range(8) for k in winners[t]}
    assert len(owners) == 100
    assert sum(len(set(w)) for w in winners) == 100
    assert all(d[("shared", k)] == t for k, t in owners.items())


def test_dict_pop_hands_each_key_to_one_thread() -> None:
    """4 threads popping from 20,000 keys get each key exactly once."""
    d = ThreadSafeDict({i: i for i in range(20_000)})
    got: list[list[int]] = [[] for _ in range(4)]

    def work(t: int) -> None:
        for k in range(20_000):
            v = d.pop(k, None)
            if v is not None:
                got[t].append(v)

    run_threads(4, work)
    popped = [v for part in got for v in part]
    assert sorted(popped) == list(range(20_000))
    assert len(d) == 0


def test_dict_iteration_while_mutating_never_raises() -> None:
    """Iterating keys, values, items and reversed() while 2 threads mutate never raises."""
    d: ThreadSafeDict[int, int] = ThreadSafeDict({i: i for i in range(200)})
    stop = threading.Event()
    iterations = [0, 0, 0, 0]
    readers_left = [2]
    done_lock = threading.Lock()

    def mutate(t: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            d[i % 500] = i
            d.pop((i * 7) % 500, None)
            if i % 1_000 == 0:
                d.clear()
            if i % 97 == 0:
                d.update({j: j for j in range(t, 300, 2)})

    def read(r: int) -> None:
        try:
            for _ in range(300):
                for k in d:
                    assert isinstance(k, int)
                keys = d.keys()
                assert len(keys) == len(list(keys))
                items = d.items()
                assert all(isinstance(v, int) for _, v in items)
                assert len(list(d.values())) >= 0
                list(reversed(d))
                snap = d.snapshot()
                assert len(snap) == len(list(snap))
                iterations[r] += 1
        finally:
            with done_lock:
                readers_left[0] -= 1
                if readers_left[0] == 0:
                    stop.set()

    def role(i: int) -> None:
        if i < 2:
            mutate(i)
        else:
            read(i)

    run_threads(4, role)
    assert iterations == [0, 0, 300, 300]


def test_dict_cross_equality_and_update_do_not_deadlock() -> None:
    """Two threads comparing and merging two ThreadSafeDicts in opposite orders never deadlock."""
    a = ThreadSafeDict({i: i for i in range(50)})
    b = ThreadSafeDict({i: i for i in range(50)})

    def work(t: int) -> None:
        x, y = (a, b) if t % 2 else (b, a)
        for i in range(2_000):
            _ = x == y
            _ = x != y
            x.update(y)
            _ = x | y
            x |= y
            x[i % 50] = i

    run_threads(4, work)
    assert set(a) == set(b) == set(range(50))


# -- ThreadSafeList ----------------------------------------------------------------------------


def test_list_concurrent_appends_keep_every_item_in_order() -> None:
    """8 threads x 10,000 appends give exactly 80,000 items, each thread's in its own order."""
    lst: ThreadSafeList[tuple[int, int]] = ThreadSafeList()

    def work(t: int) -> None:
        for i in range(10_000):
            lst.append((t, i))

    run_threads(8, work)
    items = lst.snapshot()
    assert len(items) == 80_000
    for t in range(8):
        assert [i for (tt, i) in items if tt == t] == list(range(10_000))


def test_list_extend_is_atomic() -> None:
    """Blocks added with extend() by 8 threads are never interleaved with other threads' items."""
    lst: ThreadSafeList[tuple[int, int, int]] = ThreadSafeList()

    def work(t: int) -> None:
        for i in range(1_000):
            lst.extend([(t, i, j) for j in range(5)])

    run_threads(8, work)
    items = lst.snapshot()
    assert len(items) == 8 * 1_000 * 5
    for start in range(0, len(items), 5):
        block = items[start : start + 5]
        t, i = block[0][0], block[0][1]
        assert block == [(t, i, j) for j in range(5)]


def test_list_transform_loses_no_update() -> None:
    """8 threads x 10,000 transform() increments of one index give exactly 80,000."""
    lst = ThreadSafeList([0, 0])

    def work(t: int) -> None:
        for _ in range(10_000):
            lst.transform(t % 2, incr)

    run_threads(8, work)
    assert lst == [40_000, 40_000]


def test_list_pop_hands_each_item_to_one_consumer() -> None:
    """4 threads popping 40,000 items until IndexError receive each item exactly once."""
    lst = ThreadSafeList(range(40_000))
    got: list[list[int]] = [[] for _ in range(4)]

    def work(t: int) -> None:
        while True:
            try:
                got[t].append(lst.pop())
            except IndexError:
                return

    run_threads(4, work)
    assert sorted(v for part in got for v in part) == list(range(40_000))
    assert lst == []


def test_list_iteration_while_mutating_never_raises() -> None:
    """Iterating, slicing, sorting and comparing while 2 threads mutate the list never raises."""
    lst = ThreadSafeList(range(100))
    stop = threading.Event()
    iterations = [0, 0, 0, 0]
    readers_left = [2]
    done_lock = threading.Lock()

    def mutate(t: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            lst.append(i)
            lst.insert(0, -i)
            try:
                lst.pop(len(lst) // 2)
                lst.remove(i)
            except (IndexError, ValueError):
                pass
            if i % 500 == 0:
                del lst[: len(lst) // 2]
            if i % 211 == t:
                lst.sort()

    def read(r: int) -> None:
        try:
            for _ in range(300):
                assert all(isinstance(x, int) for x in lst)
                assert all(isinstance(x, int) for x in reversed(lst))
                part = lst[1:50:2]
                assert len(part) <= 25
                _ = lst == lst.snapshot(), lst < [0], 5 in lst, repr(lst)
                iterations[r] += 1
        finally:
            with done_lock:
                readers_left[0] -= 1
                if readers_left[0] == 0:
                    stop.set()

    def role(i: int) -> None:
        if i < 2:
            mutate(i)
        else:
            read(i)

    run_threads(4, role)
    assert iterations == [0, 0, 300, 300]


def test_list_cross_operations_do_not_deadlock() -> None:
    """Two threads combining two ThreadSafeLists in opposite orders never deadlock."""
    a = ThreadSafeList(range(20))
    b = ThreadSafeList(range(20))

    def work(t: int) -> None:
        x, y = (a, b) if t % 2 else (b, a)
        for _ in range(1_000):
            _ = x == y, x < y, x + y
            x.extend(y)
            x[:] = y[:20]

    run_threads(4, work)
    assert len(a) >= 20
    assert len(b) >= 20
