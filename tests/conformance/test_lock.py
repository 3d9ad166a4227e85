"""SharedLock: mutual exclusion, owners, fencing tokens, leases and crash handover, on every
backend through the public API (issue 3)."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _workers import DURABLE_URL, HANDOVER_BOUND, HOLDER_TTL, children, run_workers

import unidist
from unidist.backends import Backend
from unidist.lock import fenced_get, fenced_set

# A waiter blocked in acquire() takes the lock within this many seconds of its release.
WAKE_BOUND = 0.25
# A restart in test_locks_are_not_persisted...: every handle is closed and the backend
# reopened (memory from its snapshot, which never holds locks; file: the kernel drops the
# flocks of closed handles). Redis: only the client is closed — the server keeps running, so a
# held lock's key stays until released or expired.
HELD_LOCK_OUTLIVES_RESTART = {"memory": False, "file": False, "redis": True}
# Mutual exclusion across workers: (workers, iterations each). The 8 x 500 runs in the
# slow variant; the default is bounded for 2-core CI under -n 2.
EXCLUSION_DEFAULT = (4, 200)
EXCLUSION_FULL = (8, 500)
# Fairness: 4 workers holding the lock `FAIR_HOLD` s each for `FAIR_DURATION` s.
FAIR_WORKERS = 4
FAIR_HOLD = 0.001
FAIR_DURATION = 2.0
# Throughput against the ideal (0.85x in the issue) is a speed target, so it is measured and
# reported by benchmarks/bench_lock_handover.py, never asserted here. The test keeps a loose
# liveness floor that any sleep-polling lock (portalocker's default 0.1 s poll) fails.
FAIR_MIN_RATIO = 0.2


# ---------------------------------------------------------------------------- basics


def test_acquire_release_and_locked(backend: Backend) -> None:
    """acquire() takes a free lock, locked() reports it to everyone, release() frees it."""
    lock = unidist.SharedLock("basic", backend=backend)
    other = unidist.SharedLock("basic", backend=backend)
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    assert other.locked()
    lock.release()
    assert not lock.locked()
    assert not other.locked()
    assert lock.acquire(blocking=False) is True
    lock.release()


def test_with_statement_holds_the_lock_inside_the_block(backend: Backend) -> None:
    """`with lock:` holds the lock inside the block and releases it after, even on error."""
    lock = unidist.SharedLock("with", backend=backend)
    with lock:
        assert lock.locked()
        assert lock.held()
    assert not lock.locked()
    with pytest.raises(KeyError), lock:
        raise KeyError("boom")
    assert not lock.locked()
    with lock.hold(timeout=1) as held:
        assert held is lock
        assert lock.locked()
    assert not lock.locked()


def test_hold_timeout_raises_lock_timeout_naming_the_holder(backend: Backend) -> None:
    """hold(timeout=...) on a held lock raises LockTimeout whose message names the holder."""
    holder = unidist.SharedLock("named-holder", backend=backend)
    t = threading.Thread(target=holder.acquire, name="holder-thread-7")
    t.start()
    t.join()
    assert holder.held()
    with pytest.raises(unidist.LockTimeout) as info, holder.hold(timeout=0.1):
        pytest.fail("hold() entered a lock held by someone else")
    # the object's own hold() counts too: a second acquisition of the same lock waits
    contender = unidist.SharedLock("named-holder", backend=backend)
    with pytest.raises(unidist.LockTimeout) as info, contender.hold(timeout=0.2):
        pytest.fail("hold() entered a lock held by someone else")
    message = str(info.value)
    assert "holder-thread-7" in message
    assert str(os.getpid()) in message
    assert info.value.name == "named-holder"
    assert isinstance(info.value, TimeoutError)
    holder.release()


def test_owner_names_the_thread_as_it_is_called_at_acquisition(backend: Backend) -> None:
    """A thread renamed between two acquisitions is reported under its new name."""
    lock = unidist.SharedLock("renamed", backend=backend)
    seen: list[object] = []

    def work() -> None:
        for name in ("first-name", "second-name"):
            threading.current_thread().name = name
            with lock:
                rec = lock.owner()
                seen.append(rec["thread"] if rec else None)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == ["first-name", "second-name"]


def test_owner_reports_host_pid_thread_times_and_token(backend: Backend) -> None:
    """owner() is None when free, else host, pid, thread, acquired_at, expires_at, token."""
    plain = unidist.SharedLock("owned", backend=backend)
    leased = unidist.SharedLock("owned-ttl", backend=backend, ttl=30)
    assert plain.owner() is None
    before = time.time()
    plain.acquire()
    leased.acquire()
    after = time.time()
    rec = plain.owner()
    assert rec is not None
    assert rec["host"] == socket.gethostname()
    assert rec["pid"] == os.getpid()
    assert rec["thread"] == threading.current_thread().name
    assert isinstance(rec["acquired_at"], float)
    assert before - 1 <= rec["acquired_at"] <= after + 1  # backend clock, same host
    assert rec["expires_at"] is None
    assert rec["token"] == plain.token
    rec = leased.owner()
    assert rec is not None
    assert isinstance(rec["expires_at"], float)
    assert isinstance(rec["acquired_at"], float)
    assert rec["expires_at"] == pytest.approx(rec["acquired_at"] + 30, abs=0.5)
    assert rec["token"] == leased.token
    plain.release()
    leased.release()
    assert plain.owner() is None


def test_tokens_strictly_increase_across_acquisitions_and_holders(backend: Backend) -> None:
    """Every acquisition of one lock name gets a larger fencing token, whoever takes it."""
    a = unidist.SharedLock("fenced", backend=backend)
    b = unidist.SharedLock("fenced", backend=backend)
    assert a.token is None
    seen: list[int] = []
    for lock in (a, a, b, a, b, b):
        lock.acquire()
        assert lock.token is not None
        seen.append(lock.token)
        lock.release()
    # a holder in another thread continues the same sequence
    c = unidist.SharedLock("fenced", backend=backend)
    t = threading.Thread(target=c.acquire)
    t.start()
    t.join()
    assert c.token is not None
    seen.append(c.token)
    c.release()
    assert seen == sorted(set(seen)), seen
    assert a.token == seen[3]  # the object keeps its own last token


def test_two_objects_with_one_name_contend_in_one_thread(backend: Backend) -> None:
    """Two SharedLock objects of the same name exclude each other even in one thread."""
    a = unidist.SharedLock("same", backend=backend)
    b = unidist.SharedLock("same", backend=backend)
    assert a.acquire()
    assert b.acquire(blocking=False) is False
    assert b.acquire(timeout=0.05) is False
    a.release()
    assert b.acquire(blocking=False) is True
    assert a.acquire(blocking=False) is False
    b.release()


def test_a_lock_is_owned_by_the_acquisition_not_the_thread(backend: Backend) -> None:
    """A lock taken in one thread can be released by the same object in another thread."""
    lock = unidist.SharedLock("handoff", backend=backend)
    t = threading.Thread(target=lock.acquire)
    t.start()
    t.join()
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_releasing_a_lock_not_held_raises_lock_not_owned(backend: Backend) -> None:
    """release() of a lock this object does not hold raises LockNotOwned and frees nothing."""
    a = unidist.SharedLock("not-owned", backend=backend)
    b = unidist.SharedLock("not-owned", backend=backend)
    with pytest.raises(unidist.LockNotOwned):
        a.release()  # never acquired
    a.acquire()
    with pytest.raises(unidist.LockNotOwned) as info:
        b.release()  # someone else's lock
    assert isinstance(info.value, RuntimeError)
    assert a.locked()
    assert a.owner() is not None
    assert a.owner()["token"] == a.token  # type: ignore[index]
    a.release()
    with pytest.raises(unidist.LockNotOwned):
        a.release()  # released twice


def test_acquire_arguments_are_validated(backend: Backend) -> None:
    """A negative timeout, or a timeout with blocking=False, is a ValueError."""
    lock = unidist.SharedLock("args", backend=backend)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-1)
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError):
        unidist.SharedLock("args", backend=backend, ttl=0)
    assert not lock.locked()


# ---------------------------------------------------------------------------- waiting


def test_acquire_timeout_on_a_held_lock_returns_false_in_time(backend: Backend) -> None:
    """acquire(timeout=0.2) on a held lock returns False after 0.2-0.5 s."""
    holder = unidist.SharedLock("timeout", backend=backend)
    waiter = unidist.SharedLock("timeout", backend=backend)
    holder.acquire()
    t0 = time.monotonic()
    assert waiter.acquire(timeout=0.2) is False
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed <= 0.5, elapsed
    t0 = time.monotonic()
    assert waiter.acquire(blocking=False) is False
    assert time.monotonic() - t0 < 0.2
    assert holder.owner()["token"] == holder.token  # type: ignore[index]
    holder.release()


def test_a_waiter_is_woken_promptly_by_release(backend: Backend) -> None:
    """A thread blocked in acquire() gets the lock within WAKE_BOUND seconds of the release."""
    holder = unidist.SharedLock("wake", backend=backend)
    waiter = unidist.SharedLock("wake", backend=backend)
    holder.acquire()
    waiting = threading.Event()
    got_at: list[float] = []

    def wait() -> None:
        waiting.set()
        if waiter.acquire(timeout=10):
            got_at.append(time.monotonic())

    t = threading.Thread(target=wait)
    t.start()
    assert waiting.wait(5)
    # The scenario: the holder keeps the lock 0.3 s more while the waiter waits, so that a
    # backend polling with a growing backoff is well into its backoff at the release.
    time.sleep(0.3)
    released_at = time.monotonic()
    holder.release()
    t.join(15)
    assert not t.is_alive()
    assert got_at, "the waiter never got the lock"
    assert got_at[0] - released_at <= WAKE_BOUND, got_at[0] - released_at
    waiter.release()


# ---------------------------------------------------------------------------- leases


def test_an_expired_lease_lets_another_take_the_lock_and_its_release_fails(
    backend: Backend,
) -> None:
    """A ttl=0.5 holder that sleeps 1 s loses the lock; its release raises LockNotOwned and
    leaves the new holder's lock alone."""
    first = unidist.SharedLock("lease", backend=backend, ttl=0.5)
    second = unidist.SharedLock("lease", backend=backend)
    assert first.acquire()
    time.sleep(1.0)  # the scenario: a holder paused past its lease
    assert second.acquire(timeout=2)
    assert second.token is not None
    assert first.token is not None
    assert second.token > first.token
    with pytest.raises(unidist.LockNotOwned):
        first.release()
    assert second.locked()
    assert second.owner()["token"] == second.token  # type: ignore[index]
    second.release()
    assert not second.locked()


