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


def _archived(path: Path, name: str) -> MemoryBackend:
    be = MemoryBackend.from_url(f"memory://{name}?archive={path}")
    assert isinstance(be, MemoryBackend)
    return be


def test_archive_keeps_every_acknowledged_change(tmp_path: Path) -> None:
    """With archive=, every change is journaled before returning and replayed at start."""
    path = tmp_path / "a.journal"
    be = _archived(path, "a1")
    be.counter("c").incr(3)
    st = be.state("b")
    st["x"] = {"v": 1}
    st["gone"] = 1
    del st["gone"]
    q = be.queue("q", max_attempts=1, visibility_timeout=30)
    q.put("keep")
    q.put("acked")
    q.put("dies", priority=-1)
    m = q.receive()
    assert m.body == "keep"
    m.nack()  # attempts 1 == max_attempts: dead
    m2 = q.receive()
    assert m2.body == "acked"
    assert m2.ack()
    lk = be.lock("l")
    lk.acquire()
    token = lk.token
    # no close(): the journal must already hold everything
    again = _archived(path, "a2")
    assert again.counter("c").get() == 3
    assert again.state("b").snapshot() == {"x": {"v": 1}}
    q2 = again.queue("q")
    assert [d.body for d in q2.dead()] == ["keep"]
    assert q2.stats() == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 1}
    assert q2.get(timeout=1) == "dies"
    relock = again.lock("l")
    assert relock.acquire(blocking=False)
    assert token is not None
    assert relock.token is not None
    assert relock.token > token


def test_archive_torn_tail_is_cut_and_damage_is_reported(tmp_path: Path) -> None:
    """A torn last record is cut with a warning; a flipped byte mid-file is CorruptData."""
    path = tmp_path / "t.journal"
    be = _archived(path, "t1")
    for i in range(5):
        be.counter("c").set(i)
    be.close()
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.warns(RuntimeWarning, match="torn tail"):
        again = _archived(path, "t2")
    assert again.counter("c").get() == 3
    again.close()
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    with pytest.raises(unidist.CorruptData) as info:
        _archived(path, "t3")
    assert str(path) in str(info.value)


def test_archive_compacts(tmp_path: Path) -> None:
    """The journal is compacted when it grows far beyond the live data, keeping the values."""
    path = tmp_path / "c.journal"
    be = _archived(path, "c1")
    assert be._archive is not None
    be._archive.compact_min = 200
    c = be.counter("c")
    for _ in range(1_050):
        c.incr()
    assert path.stat().st_size < 8_000
    assert _archived(path, "c2").counter("c").get() == 1_050


def test_snapshot_and_archive_together_is_invalid(tmp_path: Path) -> None:
    """Choosing both snapshot= and archive= is an InvalidURL that says why."""
    with pytest.raises(unidist.InvalidURL, match="not both"):
        MemoryBackend.from_url(f"memory://x?snapshot={tmp_path}/s&archive={tmp_path}/a")
