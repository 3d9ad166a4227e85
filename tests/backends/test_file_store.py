"""Direct tests of the file backend's counters, state buckets, queues and membership.

Every test uses a fresh data directory; a second, independent ``FileBackend`` instance on the
same directory stands in for another process where the test needs one (its own descriptors
and flocks, its own cache), and real child processes are used in ``test_file_store_mp.py``.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from unidist.backends import connect
from unidist.backends.file import FileBackend
from unidist.errors import BackendUnavailable, InvalidName

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return "file://" + str(tmp_path / "data")


@pytest.fixture
def be(url: str):
    backend = connect(url)
    yield backend
    backend.close()


def other(url: str) -> FileBackend:
    """An independent handle on the same directory (own fds, flocks and caches)."""
    b = FileBackend.from_url(url)
    assert isinstance(b, FileBackend)
    return b


# ---------------------------------------------------------------------- counters
def test_counter_add_get_set_and_listing(be, url):
    """A missing counter reads 0 and is not listed; add/set return and persist values."""
    assert be.counter_get("c") == 0
    assert be.counters() == {}
    assert be.counter_add("c", 5, "r1") == 5
    assert be.counter_add("c", -7, "r2") == -2
    be.counter_set("d", 42)
    assert be.counter_get("d") == 42
    assert be.counters() == {"c": -2, "d": 42}
    b2 = other(url)
    assert b2.counters() == {"c": -2, "d": 42}
    b2.close()


def test_counter_overflow_changes_nothing(be, url):
    """Leaving the int64 range raises OverflowError and leaves the stored value untouched."""
    be.counter_set("c", I64_MAX - 1)
    assert be.counter_add("c", 1, "r") == I64_MAX
    with pytest.raises(OverflowError):
        be.counter_add("c", 1, "r")
    be.counter_set("n", I64_MIN)
    with pytest.raises(OverflowError):
        be.counter_add("n", -1, "r")
    with pytest.raises(OverflowError):
        be.counter_set("c", I64_MAX + 1)
    b2 = other(url)
    assert b2.counter_get("c") == I64_MAX
    assert b2.counter_get("n") == I64_MIN
    b2.close()


def test_counter_survives_many_rotations_and_reopen(be, url):
    """Increments across several journal generations are all kept."""
    be._cfg.compact_records = 200
    for _ in range(500):
        be.counter_add("c", 1, "r")
    files = sorted(os.listdir(Path(url[7:]) / "counters" / "c"))
    assert "snap.3" in files
    assert "journal.3" in files
    assert "journal.1" not in files  # only the current and previous generation are kept
    b2 = other(url)
    assert b2.counter_get("c") == 500
    b2.close()


def test_two_handles_see_each_others_writes_and_rotations(be, url):
    """Interleaved writers through separate handles never lose an increment."""
    b2 = other(url)
    be._cfg.compact_records = 7
    b2._cfg.compact_records = 11
    for i in range(300):
        (be if i % 3 else b2).counter_add("c", 1, "r")
        if i % 50 == 0:
            assert be.counter_get("c") == b2.counter_get("c") == i + 1
    assert be.counter_get("c") == b2.counter_get("c") == 300
    b2.close()


def test_threads_increment_exactly(be):
    """8 threads x 200 increments through one handle give exactly 1,600."""

    def work():
        for _ in range(200):
            be.counter_add("t", 1, "r")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert be.counter_get("t") == 1600


def test_invalid_names_rejected_before_io(be, url):
    """Names that could escape the directory raise InvalidName and create nothing."""
    root = Path(url[7:])
    before = sorted(p.name for p in root.iterdir())
    for bad in ["../x", "a/b", "", ".hidden", "x" * 201, "a\0b"]:
        with pytest.raises(InvalidName):
            be.counter_add(bad, 1, "r")
        with pytest.raises(InvalidName):
            be.state_set(bad, "k", "1")
        with pytest.raises(InvalidName):
            be.queue_put(bad, "m", "1", 0, 0)
    assert sorted(p.name for p in root.iterdir()) == before


# ---------------------------------------------------------------------- state
def test_state_set_get_update_delete(be, url):
    """Basic bucket operations and listing of non-empty buckets only."""
    assert be.state_get("b", "k") is None
    be.state_set("b", "k", '{"a":1}')
    be.state_update("b", {"x": "1", "y": '"two"'})
    assert be.state_items("b") == {"k": '{"a":1}', "x": "1", "y": '"two"'}
    assert be.state_len("b") == 3
    assert be.state_delete("b", "x") == "1"
    assert be.state_delete("b", "x") is None
    be.state_set("empty", "k", "1")
    be.state_clear("empty")
    assert be.buckets() == ["b"]
    b2 = other(url)
    assert b2.state_items("b") == {"k": '{"a":1}', "y": '"two"'}
    assert b2.state_len("empty") == 0
    b2.close()


def test_state_cas_semantics(be):
    """expected None matches absent or stored null; new None deletes; mismatch changes nothing."""
    assert be.state_cas("b", "k", None, "1") is True
    assert be.state_cas("b", "k", None, "2") is False
    assert be.state_cas("b", "k", "2", "3") is False
    assert be.state_get("b", "k") == "1"
    assert be.state_cas("b", "k", "1", "null") is True
    assert be.state_cas("b", "k", None, "5") is True  # stored null counts as None
    assert be.state_cas("b", "k", "5", None) is True
    assert be.state_get("b", "k") is None
    assert be.state_cas("b", "k", None, None) is True
    assert be.state_cas("nobucket", "k", None, None) is True
    assert be.state_cas("nobucket", "k", "1", None) is False
    assert be.buckets() == []


def test_state_update_is_one_record(be, url):
    """state_update of many keys is a single journal record (all or nothing after a crash)."""
    be.state_update("b", {f"k{i}": str(i) for i in range(50)})
    jdir = Path(url[7:]) / "state" / "b"
    from unidist.backends.file.journal import scan

    data = (jdir / "journal.1").read_bytes()
    sc = scan(data, path="j", base=0, next_seq=0)
    assert len(sc.records) == 2  # header + one update
    assert be.state_len("b") == 50


def test_large_value_roundtrip(be, url):
    """A 2 MB value round-trips through the journal and a snapshot."""
    big = '"' + "x" * (2 * 1024 * 1024) + '"'
    be.state_set("b", "big", big)
    b2 = other(url)
    assert b2.state_get("b", "big") == big
    b2.close()


# ---------------------------------------------------------------------- queues
def test_queue_priority_then_fifo(be):
    """Higher priority first, then put order."""
    for i, prio in enumerate([0, 5, 0, 5, 1]):
        assert be.queue_put("q", f"m{i}", str(i), 0, prio) is True
    got = [be.queue_get("q", 5).id for _ in range(5)]
    assert got == ["m1", "m3", "m4", "m0", "m2"]
    assert be.queue_get("q", 5) is None
    assert be.queues() == []


def test_queue_put_is_idempotent(be):
    """Putting an id the queue holds (in any state) returns False and changes nothing."""
    assert be.queue_put("q", "a", "1", 0, 0)
    assert not be.queue_put("q", "a", "2", 0, 0)
    d = be.queue_receive("q", 30, 5)
    assert d.body == "1"
    assert not be.queue_put("q", "a", "3", 0, 0)
    assert be.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 1, "dead": 0}


def test_queue_receive_ack_and_stale_receipts(be):
    """Receipts are per delivery: a late ack after redelivery is False and deletes nothing."""
    be.queue_put("q", "a", '"x"', 0, 3)
    d1 = be.queue_receive("q", 0.05, 5)
    assert (d1.id, d1.body, d1.attempts, d1.priority) == ("a", '"x"', 1, 3)
    assert d1.enqueued_at == pytest.approx(time.time(), abs=5)
    time.sleep(0.08)
    d2 = be.queue_receive("q", 30, 5)
    assert d2.id == "a"
    assert d2.attempts == 2
    assert d2.receipt != d1.receipt
    assert be.queue_ack("q", "a", d1.receipt) is False
    assert be.queue_nack("q", "a", d1.receipt, 0, 5) is False
    assert be.queue_stats("q")["in_flight"] == 1
    assert be.queue_ack("q", "a", d2.receipt) is True
    assert be.queue_ack("q", "a", d2.receipt) is False
    assert be.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


def test_queue_max_attempts_dead_and_requeue(be):
    """After max_attempts deliveries a message goes dead; requeue resets attempts."""
    be.queue_put("q", "p", '"poison"', 0, 0)
    be.queue_put("q", "ok", '"fine"', 0, 0)
    d = be.queue_receive("q", 30, 2)
    assert be.queue_nack("q", d.id, d.receipt, 0, 2) is True
    d = be.queue_receive("q", 30, 2)
    assert d.id == "p"
    assert d.attempts == 2
    assert be.queue_nack("q", d.id, d.receipt, 0, 2) is True  # second delivery: dead now
    dead = be.queue_dead("q")
    assert [(m.id, m.attempts, m.receipt) for m in dead] == [("p", 2, "")]
    assert be.queue_get("q", 2).id == "ok"
    assert be.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    assert be.queues() == ["q"]
    assert be.queue_requeue_dead("q") == 1
    d = be.queue_receive("q", 30, 2)
    assert d.id == "p"
    assert d.attempts == 1


def test_queue_visibility_timeout_to_dead(be):
    """An expired in-flight message that used its attempts goes dead at the next receive."""
    be.queue_put("q", "a", "1", 0, 0)
    assert be.queue_receive("q", 0.02, 1).attempts == 1
    time.sleep(0.05)
    assert be.queue_stats("q")["in_flight"] == 1  # expired but still counted in flight
    assert be.queue_receive("q", 30, 1) is None
    assert [m.id for m in be.queue_dead("q")] == ["a"]


def test_queue_delay_and_nack_delay(be, url):
    """Delayed messages become ready at their due time, also after a reopen."""
    be.queue_put("q", "later", "1", 0.3, 0)
    assert be.queue_get("q", 5) is None
    assert be.queue_stats("q") == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    b2 = other(url)
    assert b2.queue_stats("q")["delayed"] == 1
    time.sleep(0.35)
    assert b2.queue_stats("q") == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    d = b2.queue_receive("q", 30, 5)
    assert d.id == "later"
    assert b2.queue_nack("q", "later", d.receipt, 0.2, 5)
    assert be.queue_receive("q", 30, 5) is None
    time.sleep(0.25)
    assert be.queue_receive("q", 30, 5).attempts == 2
    b2.close()


def test_queue_purge_leaves_in_flight(be):
    """purge removes ready and delayed (and dead on request), never in-flight messages."""
    for i in range(4):
        be.queue_put("q", f"m{i}", "1", 0, 0)
    be.queue_put("q", "d", "1", 60, 0)
    be.queue_put("q", "x", "1", 0, 9)
    dx = be.queue_receive("q", 30, 1)
    be.queue_nack("q", dx.id, dx.receipt, 0, 1)  # dead
    inflight = be.queue_receive("q", 30, 5)
    assert be.queue_purge("q", False) == 4  # 3 ready + 1 delayed
    assert be.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 1, "dead": 1}
    assert be.queue_purge("q", True) == 1
    assert be.queue_ack("q", inflight.id, inflight.receipt)
    assert be.queue_purge("q", True) == 0
    assert be.queues() == []


def test_queue_wait_wakes_on_put_from_other_handle(be, url):
    """queue_wait returns soon after another handle puts, and times out otherwise."""
    be.queue_put("q", "a", "1", 0, 0)
    be.queue_get("q", 5)
    t0 = time.monotonic()
    be.queue_wait("q", 0.2)
    assert 0.15 <= time.monotonic() - t0 < 1.0
    b2 = other(url)
    threading.Timer(0.1, lambda: b2.queue_put("q", "b", "1", 0, 0)).start()
    t0 = time.monotonic()
    be.queue_wait("q", 5)
    assert time.monotonic() - t0 < 2.5
    assert be.queue_get("q", 5).id == "b"
    threading.Timer(0.1, lambda: b2.queue_put("new", "b", "1", 0, 0)).start()
    t0 = time.monotonic()
    be.queue_wait("new", 5)  # a queue that did not exist yet
    assert time.monotonic() - t0 < 2.5
    b2.close()


def test_queue_wait_bounded_by_delayed_message(be):
    """A wait ends by the due time of the next delayed message."""
    be.queue_put("q", "a", "1", 0.15, 0)
    t0 = time.monotonic()
    be.queue_wait("q", 5)
    assert time.monotonic() - t0 < 2.5
    time.sleep(max(0.0, 0.16 - (time.monotonic() - t0)))
    assert be.queue_get("q", 5).id == "a"


def test_queue_large_backlog(tmp_path):
    """5,000 messages survive rotations and a reopen, and drain in priority/FIFO order
    (the 20,000-message form runs in the F7 soak)."""
    url = "file://" + str(tmp_path / "d") + "?fsync=never"
    be = other(url)
    be._cfg.compact_records = 1500
    n = 5_000
    for i in range(n):
        be.queue_put("big", f"m{i:05d}", str(i), 0, i % 3)
    b2 = other(url)
    assert b2.queue_stats("big")["ready"] == n
    t0 = time.perf_counter()
    got = [b2.queue_get("big", 5).id for _ in range(n)]
    assert time.perf_counter() - t0 < 15
    want = sorted((f"m{i:05d}" for i in range(n)), key=lambda m: (-(int(m[1:]) % 3), m))
    assert got == want
    b2.close()
    be.close()


# ---------------------------------------------------------------------- membership
def test_membership(be, url):
    """Heartbeats make members live until their ttl; leave removes them."""
    be.member_heartbeat("g", "a", {"host": "h1", "n": 1}, 30)
    be.member_heartbeat("g", "b", {"host": "h2"}, 0.05)
    assert be.members("g") == {"a": {"host": "h1", "n": 1}, "b": {"host": "h2"}}
    time.sleep(0.08)
    b2 = other(url)
    assert b2.members("g") == {"a": {"host": "h1", "n": 1}}
    assert b2.member_leave("g", "b") is False  # expired: not there
    assert b2.member_leave("g", "a") is True
    assert b2.member_leave("g", "a") is False
    assert be.members("g") == {}
    assert be.members("nogroup") == {}
    b2.close()


# ---------------------------------------------------------------------- files and security
def test_modes_under_umask_000(tmp_path):
    """With umask 000 every created directory is 0700 and every file 0600."""
    old = os.umask(0)
    try:
        b = FileBackend.from_url("file://" + str(tmp_path / "d"))
        b.counter_add("c", 1, "r")
        b.state_set("s", "k", "1")
        b.queue_put("q", "m", "1", 0, 0)
        b.member_heartbeat("g", "m", {}, 10)
        b._cfg.compact_records = 2
        for _ in range(5):
            b.counter_add("c", 1, "r")
        b.close()
    finally:
        os.umask(old)
    for dirpath, dirnames, filenames in os.walk(tmp_path / "d"):
        for d in dirnames:
            assert stat.S_IMODE(os.lstat(os.path.join(dirpath, d)).st_mode) == 0o700, d
        for f in filenames:
            assert stat.S_IMODE(os.lstat(os.path.join(dirpath, f)).st_mode) == 0o600, f


def test_symlinks_below_root_are_not_followed(tmp_path):
    """A symlink planted as an object directory, lock or journal is refused, never followed."""
    root = tmp_path / "d"
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("keep")
    b = FileBackend.from_url("file://" + str(root))
    b.counter_add("real", 1, "r")
    (root / "counters" / "evil").symlink_to(outside)
    with pytest.raises(BackendUnavailable, match="symlink"):
        b.counter_add("evil", 1, "r")
    os.mkdir(root / "counters" / "lk", 0o700)
    (root / "counters" / "lk" / "lock").symlink_to(victim)
    with pytest.raises(BackendUnavailable, match="symlink"):
        b.counter_add("lk", 1, "r")
    os.mkdir(root / "counters" / "jn", 0o700)
    (root / "counters" / "jn" / "journal.1").symlink_to(victim)
    with pytest.raises(BackendUnavailable):
        b.counter_add("jn", 1, "r")
    assert victim.read_text() == "keep"
    assert sorted(os.listdir(outside)) == ["victim"]
    b.close()


def test_symlink_at_snapshot_name_is_replaced_not_followed(tmp_path):
    """Rotation renames over a planted snap.N symlink; the symlink's target is untouched."""
    root = tmp_path / "d"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    b = FileBackend.from_url("file://" + str(root))
    b._cfg.compact_records = 5
    b.counter_add("c", 1, "r")
    (root / "counters" / "c" / "snap.2").symlink_to(victim)
    for _ in range(10):
        b.counter_add("c", 1, "r")
    assert victim.read_text() == "keep"
    assert not (root / "counters" / "c" / "snap.2").is_symlink()
    b.close()
    b2 = FileBackend.from_url("file://" + str(root))
    assert b2.counter_get("c") == 11
    b2.close()