def test_renew_extends_the_lease(backend: Backend) -> None:
    """renew() pushes expires_at forward, so the lock outlives its original ttl."""
    lock = unidist.SharedLock("renew", backend=backend, ttl=0.5)
    other = unidist.SharedLock("renew", backend=backend)
    lock.acquire()
    first = lock.owner()
    assert first is not None
    assert isinstance(first["expires_at"], float)
    lock.renew(ttl=5)
    renewed = lock.owner()
    assert renewed is not None
    assert isinstance(renewed["expires_at"], float)
    assert renewed["expires_at"] >= first["expires_at"] + 4
    assert renewed["token"] == first["token"]  # renewal is not a new acquisition
    time.sleep(max(0.0, first["expires_at"] - time.time()) + 0.3)  # past the original lease
    assert other.acquire(blocking=False) is False
    lock.renew()  # back to the object's own ttl
    lock.release()  # still ours: no LockNotOwned
    assert not lock.lost


def test_auto_renew_keeps_the_lock_past_its_ttl(backend: Backend) -> None:
    """auto_renew=True keeps renewing while held, so a ttl=0.5 lock is still held after 1.5 s."""
    lock = unidist.SharedLock("auto", backend=backend, ttl=0.5, auto_renew=True)
    other = unidist.SharedLock("auto", backend=backend)
    lock.acquire()
    time.sleep(1.5)  # three leases long
    assert other.acquire(blocking=False) is False
    assert lock.owner()["token"] == lock.token  # type: ignore[index]
    lock.release()
    assert not lock.lost
    assert other.acquire(blocking=False) is True
    other.release()


