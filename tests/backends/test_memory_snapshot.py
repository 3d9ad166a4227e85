"""memory://?snapshot=: what survives a restart, and how a damaged snapshot is reported."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import unidist
from unidist.backends.memory import MemoryBackend


def _open(path: Path, name: str = "snap") -> MemoryBackend:
    be = MemoryBackend.from_url(f"memory://{name}?snapshot={path}&interval=60")
    assert isinstance(be, MemoryBackend)
    return be


def test_snapshot_restores_counters_state_queues_not_locks(tmp_path: Path) -> None:
    """Counters, buckets and queued messages come back; locks do not; tokens keep rising."""
    snap = tmp_path / "s.json"
    be = _open(snap)
    be.counter("c").incr(41)
    be.state("b").update({"k": [1, 2], "u": "✓"})
    q = be.queue("q", visibility_timeout=30)
    q.put("first")
    q.put("later", delay=3600)
    q.put("inflight")
    lock = be.lock("l")
    lock.acquire()
    old_token = lock.token
    assert q.get() == "first"
    m = q.receive()
    assert m.body == "inflight"
    be.close()
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600

    again = _open(snap)
    assert again.counter("c").get() == 41
    assert again.state("b").snapshot() == {"k": [1, 2], "u": "✓"}
    assert again.queue("q").stats() == {"ready": 1, "delayed": 1, "in_flight": 0, "dead": 0}
    redelivered = again.queue("q").receive(timeout=1)
    assert (redelivered.body, redelivered.attempts) == ("inflight", 2)
    relock = again.lock("l")
    assert not relock.locked()
    assert relock.acquire(blocking=False)
    assert old_token is not None
    assert relock.token is not None
    assert relock.token > old_token
    again.close()


def test_periodic_snapshot_is_written_without_close(tmp_path: Path) -> None:
    """With interval=S the snapshot is rewritten in the background when something changed."""
    snap = tmp_path / "p.json"
    be = MemoryBackend.from_url(f"memory://p?snapshot={snap}&interval=0.05")
    be.counter("c").incr(7)
    deadline = 100
    while deadline and not snap.exists():
        deadline -= 1
        __import__("time").sleep(0.02)
    assert snap.exists()
    assert _open(snap, "p2").counter("c").get() == 7
    be.close()


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"{not json", b'{"format": 99}', b"[1,2]"])
def test_damaged_snapshot_is_corrupt_data_naming_the_file(tmp_path: Path, content: bytes) -> None:
    """An empty, zero-filled, garbage or foreign snapshot is CorruptData naming the file."""
    snap = tmp_path / "bad.json"
    snap.write_bytes(content)
    with pytest.raises(unidist.CorruptData) as info:
        _open(snap)
    assert str(snap) in str(info.value)
    assert info.value.path == str(snap)


def test_snapshot_leaves_no_temp_files_and_ignores_umask(tmp_path: Path) -> None:
    """Snapshots are written atomically: no temp file left, the file is 0600 under umask 000."""
    snap = tmp_path / "d" / "u.json"
    old = os.umask(0)
    try:
        be = _open(snap, "u")
        be.counter("x").incr()
        be.close()
    finally:
        os.umask(old)
    assert sorted(p.name for p in snap.parent.iterdir()) == ["u.json"]
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600
    assert stat.S_IMODE(snap.parent.stat().st_mode) == 0o700
