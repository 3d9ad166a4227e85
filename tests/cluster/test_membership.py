"""Live membership on every backend, queue_release, and what membership feeds into locks,
queues and logs."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import unidist
import unidist.log
from unidist.backends import Backend
from unidist.cluster import MEMBERS_GROUP, MemberEvent, Membership, current
from unidist.codec import JSON

TTL = 1.0


@pytest.fixture
def members() -> Iterator[list[Membership]]:
    """Memberships made by a test; all left afterwards."""
    made: list[Membership] = []
    yield made
    for m in made:
        m.leave()


def wait_until(predicate: object, timeout: float, step: float = 0.02) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def test_join_members_leave(backend: Backend, members: list[Membership]) -> None:
    a = Membership(backend, member_id="a", groups=["web", "db"], meta={"role": "x"}, ttl=TTL)
    b = Membership(backend, member_id="b", groups=["web"], ttl=TTL, current=False)
    members += [a, b]
    before = time.time()
    with a:
        assert a.joined
        assert a.incarnation
        b.join()
        live = a.members()
        assert [m.id for m in live] == ["a", "b"]
        first = live[0]
        assert first.host == socket.gethostname()
        assert first.pid == os.getpid()
        assert first.groups == ("web", "db")
        assert first.meta == {"role": "x"}
        assert before - 1 <= first.joined_at <= first.last_seen <= time.time() + 1
        assert first.incarnation == a.incarnation
        assert set(first.to_dict()) >= {"host", "pid", "groups", "meta", "joined_at", "last_seen"}
        assert [m.id for m in a.members(group="db")] == ["a"]
        assert [m.id for m in b.members(group="web")] == ["a", "b"]
        assert a.members(group="nope") == []
        time.sleep(TTL * 1.5)  # heartbeats keep both alive past the ttl
        assert [m.id for m in b.members()] == ["a", "b"]
    assert repr(a).endswith("not joined>")
    assert [m.id for m in b.members()] == ["b"]
    b.leave()
    assert b.members() == []
    b.leave()  # idempotent


def test_defaults_and_validation(backend: Backend, members: list[Membership]) -> None:
    m = Membership(backend)
    members.append(m)
    assert m.member_id == f"{socket.gethostname()}:{os.getpid()}"
    assert m.groups == ()
    assert m.ttl == 10
    with pytest.raises(unidist.InvalidName):
        Membership(backend, member_id="a b")
    with pytest.raises(unidist.InvalidName):
        Membership(backend, groups=["../x"])
    with pytest.raises(unidist.SerializationError):
        Membership(backend, meta={"x": {1, 2}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="ttl"):
        Membership(backend, ttl=0)
    with pytest.raises(TypeError):
        Membership(backend, groups="web")


def test_default_groups_come_from_the_cluster_file(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = socket.gethostname()
    path = tmp_path / "cluster"
    path.write_text(f"GROUP:web\n{host}\nGROUP:db\nother\nLUMP:all\nweb\ndb\n")
    monkeypatch.setenv("CLUSTER", str(path))
    assert Membership(backend).groups == ("web", "all")


def test_silent_member_is_gone_within_ttl_plus_one(
    backend: Backend, members: list[Membership]
) -> None:
    watcher = Membership(backend, member_id="watcher", ttl=TTL)
    members.append(watcher)
    seen: list[MemberEvent] = []
    watcher.watch(seen.append)
    watcher.join()
    # A member that heartbeats once and then stops (as if killed).
    info: dict[str, JSON] = {"host": "h", "pid": 1, "groups": ["g"], "incarnation": "i1"}
    backend.member_heartbeat(MEMBERS_GROUP, "ghost", info, TTL)
    beat = time.monotonic()
    wait_until(lambda: any(e.kind == "joined" and e.member.id == "ghost" for e in seen), 2)
    assert [m.id for m in watcher.members(group="g")] == ["ghost"]
    wait_until(lambda: "ghost" not in [m.id for m in watcher.members()], TTL + 1)
    wait_until(lambda: any(e.kind == "left" and e.member.id == "ghost" for e in seen), TTL + 1)
    assert time.monotonic() - beat <= TTL + 1
    assert not [e for e in seen if e.member.id == "watcher" and e.kind == "left"]


def test_events_iterator(backend: Backend, members: list[Membership]) -> None:
    observer = Membership(backend, member_id="observer", ttl=TTL, current=False)
    other = Membership(backend, member_id="other", ttl=TTL, current=False)
    members += [observer, other]
    observer.join()
    got: list[tuple[str, str]] = []

    def collect() -> None:
        for event in observer.events(timeout=5, initial=True):
            got.append((event.kind, event.member.id))
            if event.kind == "left":
                return

    t = threading.Thread(target=collect)
    t.start()
    wait_until(lambda: ("joined", "observer") in got, 3)
    other.join()
    wait_until(lambda: ("joined", "other") in got, 3)
    other.leave()
    t.join(5)
    assert got[-1] == ("left", "other")
    # leave() ends a running iterator.
    ended = threading.Event()

    def drain() -> None:
        for _ in observer.events():
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    time.sleep(0.2)
    observer.leave()
    assert ended.wait(5)


def test_paused_member_rejoins_with_a_new_incarnation(
    backend: Backend, members: list[Membership]
) -> None:
    m = Membership(backend, member_id="sleepy", ttl=TTL)
    watcher = Membership(backend, member_id="w", ttl=TTL, current=False)
    members += [m, watcher]
    seen: list[MemberEvent] = []
    watcher.watch(seen.append)
    m.join()
    first = m.incarnation
    wait_until(lambda: any(e.member.incarnation == first for e in seen), 2)
    with m._lock:  # the heartbeat thread stalls, as in a long pause
        time.sleep(TTL + 0.5)
    wait_until(lambda: m.incarnation != first, 2)
    wait_until(
        lambda: [e.kind for e in seen if e.member.id == "sleepy"][-2:] == ["left", "joined"], 2
    )
    left = [e for e in seen if e.kind == "left" and e.member.id == "sleepy"]
    assert left[-1].member.incarnation == first
    assert [x.incarnation for x in watcher.members() if x.id == "sleepy"] == [m.incarnation]


# ---------------------------------------------------------------------------- queue_release
def test_queue_release_gives_back_one_consumers_messages(backend: Backend) -> None:
    for i in range(4):
        backend.queue_put("q", f"m{i}", json.dumps(i), 0, 0)
    a1 = backend.queue_receive("q", 60, 5, "cons-a")
    b1 = backend.queue_receive("q", 60, 5, "cons-b")
    a2 = backend.queue_receive("q", 60, 5, "cons-a")
    plain = backend.queue_receive("q", 60, 5)
    assert a1
    assert b1
    assert a2
    assert plain
    assert backend.queue_release("q", "cons-x", 5) == 0
    assert backend.queue_release("q", "cons", 5) == 0  # a prefix is another consumer
    assert backend.queue_release("q", "cons-a", 5) == 2
    assert backend.queue_stats("q") == {"ready": 2, "delayed": 0, "in_flight": 2, "dead": 0}
    assert backend.queue_release("q", "cons-a", 5) == 0
    assert not backend.queue_ack("q", a1.id, a1.receipt)  # the old delivery is fenced
    again = backend.queue_receive("q", 60, 5, "cons-c")
    assert again is not None
    assert again.id == a1.id
    assert again.attempts == 2
    assert backend.queue_ack("q", b1.id, b1.receipt)
    assert backend.queue_ack("q", plain.id, plain.receipt)
    with pytest.raises(unidist.InvalidName):
        backend.queue_release("q", "bad/id", 5)
    with pytest.raises(unidist.InvalidName):
        backend.queue_receive("q", 60, 5, "bad id")


def test_queue_release_respects_max_attempts(backend: Backend) -> None:
    backend.queue_put("q", "m", "1", 0, 0)
    d = backend.queue_receive("q", 60, 2, "c1")
    assert d is not None
    assert backend.queue_release("q", "c1", 2) == 1
    d = backend.queue_receive("q", 60, 2, "c1")
    assert d is not None
    assert d.attempts == 2
    assert backend.queue_release("q", "c1", 2) == 1
    assert backend.queue_stats("q")["dead"] == 1
    assert backend.queue_receive("q", 60, 2, "c1") is None


def test_queue_release_wakes_a_waiting_receiver(backend: Backend) -> None:
    backend.queue_put("q", "m", "1", 0, 0)
    assert backend.queue_receive("q", 60, 5, "gone") is not None
    q = unidist.MessageQueue("q", backend=backend)
    got: list[float] = []

    def receive() -> None:
        msg = q.receive(timeout=10)
        got.append(time.monotonic())
        msg.ack()

    t = threading.Thread(target=receive)
    t.start()
    time.sleep(0.3)
    released = time.monotonic()
    assert backend.queue_release("q", "gone", 5) == 1
    t.join(10)
    assert got
    assert got[0] - released < 1.5


# ---------------------------------------------------------------------------- feeding
def test_dead_members_messages_are_ready_at_once(
    backend: Backend, members: list[Membership]
) -> None:
    survivor = Membership(backend, member_id="survivor", ttl=TTL)
    members.append(survivor)
    survivor.join()
    backend.queue_put("work", "m1", '"job"', 0, 0)
    held = backend.queue_receive("work", 60, 5, "deadbeef")
    assert held is not None
    info: dict[str, JSON] = {
        "host": "h",
        "pid": 1,
        "incarnation": "deadbeef",
        "queues": {"work": 5},
    }
    backend.member_heartbeat(MEMBERS_GROUP, "doomed", info, TTL)
    started = time.monotonic()
    q = unidist.MessageQueue("work", backend=backend, visibility_timeout=60)
    msg = q.receive(timeout=TTL + 2)
    assert time.monotonic() - started <= TTL + 1.5
    assert msg.id == "m1"
    assert msg.attempts == 2
    assert msg.ack()


def test_leaving_member_gives_back_its_messages(
    backend: Backend, members: list[Membership]
) -> None:
    q = unidist.MessageQueue("work", backend=backend, visibility_timeout=60)
    q.put("a", id="ma")
    m = Membership(backend, member_id="quitter", ttl=TTL)
    members.append(m)
    with m:
        msg = q.receive(timeout=1)
        assert q.stats()["in_flight"] == 1
        record = next(x for x in m.members() if x.id == "quitter")
        assert record.queues == {"work": 5}
    assert q.stats() == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    assert not msg.ack()
    assert q.get(timeout=1) == "a"


def test_queue_on_another_backend_is_not_tagged(
    backend: Backend, members: list[Membership]
) -> None:
    other = unidist.connect(f"memory://other{os.getpid()}{time.monotonic_ns()}")
    m = Membership(other, member_id="elsewhere", ttl=TTL)
    members.append(m)
    m.join()
    q = unidist.MessageQueue("work", backend=backend, visibility_timeout=60)
    q.put(1)
    msg = q.receive(timeout=1)
    assert "/" not in msg.receipt
    msg.ack()


def test_lock_owner_records_carry_the_member(backend: Backend, members: list[Membership]) -> None:
    lock = unidist.SharedLock("res", backend=backend)
    with lock:
        owner = lock.owner()
        assert owner is not None
        assert "member" not in owner
    m = Membership(backend, member_id="locker", groups=["g"], ttl=TTL)
    members.append(m)
    with m:
        assert current() is m
        with lock:
            owner = lock.owner()
            assert owner is not None
            assert owner["member"] == "locker"
            assert backend.locks()["res"][0]["member"] == "locker"
        sem = unidist.SharedSemaphore("slots", limit=2, backend=backend)
        with sem:
            assert backend.locks()["slots"][0]["member"] == "locker"
    assert current() is None


def test_current_is_the_latest_joined(backend: Backend, members: list[Membership]) -> None:
    a = Membership(backend, member_id="a", ttl=TTL)
    b = Membership(backend, member_id="b", ttl=TTL)
    quiet = Membership(backend, member_id="q", ttl=TTL, current=False)
    members += [a, b, quiet]
    a.join()
    b.join()
    quiet.join()
    assert current() is b
    b.leave()
    assert current() is a
    a.leave()
    assert current() is None


def test_log_records_carry_member_and_groups(
    backend: Backend,
    members: list[Membership],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in list(os.environ):
        if var.startswith("UNIDIST_LOG_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("UNIDIST_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("UNIDIST_LOG_CONSOLE", "off")
    unidist.log.reset()
    try:
        log = unidist.log.get_logger("cl")
        log.info("before")
        m = Membership(backend, member_id="logger", groups=["web", "db"], ttl=TTL)
        members.append(m)
        with m:
            log.info("during")
        log.info("after")
        unidist.log.reset()
        lines = (tmp_path / "logs" / "cl.log").read_text().splitlines()
        records = {r["event"]: r for r in map(json.loads, lines)}
    finally:
        unidist.log.reset()
    assert "member" not in records["before"]
    assert records["during"]["member"] == "logger"
    assert records["during"]["groups"] == ["web", "db"]
    assert "member" not in records["after"]


def test_grace_is_validated(backend: Backend) -> None:
    with pytest.raises(ValueError, match="grace"):
        Membership(backend, member_id="g", groups=[], grace=-1)
    with pytest.raises(TypeError, match="grace"):
        Membership(backend, member_id="g", groups=[], grace="1")  # type: ignore[arg-type]
    assert Membership(backend, member_id="g", groups=[], ttl=2, grace=3).grace == 3.0


def test_a_silent_member_is_suspected_then_dead_and_its_locks_are_broken(
    backend: Backend, members: list[Membership]
) -> None:
    """A member that beat once and went silent: suspect after its ttl (on the watcher's
    clock), gone after ttl + grace (on the backend's), and the locks its incarnation held are
    broken, while a lock of another incarnation of the same id is left alone."""
    watcher = Membership(
        backend, member_id="w", groups=[], ttl=0.3, grace=0.3, current=False, poll=0.05
    )
    members.append(watcher)
    watcher.join()
    seen: list[MemberEvent] = []
    watcher.watch(lambda e: seen.append(e) if e.member.id == "ghost" else None, suspicion=True)
    plain: list[MemberEvent] = []
    watcher.watch(lambda e: plain.append(e) if e.member.id == "ghost" else None)
    now = time.time()
    record: dict[str, JSON] = {"host": "h", "pid": 1, "groups": [], "incarnation": "inc1"}
    record.update(ttl=0.3, beat=1, joined_at=now, last_seen=now)
    backend.member_heartbeat(MEMBERS_GROUP, "ghost", record, 0.6)
    mine = {"member": "ghost", "incarnation": "inc1"}
    older = {"member": "ghost", "incarnation": "inc0"}
    assert backend.lock_acquire("ghost-lock", 1, "ghost-holder", mine, None) is not None
    assert backend.lock_acquire("ghost-old", 1, "old-holder", older, None) is not None
    wait_until(lambda: [m.id for m in watcher.suspects()] == ["ghost"], 3)
    assert [e.kind for e in seen][-1] == "suspect"
    assert "ghost" in {m.id for m in watcher.members()}  # suspected, not yet dead
    wait_until(lambda: any(e.kind == "left" for e in seen), 3)
    wait_until(lambda: backend.lock_owners("ghost-lock") == [], 2)
    assert watcher.suspects() == []
    assert [e.kind for e in seen] == ["joined", "suspect", "left"]
    assert [e.kind for e in plain] == ["joined", "left"]  # suspicion only when asked for
    assert watcher.fenced >= 1
    assert [o["holder"] for o in backend.lock_owners("ghost-old")] == ["old-holder"]
    assert backend.lock_release("ghost-old", "old-holder")
    assert backend.lock_release("ghost-lock", "ghost-holder") is False


def test_a_beating_member_is_not_suspected(backend: Backend, members: list[Membership]) -> None:
    watcher = Membership(backend, member_id="w", groups=[], ttl=0.3, current=False, poll=0.05)
    alive = Membership(backend, member_id="alive", groups=[], ttl=0.3, current=False)
    members += [watcher, alive]
    watcher.join()
    alive.join()
    seen: list[MemberEvent] = []
    watcher.watch(
        lambda e: seen.append(e) if e.kind in ("suspect", "left") else None, suspicion=True
    )
    time.sleep(0.7)  # more than twice the ttl
    assert seen == []
    assert watcher.suspects() == []