def _is_lost(lock: unidist.SharedLock) -> bool:
    return lock.lost  # a fresh read (mypy would keep the narrowed value of `lock.lost`)


def test_a_lost_lease_sets_lost_and_calls_on_lost(backend: Backend) -> None:
    """renew() after the lease was taken over raises LockNotOwned, sets lost, calls on_lost."""
    calls: list[object] = []
    lock = unidist.SharedLock("lost", backend=backend, ttl=0.3, on_lost=calls.append)
    other = unidist.SharedLock("lost", backend=backend)
    lock.acquire()
    assert other.acquire(timeout=3)  # granted once the 0.3 s lease has run out
    with pytest.raises(unidist.LockNotOwned):
        lock.renew()
    assert lock.lost is True
    assert calls == [lock]
    assert other.owner()["token"] == other.token  # type: ignore[index]
    other.release()
    lock.acquire()  # a new acquisition clears the flag
    assert not _is_lost(lock)
    lock.release()


def test_auto_renew_reports_a_broken_lock_through_on_lost(backend: Backend) -> None:
    """When a held auto_renew lock is broken, the renewer notices and calls on_lost."""
    lost = threading.Event()
    lock = unidist.SharedLock(
        "broken", backend=backend, ttl=0.6, auto_renew=True, on_lost=lambda _lk: lost.set()
    )
    lock.acquire()
    assert backend.lock_break("broken") == 1
    assert lost.wait(3), "on_lost was not called within 3 s of the break"
    assert lock.lost
    with pytest.raises(unidist.LockNotOwned):
        lock.release()