def test_fork_child_gets_fresh_handles(be, url):
    """A forked child uses its own descriptors: its writes are seen by the parent exactly."""
    be.counter_add("c", 1, "r")
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            for _ in range(50):
                be.counter_add("c", 1, "r")
            code = 0
        finally:
            os._exit(code)
    for _ in range(50):
        be.counter_add("c", 1, "r")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert be.counter_get("c") == 101


def test_poisoned_handle_refuses_until_reopen(be, url):
    """After a failed write the object refuses further use until the backend is reopened."""
    be.counter_add("c", 1, "r")
    h = be._handles[("counters", "c")]
    real_fd = h.fd
    # Make the journal descriptor read-only, so the next write really fails with EBADF.
    ro = os.open(Path(url[7:]) / "counters" / "c" / "journal.1", os.O_RDONLY)
    os.dup2(ro, real_fd)
    os.close(ro)
    with pytest.raises(BackendUnavailable, match="write failed"):
        be.counter_add("c", 1, "r")
    with pytest.raises(BackendUnavailable, match="refuses"):
        be.counter_get("c")
    be.close()
    assert be.counter_get("c") == 1
    assert be.counter_add("c", 1, "r") == 2


def test_many_objects_keep_descriptors_bounded(tmp_path):
    """Touching 400 objects keeps at most MAX_OPEN_HANDLES handles (3 fds each) open."""
    from unidist.backends.file.store import MAX_OPEN_HANDLES

    b = other("file://" + str(tmp_path / "d") + "?fsync=never")
    before = len(os.listdir("/proc/self/fd"))
    for i in range(400):
        b.counter_add(f"c{i}", i, "r")
    assert len(b.counters()) == 400
    assert b.counters()["c399"] == 399
    assert len(b._handles) <= MAX_OPEN_HANDLES
    assert len(os.listdir("/proc/self/fd")) - before <= 3 * MAX_OPEN_HANDLES + 10
    b.close()
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_batch_mode_flushes_within_interval(tmp_path):
    """fsync=batch leaves records dirty only until the flusher syncs them."""
    b = other("file://" + str(tmp_path / "d") + "?fsync=batch&fsync_interval=0.05")
    for _ in range(200):
        b.counter_add("c", 1, "r")
    h = b._handles[("counters", "c")]
    deadline = time.monotonic() + 2
    while h.dirty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not h.dirty
    b.close()
    b2 = other("file://" + str(tmp_path / "d"))
    assert b2.counter_get("c") == 200
    b2.close()
