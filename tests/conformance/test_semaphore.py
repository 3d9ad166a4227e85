"""SharedSemaphore: up to `limit` holders at once, each with its own token and owner record,
crashed holders freed as for locks, on every backend through the public API (issue 3)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from _workers import HANDOVER_BOUND, HOLDER_TTL, children, run_workers

import unidist
from unidist.backends import Backend

# 10 workers, limit 3, each entering ROUNDS times and staying HOLD seconds inside.
WORKERS, LIMIT, ROUNDS, HOLD = 10, 3, 2, 0.05


def test_limit_holders_get_in_each_with_its_own_token_and_owner(backend: Backend) -> None:
    """A limit-3 semaphore admits 3 holders, refuses a 4th, and lists 3 distinct owners."""
    sems = [unidist.SharedSemaphore("slots", limit=3, backend=backend) for _ in range(4)]
    assert sems[0].limit == 3
    assert not sems[0].locked()
    for sem in sems[:3]:
        assert sem.acquire(blocking=False) is True
    assert sems[3].acquire(blocking=False) is False
    assert sems[3].acquire(timeout=0.1) is False
    assert sems[3].locked()  # all slots taken
    tokens = [sem.token or 0 for sem in sems[:3]]
    assert 0 not in tokens
    assert tokens == sorted(set(tokens))
    owners = sems[3].owners()
    assert sorted(int(o["token"]) for o in owners) == tokens  # type: ignore[arg-type]
    assert all(o["pid"] == os.getpid() for o in owners)
    owner = sems[3].owner()
    assert owner is not None
    assert owner["token"] == tokens[0]  # the longest-standing holder
    sems[1].release()
    assert not sems[3].locked()
    assert sems[3].acquire(blocking=False) is True
    assert sems[3].token is not None
    assert sems[3].token > max(tokens)
    for sem in (sems[0], sems[2], sems[3]):
        sem.release()
    assert sems[0].owners() == []


def test_one_object_may_hold_several_slots(backend: Backend) -> None:
    """Each acquire() of one object takes another slot; each release() frees its latest."""
    sem = unidist.SharedSemaphore("multi", limit=2, backend=backend)
    probe = unidist.SharedSemaphore("multi", limit=2, backend=backend)
    assert sem.acquire(blocking=False)
    first = sem.token
    assert sem.acquire(blocking=False)
    second = sem.token
    assert first is not None
    assert second is not None
    assert second > first
    assert probe.acquire(blocking=False) is False
    sem.release()
    assert [o["token"] for o in probe.owners()] == [first]
    sem.release()
    assert probe.owners() == []
    with pytest.raises(unidist.LockNotOwned):
        sem.release()


def test_a_release_lets_a_blocked_waiter_in(backend: Backend) -> None:
    """A thread blocked on a full semaphore gets the slot freed by a release."""
    holders = [unidist.SharedSemaphore("handover", limit=2, backend=backend) for _ in range(2)]
    waiter = unidist.SharedSemaphore("handover", limit=2, backend=backend)
    for sem in holders:
        sem.acquire()
    started = threading.Event()
    got: list[bool] = []

    def wait() -> None:
        started.set()
        got.append(waiter.acquire(timeout=10))

    t = threading.Thread(target=wait)
    t.start()
    assert started.wait(5)
    assert not got  # still blocked: both slots are held
    holders[0].release()
    t.join(15)
    assert not t.is_alive()
    assert got == [True]
    assert {o["token"] for o in waiter.owners()} == {holders[1].token, waiter.token}
    waiter.release()
    holders[1].release()


def test_hold_on_a_full_semaphore_raises_lock_timeout(backend: Backend) -> None:
    """hold(timeout=...) on a semaphore with every slot taken raises LockTimeout in time."""
    sem = unidist.SharedSemaphore("full", limit=1, backend=backend)
    other = unidist.SharedSemaphore("full", limit=1, backend=backend)
    sem.acquire()
    t0 = time.monotonic()
    with pytest.raises(unidist.LockTimeout, match=str(os.getpid())), other.hold(timeout=0.2):
        pytest.fail("entered a full semaphore")
    assert 0.2 <= time.monotonic() - t0 <= 0.5
    sem.release()
    with other.hold(timeout=1):
        assert other.locked()


def test_semaphore_arguments_are_validated(backend: Backend) -> None:
    """limit must be an int from 1 up; anything else fails before any I/O."""
    with pytest.raises(ValueError):
        unidist.SharedSemaphore("bad", limit=0, backend=backend)
    with pytest.raises(TypeError):
        unidist.SharedSemaphore("bad", limit=True, backend=backend)
    with pytest.raises(TypeError):
        unidist.SharedSemaphore("bad", limit=2.0, backend=backend)  # type: ignore[arg-type]
    assert backend.locks() == {}


@pytest.mark.multiprocess
def test_never_more_than_limit_inside_and_everyone_gets_in(
    backend: Backend, backend_url: str, tmp_path: Path
) -> None:
    """10 workers (threads on memory, processes elsewhere) on a limit-3 semaphore: never more
    than 3 inside at once, as checked by the workers themselves, and all 10 get in."""
    slots = tmp_path / "slots"
    slots.mkdir()
    results = run_workers(
        backend,
        "semaphore_slots",
        WORKERS,
        timeout=60,
        url=backend_url,
        name="ten",
        limit=LIMIT,
        slots_dir=str(slots),
        rounds=ROUNDS,
        hold=HOLD,
    )
    assert len(results) == WORKERS
    assert [r["entered"] for r in results] == [ROUNDS] * WORKERS
    assert sum(r["violations"] for r in results) == 0, "more than 3 holders were inside"
    used = {s for r in results for s in r["slots"]}
    assert used == set(range(LIMIT)), f"never {LIMIT} inside at once (slots used {used})"
    assert os.listdir(slots) == []


@pytest.mark.multiprocess
@pytest.mark.scope("host")
def test_a_killed_holders_slot_is_freed(backend_kind: str, backend_url: str) -> None:
    """kill -9 of a process holding a slot frees that slot within the backend's bound."""
    bound = HANDOVER_BOUND[backend_kind]
    mine = unidist.SharedSemaphore("crash-sem", limit=2, backend=backend_url)
    probe = unidist.SharedSemaphore("crash-sem", limit=2, backend=backend_url)
    try:
        assert mine.acquire(blocking=False)
        with children(
            "hold_until_killed", url=backend_url, name="crash-sem", ttl=HOLDER_TTL, limit=2
        ) as (kid,):
            old_token = int(kid.expect("held"))
            assert {o["pid"] for o in probe.owners()} == {os.getpid(), kid.pid}
            assert probe.acquire(blocking=False) is False
            killed_at = time.monotonic()
            kid.kill()
            assert probe.acquire(timeout=bound + 5)
            elapsed = time.monotonic() - killed_at
        assert elapsed <= bound, f"slot freed after {elapsed:.2f} s, bound {bound} s"
        assert probe.token is not None
        assert probe.token > old_token
        assert {o["pid"] for o in probe.owners()} == {os.getpid()}
        probe.release()
        mine.release()
    finally:
        unidist.backends.reset()