def test_lock_break_of_one_holder_frees_only_that_slot(backend: Backend) -> None:
    """lock_break(name, holder) frees exactly the slot of that owner record: its holder's
    renew/release fail, the other holders keep theirs, the next acquirer gets a larger token."""
    sem = [unidist.SharedSemaphore("brk1", limit=2, backend=backend) for _ in range(3)]
    assert sem[0].acquire(blocking=False)
    assert sem[1].acquire(blocking=False)
    assert sem[2].acquire(blocking=False) is False
    victim = next(o for o in backend.lock_owners("brk1") if o["token"] == sem[0].token)
    assert backend.lock_break("brk1", "no-such-holder") == 0
    assert isinstance(victim["holder"], str)
    assert backend.lock_break("brk1", victim["holder"]) == 1
    assert backend.lock_break("brk1", victim["holder"]) == 0
    assert [o["token"] for o in backend.lock_owners("brk1")] == [sem[1].token]
    assert sem[2].acquire(timeout=2)
    assert sem[2].token is not None
    assert sem[1].token is not None
    assert sem[2].token > sem[1].token
    with pytest.raises(unidist.LockNotOwned):
        sem[0].renew()
    with pytest.raises(unidist.LockNotOwned):
        sem[0].release()
    sem[1].release()
    sem[2].release()


def test_fenced_set_refuses_a_stale_token(backend: Backend) -> None:
    """fenced_set accepts equal or larger tokens and refuses a smaller one, leaving the entry
    as the newer holder wrote it; a plain value under the key is not mistaken for a fence."""
    state = unidist.SharedState("fenced", backend=backend)
    first = unidist.SharedLock("fence-lock", backend=backend, ttl=0.2)
    second = unidist.SharedLock("fence-lock", backend=backend)
    assert first.acquire()
    assert first.token is not None
    assert fenced_set(state, "res", "one", first.token)
    assert fenced_set(state, "res", "one again", first.token)  # same holder, same token
    time.sleep(0.3)  # first's lease ends
    assert second.acquire(timeout=2)
    assert second.token is not None
    assert second.token > first.token
    assert fenced_set(state, "res", "two", second.token)
    assert fenced_set(state, "res", "stale", first.token) is False
    assert fenced_get(state, "res") == ("two", second.token)
    assert fenced_get(state, "absent") == (None, None)
    with pytest.raises(TypeError):
        fenced_set(state, "res", "x", "7")  # type: ignore[arg-type]
    state["plain"] = {"value": 1}
    with pytest.raises(ValueError, match="not a fenced entry"):
        fenced_set(state, "plain", "x", second.token)
    assert state["plain"] == {"value": 1}
    second.release()


