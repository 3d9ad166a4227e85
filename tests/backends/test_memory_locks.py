"""memory:// locks taken without waiting (the in-process fast path): their fencing tokens are
snapshotted like any other, so tokens never go backwards across a restart from a snapshot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import unidist
from unidist.backends.memory import MemoryBackend


def _snapshot_token(path: Path, name: str) -> int:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return int(data["tokens"].get(name, 0))


def test_tokens_of_uncontended_locks_reach_the_periodic_snapshot(tmp_path: Path) -> None:
    """Acquisitions of a free lock without ttl make the background snapshot rewrite itself
    (nothing else changed), and a store restored from that file, without any close (as after
    a crash), hands out larger tokens."""
    snap = tmp_path / "tokens.json"
    be = MemoryBackend.from_url(f"memory://tok?snapshot={snap}&interval=0.05")
    try:
        lock = unidist.SharedLock("fast", backend=be)
        for _ in range(5):
            assert lock.acquire(blocking=False)
            lock.release()
        last = lock.token
        assert last is not None
        deadline = time.monotonic() + 10
        while _snapshot_token(snap, "fast") < last and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _snapshot_token(snap, "fast") >= last
        again = MemoryBackend.from_url(f"memory://tok2?snapshot={snap}&interval=60")
        relock = unidist.SharedLock("fast", backend=again)
        assert relock.acquire(blocking=False)
        assert relock.token is not None
        assert relock.token > last
        relock.release()
        again.close()
    finally:
        be.close()


def test_an_idle_store_does_not_rewrite_its_snapshot(tmp_path: Path) -> None:
    """Without acquisitions the periodic snapshot is not rewritten (checking the fast paths'
    tokens for changes is not itself a change)."""
    snap = tmp_path / "idle.json"
    be = MemoryBackend.from_url(f"memory://idle?snapshot={snap}&interval=0.05")
    try:
        lock = unidist.SharedLock("quiet", backend=be)
        assert lock.acquire(blocking=False)
        lock.release()
        deadline = time.monotonic() + 10
        while not snap.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # several intervals: the first write is done
        written = snap.stat().st_mtime_ns
        time.sleep(0.3)
        assert snap.stat().st_mtime_ns == written
    finally:
        be.close()


def test_a_fast_path_gate_left_held_without_holder_is_taken_over(tmp_path: Path) -> None:
    """An exception between taking a lock's fast-path gate and recording the holder (a
    KeyboardInterrupt there) leaves the gate held by nobody: a blocking acquire takes the lock
    over after FAST_GATE_STUCK seconds instead of hanging, and the lock works on afterwards."""
    be = MemoryBackend.from_url("memory://stuck")
    try:
        be.FAST_GATE_STUCK = 0.2  # type: ignore[misc]
        lock = unidist.SharedLock("stuck", backend=be)
        assert lock.acquire(blocking=False)
        lock.release()
        # What the interrupted acquire leaves behind: the gate held, no holder recorded.
        assert be._fast["stuck"].take()
        assert lock.owner() is None
        started = time.monotonic()
        assert lock.acquire(timeout=10)
        assert time.monotonic() - started >= 0.2
        assert lock.owner() is not None
        lock.release()
        for _ in range(3):
            assert lock.acquire(blocking=False)
            lock.release()
        assert not lock.locked()
    finally:
        be.close()