# ---------------------------------------------------------------------------- inspection


def test_backend_locks_lists_held_locks_and_semaphores_with_owners(backend: Backend) -> None:
    """backend.locks() maps every held lock and semaphore to its owner records."""
    lock = unidist.SharedLock("listed-lock", backend=backend)
    sem_a = unidist.SharedSemaphore("listed-sem", limit=3, backend=backend)
    sem_b = unidist.SharedSemaphore("listed-sem", limit=3, backend=backend)
    idle = unidist.SharedLock("idle-lock", backend=backend)
    idle.acquire()
    idle.release()
    lock.acquire()
    sem_a.acquire()
    sem_b.acquire()
    held = backend.locks()
    assert set(held) == {"listed-lock", "listed-sem"}
    (rec,) = held["listed-lock"]
    assert rec["pid"] == os.getpid()
    assert rec["host"] == socket.gethostname()
    assert rec["token"] == lock.token
    assert sorted(r["token"] for r in held["listed-sem"]) == sorted([sem_a.token, sem_b.token])  # type: ignore[type-var]
    lock.release()
    sem_a.release()
    sem_b.release()
    assert backend.locks() == {}


def test_locks_are_not_persisted_and_tokens_never_go_backwards(
    backend_kind: str, backend_url: str, tmp_path: Path
) -> None:
    """After a restart of the backend no lock comes back held from storage, and new tokens
    are larger than every token handed out before."""
    url = DURABLE_URL[backend_kind](backend_url, tmp_path)
    try:
        be = unidist.connect(url)
        lock = unidist.SharedLock("restart", backend=be)
        for _ in range(3):
            lock.acquire()
            lock.release()
        held = unidist.SharedLock("restart-held", backend=be, ttl=60)
        held.acquire()
        last = max(lock.token or 0, held.token or 0)
        unidist.backends.reset()  # close every handle
        be = unidist.connect(url)
        again = unidist.SharedLock("restart", backend=be)
        assert again.acquire(blocking=False)
        assert again.token is not None
        assert again.token > last
        again.release()
        still = unidist.SharedLock("restart-held", backend=be).locked()
        assert still is HELD_LOCK_OUTLIVES_RESTART[backend_kind]
    finally:
        unidist.backends.reset()


# ---------------------------------------------------------------------------- contention


def _assert_exclusion(results: list[dict[str, Any]], n: int, m: int) -> None:
    fences = sorted(tuple(f) for r in results for f in r["fences"])
    values = [v for v, _, _ in fences]
    assert values == list(range(n * m)), "two holders read the same value (or one was lost)"
    tokens = [t for _, t, _ in fences]
    assert all(a < b for a, b in itertools.pairwise(tokens)), "fencing tokens not increasing"
    # Proof that the workers really competed (else the test could not fail): in the order of
    # the values, the holder changed more often than a one-after-the-other run would allow.
    switches = sum(a != b for (_, _, a), (_, _, b) in itertools.pairwise(fences))
    assert switches > n - 1, f"workers ran one after the other ({switches} switches)"


def _run_exclusion(backend: Backend, backend_url: str, tmp_path: Path, n: int, m: int) -> None:
    data = tmp_path / "value.txt"
    data.write_bytes(b"%020d" % 0)
    # Hold the lock while the workers start, so that they all queue up on it.
    gate = unidist.SharedLock("exclusive", backend=backend)
    gate.acquire()
    results = run_workers(
        backend,
        "locked_file_increments",
        n,
        timeout=120,
        on_go=gate.release,
        url=backend_url,
        name="exclusive",
        path=str(data),
        iterations=m,
    )
    assert int(data.read_bytes()) == n * m
    _assert_exclusion(results, n, m)


@pytest.mark.multiprocess
def test_workers_under_the_lock_never_lose_an_update(
    backend: Backend, backend_url: str, tmp_path: Path
) -> None:
    """Workers (threads on memory, processes elsewhere) doing lock → read file → write
    value+1 → unlock end with exactly workers x iterations, with increasing fencing tokens."""
    _run_exclusion(backend, backend_url, tmp_path, *EXCLUSION_DEFAULT)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_eight_workers_times_500_under_the_lock_count_exactly_4000(
    backend: Backend, backend_url: str, tmp_path: Path
) -> None:
    """The issue's full figure: 8 workers x 500 locked read-increment-writes give 4,000."""
    _run_exclusion(backend, backend_url, tmp_path, *EXCLUSION_FULL)


def _fair_run(backend: Backend, backend_url: str) -> tuple[bool, str]:
    """One fairness run; (throughput criterion met, report). Starvation fails at once."""
    results = run_workers(
        backend,
        "fair_contender",
        FAIR_WORKERS,
        timeout=60,
        url=backend_url,
        name="fair",
        duration=FAIR_DURATION,
        hold=FAIR_HOLD,
    )
    counts = [r["count"] for r in results]
    total = sum(counts)
    assert total > 0, "nobody ever got the lock"
    mean_hold = sum(r["held"] for r in results) / total
    elapsed = max(r["end"] for r in results) - min(r["begin"] for r in results)
    ideal = elapsed / mean_hold
    report = (
        f"counts={counts} total={total} ideal={ideal:.0f} ratio={total / ideal:.2f} "
        f"spread={max(counts) / max(1, min(counts)):.2f} mean_hold={mean_hold * 1000:.2f}ms "
        f"elapsed={elapsed:.2f}s"
    )
    print(f"fairness[{backend.url.split('://')[0]}]: {report}")
    assert min(counts) > 0, f"a worker starved: {report}"
    assert max(counts) <= 1.5 * min(counts), f"unfair: {report}"
    return total >= FAIR_MIN_RATIO * ideal, report


@pytest.mark.multiprocess
def test_no_waiter_starves(backend: Backend, backend_url: str) -> None:
    """4 workers holding the lock 1 ms each for 2 s all get in, within 1.5x of each other, and
    handovers are prompt (no sleep-polling: total above a loose floor of the ideal)."""
    ok, report = _fair_run(backend, backend_url)
    assert ok, f"handovers too slow (total below {FAIR_MIN_RATIO} x ideal): {report}"


# ---------------------------------------------------------------------------- crashes & forks


def _acquire_after(lock: unidist.SharedLock, since: float, bound: float) -> float:
    assert lock.acquire(timeout=bound + 5), f"not acquired within {bound + 5} s"
    return time.monotonic() - since


@pytest.mark.multiprocess
@pytest.mark.scope("host")
def test_a_killed_holder_hands_the_lock_over_in_time(backend_kind: str, backend_url: str) -> None:
    """kill -9 of a process holding the lock: another process takes it within the backend's
    bound (file 1 s, Redis ttl + 1 s) with a larger fencing token."""
    bound = HANDOVER_BOUND[backend_kind]
    lock = unidist.SharedLock("crash", backend=backend_url)
    try:
        with children("hold_until_killed", url=backend_url, name="crash", ttl=HOLDER_TTL) as (kid,):
            old_token = int(kid.expect("held"))
            rec = lock.owner()
            assert rec is not None
            assert rec["pid"] == kid.pid
            assert lock.acquire(blocking=False) is False
            killed_at = time.monotonic()
            kid.kill()
            elapsed = _acquire_after(lock, killed_at, bound)
        print(f"handover[{backend_kind}]: {elapsed:.3f}s (bound {bound}s)")
        assert elapsed <= bound, f"handover took {elapsed:.2f} s, bound {bound} s"
        assert lock.token is not None
        assert lock.token > old_token
        assert lock.owner()["pid"] == os.getpid()  # type: ignore[index]
        lock.release()
    finally:
        unidist.backends.reset()


@pytest.mark.multiprocess
@pytest.mark.scope("host")
def test_a_forked_child_never_releases_its_parents_lock(backend_url: str) -> None:
    """After os.fork() the child's release raises LockNotOwned, it cannot take the lock, and
    the parent still holds it."""
    with children("fork_and_release", url=backend_url, name="forked") as (kid,):
        res = kid.result(60)
    assert res["child_exit"] == 0, f"forked child exit code {res['child_exit']} (see worker)"
    assert res["locked"] is True
    assert res["owner_pid"] == res["pid"]
    assert res["owner_token"] == res["token"]


@pytest.mark.multiprocess
@pytest.mark.scope("host")
def test_a_killed_parent_frees_its_lock_while_its_forked_child_lives(
    backend_kind: str, backend_url: str
) -> None:
    """kill -9 of a holder whose forked child keeps running still frees the lock in time."""
    bound = HANDOVER_BOUND[backend_kind]
    lock = unidist.SharedLock("fork-crash", backend=backend_url)
    child_pid = 0
    try:
        with children("fork_then_hold", url=backend_url, name="fork-crash", ttl=HOLDER_TTL) as (
            kid,
        ):
            token_text, pid_text = kid.expect("held").split()
            child_pid = int(pid_text)
            killed_at = time.monotonic()
            kid.kill()
            elapsed = _acquire_after(lock, killed_at, bound)
        os.kill(child_pid, 0)  # the forked child is still alive (raises if not)
        print(f"fork handover[{backend_kind}]: {elapsed:.3f}s (bound {bound}s)")
        assert elapsed <= bound, f"handover took {elapsed:.2f} s, bound {bound} s"
        assert lock.token is not None
        assert lock.token > int(token_text)
        lock.release()
    finally:
        if child_pid:
            try:
                os.kill(child_pid, 9)
            except ProcessLookupError:
                pass
        unidist.backends.reset()


# ---------------------------------------------------------------------------- mixed use
# A backend may serve uncontended acquisitions without a lease by a shortcut
# (Backend.lock_fast_path); these check that such holders and the general ones (leases,
# waiters, breaks, renewals) see each other on every backend.

MIX_THREADS = 4
MIX_ROUNDS = 150  # acquisitions per thread (default run; cheap on every backend)


def test_plain_and_leased_holders_of_one_name_exclude_each_other(backend: Backend) -> None:
    """A lock object without ttl and one with ttl of the same name exclude each other both
    ways, a waiter of either kind gets the lock when the other releases, and tokens keep
    increasing through every change of kind."""
    plain = unidist.SharedLock("mixed", backend=backend)
    leased = unidist.SharedLock("mixed", backend=backend, ttl=30)
    tokens: list[int] = []
    assert plain.acquire()
    tokens.append(plain.token or 0)
    assert leased.acquire(blocking=False) is False
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(leased.acquire(timeout=10)))
    waiter.start()
    time.sleep(0.1)  # the leased object now waits
    assert leased.held() is False
    plain.release()
    waiter.join(10)
    assert got == [True]
    tokens.append(leased.token or 0)
    rec = leased.owner()
    assert rec is not None
    assert rec["token"] == leased.token
    assert isinstance(rec["expires_at"], float)
    assert plain.acquire(blocking=False) is False
    assert plain.acquire(timeout=0.05) is False
    leased.release()
    for _ in range(3):  # and back to plain holders, repeatedly
        assert plain.acquire(blocking=False)
        tokens.append(plain.token or 0)
        rec = plain.owner()
        assert rec is not None
        assert rec["token"] == plain.token
        assert rec["expires_at"] is None
        plain.release()
    assert not plain.locked()
    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens


def test_breaking_a_holder_without_lease_frees_the_lock(backend: Backend) -> None:
    """lock_break with the holder of a lock taken without ttl frees it: its release then
    raises LockNotOwned and touches nobody else's, and the lock works normally afterwards."""
    victim = unidist.SharedLock("brk-plain", backend=backend)
    other = unidist.SharedLock("brk-plain", backend=backend)
    assert victim.acquire()
    rec = victim.owner()
    assert rec is not None
    assert rec["token"] == victim.token
    assert isinstance(rec["holder"], str)
    assert backend.lock_break("brk-plain", rec["holder"]) == 1
    assert not victim.locked()
    assert other.acquire(blocking=False)
    assert (other.token or 0) > (victim.token or 0)
    with pytest.raises(unidist.LockNotOwned):
        victim.release()
    assert other.locked()  # the failed release left the new holder alone
    assert victim.acquire(blocking=False) is False
    other.release()
    assert victim.acquire(blocking=False)
    victim.release()
    assert victim.acquire()
    assert backend.lock_break("brk-plain") == 1
    with pytest.raises(unidist.LockNotOwned):
        victim.release()
    assert backend.locks() == {}


def test_renewing_a_lock_without_ttl_with_a_ttl_gives_it_a_lease(backend: Backend) -> None:
    """renew(ttl) on a lock taken without ttl puts a lease on it: when the lease runs out,
    another object takes the lock and the first one's release raises LockNotOwned."""
    first = unidist.SharedLock("renew-plain", backend=backend)
    second = unidist.SharedLock("renew-plain", backend=backend)
    assert first.acquire()
    first.renew(0.3)
    rec = first.owner()
    assert rec is not None
    assert isinstance(rec["expires_at"], float)
    assert second.acquire(blocking=False) is False
    assert second.acquire(timeout=5)
    assert (second.token or 0) > (first.token or 0)
    with pytest.raises(unidist.LockNotOwned):
        first.release()
    second.release()


def test_threads_mixing_every_way_of_acquiring_keep_exclusion_and_token_order(
    backend: Backend,
) -> None:
    """Threads taking one lock by acquire(), acquire(blocking=False), acquire(timeout=...),
    ``with``, hold() and a leased object, while another thread reads owner()/locked(), never
    overlap, and the tokens seen inside the lock increase in the order of entry."""
    name = "mix-all"
    entered: list[int] = []
    inside = [0]
    overlaps = [0]
    stop = threading.Event()
    errors: list[BaseException] = []

    def critical(lock: unidist.SharedLock) -> None:
        inside[0] += 1
        if inside[0] != 1:
            overlaps[0] += 1
        entered.append(lock.token or 0)
        time.sleep(0)  # give the others a chance to break in
        inside[0] -= 1

    def worker(i: int) -> None:
        plain = unidist.SharedLock(name, backend=backend)
        leased = unidist.SharedLock(name, backend=backend, ttl=60)
        try:
            for r in range(MIX_ROUNDS):
                way = (i + r) % 6
                if way == 0:
                    plain.acquire()
                    critical(plain)
                    plain.release()
                elif way == 1:
                    if plain.acquire(blocking=False):
                        critical(plain)
                        plain.release()
                elif way == 2:
                    if plain.acquire(timeout=0.001):
                        critical(plain)
                        plain.release()
                elif way == 3:
                    with plain:
                        critical(plain)
                elif way == 4:
                    with plain.hold(timeout=30):
                        critical(plain)
                else:
                    with leased:
                        critical(leased)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def observer() -> None:
        probe = unidist.SharedLock(name, backend=backend)
        try:
            while not stop.is_set():
                rec = probe.owner()
                if rec is not None:
                    assert isinstance(rec["token"], int)
                probe.locked()
                time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(MIX_THREADS)]
    watcher = threading.Thread(target=observer)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    stop.set()
    watcher.join(10)
    assert not errors, errors
    assert overlaps[0] == 0, f"{overlaps[0]} overlapping holders"
    assert len(entered) >= MIX_THREADS * MIX_ROUNDS // 2  # the blocking ways always get in
    assert all(a < b for a, b in itertools.pairwise(entered)), "tokens not increasing"
    assert not unidist.SharedLock(name, backend=backend).locked()
    assert backend.locks() == {}


def test_a_forked_child_of_this_process_cannot_use_its_parents_lock(backend: Backend) -> None:
    """A child forked while this process holds a lock (taken without ttl) cannot release it
    nor take it (the child's view of an in-process store included), and the parent's release
    still works afterwards."""
    lock = unidist.SharedLock("forked-here", backend=backend)
    assert lock.acquire()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        code = 0
        try:
            try:
                lock.release()
                code = 10
            except unidist.LockNotOwned:
                pass
            if code == 0 and lock.held():
                code = 12
            if code == 0 and unidist.SharedLock("forked-here", backend=backend).acquire(
                blocking=False
            ):
                code = 13
        except BaseException:
            code = 11
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "child exit code (see the test's codes)"
    rec = lock.owner()
    assert rec is not None
    assert rec["token"] == lock.token
    lock.release()
    assert not lock.locked()
