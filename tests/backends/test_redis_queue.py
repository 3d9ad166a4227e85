"""Redis backend internals: queue and membership methods, waits, fork safety.

Every test talks to a real redis-server started by ``backends/redis/server.py``.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

import unidist
from backends.redis.server import RedisServer
from unidist.backends.redis import RedisBackend
from unidist.errors import CorruptData


def _ids(be: RedisBackend, name: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        d = be.queue_get(name, 5)
        assert d is not None
        out.append(d.id)
    return out


def test_put_is_idempotent_on_id(rbe: RedisBackend) -> None:
    """A second put with the same id (in any state) stores nothing and returns False."""
    assert rbe.queue_put("q", "m1", '"a"', 0, 0) is True
    assert rbe.queue_put("q", "m1", '"other"', 0, 0) is False
    d = rbe.queue_receive("q", 30, 5)
    assert d is not None
    assert d.body == '"a"'
    assert rbe.queue_put("q", "m1", '"again"', 0, 0) is False
    assert rbe.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 1, "dead": 0}


def test_priority_then_put_order(rbe: RedisBackend) -> None:
    """Higher priority leaves first, then put order, for any 64-bit priority."""
    puts = [("a", 0), ("b", 5), ("c", -3), ("d", 5), ("e", 2**62), ("f", -(2**62)), ("g", 0)]
    for msg_id, prio in puts:
        rbe.queue_put("q", msg_id, "1", 0, prio)
    order = _ids(rbe, "q", len(puts))
    assert order == ["e", "b", "d", "a", "g", "c", "f"]
    assert rbe.queue_get("q", 5) is None


def test_delivery_fields(rbe: RedisBackend, raw: redis.Redis) -> None:
    """A delivery has body, attempts 1, a receipt, priority and the server's enqueue time."""
    sec, usec = raw.time()
    rbe.queue_put("q", "m", '{"x":[1,2]}', 0, 7)
    d = rbe.queue_receive("q", 30, 5)
    assert d is not None
    assert (d.id, d.body, d.attempts, d.priority) == ("m", '{"x":[1,2]}', 1, 7)
    assert d.receipt
    assert abs(d.enqueued_at - (sec + usec / 1e6)) < 1.0


def test_delayed_message_becomes_ready_on_time(rbe: RedisBackend) -> None:
    """A delayed message is counted as delayed, then ready at its due time (server clock)."""
    rbe.queue_put("q", "later", "1", 0.3, 0)
    assert rbe.queue_stats("q")["delayed"] == 1
    assert rbe.queue_receive("q", 30, 5) is None
    time.sleep(0.35)
    assert rbe.queue_stats("q")["ready"] == 1  # due: counted as ready before promotion
    d = rbe.queue_receive("q", 30, 5)
    assert d is not None
    assert d.id == "later"


def test_visibility_timeout_redelivers_and_stale_receipt_is_refused(rbe: RedisBackend) -> None:
    """An unacked message comes back after its visibility timeout with attempts + 1; the old
    receipt can neither ack nor nack it; the new one can."""
    rbe.queue_put("q", "m", "1", 0, 0)
    first = rbe.queue_receive("q", 0.2, 5)
    assert first is not None
    assert rbe.queue_receive("q", 0.2, 5) is None
    time.sleep(0.25)
    second = rbe.queue_receive("q", 30, 5)
    assert second is not None
    assert second.attempts == 2
    assert second.receipt != first.receipt
    assert rbe.queue_ack("q", "m", first.receipt) is False
    assert rbe.queue_nack("q", "m", first.receipt, 0, 5) is False
    assert rbe.queue_stats("q")["in_flight"] == 1
    assert rbe.queue_ack("q", "m", second.receipt) is True
    assert rbe.queue_ack("q", "m", second.receipt) is False
    assert rbe.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    assert rbe.queues() == []


def test_max_attempts_dead_list_and_requeue(rbe: RedisBackend) -> None:
    """After max_attempts deliveries a message is dead (via expiry or nack), listed oldest
    first with an empty receipt; requeue_dead resets attempts."""
    rbe.queue_put("q", "a", '"A"', 0, 0)
    rbe.queue_put("q", "b", '"B"', 0, 0)
    for _ in range(2):
        d = rbe.queue_receive("q", 0.05, 2)
        assert d is not None
        assert d.id == "a"
        time.sleep(0.08)
    assert rbe.queue_receive("q", 30, 2) is not None  # "a" went dead, "b" delivered
    dead = rbe.queue_dead("q")
    assert [(m.id, m.attempts, m.receipt, m.body) for m in dead] == [("a", 2, "", '"A"')]
    b = rbe.queue_stats("q")
    assert b == {"ready": 0, "delayed": 0, "in_flight": 1, "dead": 1}
    inflight = rbe.queue_receive("q", 30, 2)
    assert inflight is None
    # nack at the limit sends "b" dead too
    rbe.queue_put("q", "c", "1", 0, 0)
    c = rbe.queue_receive("q", 30, 1)
    assert c is not None
    assert rbe.queue_nack("q", "c", c.receipt, 0, 1) is True
    assert [m.id for m in rbe.queue_dead("q")] == ["a", "c"]
    assert rbe.queue_requeue_dead("q") == 2
    again = rbe.queue_receive("q", 30, 2)
    assert again is not None
    assert again.attempts == 1


def test_nack_with_delay_and_without(rbe: RedisBackend) -> None:
    """nack makes the message ready again (same place in put order) or delayed."""
    rbe.queue_put("q", "m1", "1", 0, 0)
    rbe.queue_put("q", "m2", "2", 0, 0)
    d = rbe.queue_receive("q", 30, 5)
    assert d is not None
    assert rbe.queue_nack("q", d.id, d.receipt, 0, 5) is True
    again = rbe.queue_receive("q", 30, 5)
    assert again is not None
    assert (again.id, again.attempts) == ("m1", 2)
    assert rbe.queue_nack("q", again.id, again.receipt, 0.2, 5) is True
    assert rbe.queue_stats("q")["delayed"] == 1
    nxt = rbe.queue_receive("q", 30, 5)
    assert nxt is not None
    assert nxt.id == "m2"
    time.sleep(0.25)
    last = rbe.queue_receive("q", 30, 5)
    assert last is not None
    assert (last.id, last.attempts) == ("m1", 3)


def test_purge_leaves_in_flight(rbe: RedisBackend) -> None:
    """purge removes ready and delayed (and dead on request), never in-flight messages."""
    for i in range(3):
        rbe.queue_put("q", f"r{i}", "1", 0, 0)
    rbe.queue_put("q", "later", "1", 60, 0)
    d = rbe.queue_receive("q", 30, 1)
    assert d is not None
    rbe.queue_nack("q", d.id, d.receipt, 0, 1)  # dead
    inflight = rbe.queue_receive("q", 30, 5)
    assert inflight is not None
    assert rbe.queue_purge("q", False) == 2  # one ready + one delayed
    assert rbe.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 1, "dead": 1}
    assert rbe.queue_purge("q", True) == 1
    assert rbe.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 1, "dead": 0}
    assert rbe.queue_ack("q", inflight.id, inflight.receipt) is True
    assert rbe.queues() == []


def test_queues_lists_names_with_messages(rbe: RedisBackend) -> None:
    """queues() names every queue holding a message in any state, sorted."""
    rbe.queue_put("zz", "m", "1", 0, 0)
    rbe.queue_put("aa", "m", "1", 60, 0)
    assert rbe.queues() == ["aa", "zz"]
    rbe.queue_get("zz", 5)
    assert rbe.queues() == ["aa"]


def test_queue_wait_is_woken_by_a_put(rbe: RedisBackend) -> None:
    """A waiting consumer returns as soon as another client puts (no polling interval)."""
    other = RedisBackend.from_url(rbe.url)
    assert rbe.queue_receive("q", 30, 5) is None
    woke: list[float] = []

    def waiter() -> None:
        t0 = time.monotonic()
        rbe.queue_wait("q", 5.0)
        woke.append(time.monotonic() - t0)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    other.queue_put("q", "m", "1", 0, 0)
    t.join(5)
    other.close()
    assert woke
    assert 0.2 < woke[0] < 0.6


def test_queue_wait_is_bounded_by_the_next_due_message(rbe: RedisBackend) -> None:
    """With only a delayed message, queue_wait returns at its due time, not its timeout."""
    rbe.queue_put("q", "m", "1", 0.3, 0)
    assert rbe.queue_receive("q", 30, 5) is None
    t0 = time.monotonic()
    rbe.queue_wait("q", 5.0)
    assert time.monotonic() - t0 < 0.6
    assert rbe.queue_receive("q", 30, 5) is not None


def test_queue_wait_without_work_blocks_for_its_timeout(
    rbe: RedisBackend, raw: redis.Redis
) -> None:
    """An empty queue: queue_wait blocks the whole timeout with a handful of commands."""
    assert rbe.queue_receive("q", 30, 5) is None
    before = int(raw.info("stats")["total_commands_processed"])
    t0 = time.monotonic()
    rbe.queue_wait("q", 0.5)
    elapsed = time.monotonic() - t0
    after = int(raw.info("stats")["total_commands_processed"])
    assert 0.45 < elapsed < 1.0
    assert after - before <= 3


def test_get_is_exactly_once_under_concurrency(rbe: RedisBackend) -> None:
    """Four threads draining 200 messages with queue_get receive each exactly once."""
    for i in range(200):
        rbe.queue_put("q", f"m{i}", str(i), 0, 0)
    got: list[str] = []
    lock = threading.Lock()

    def drain() -> None:
        while True:
            d = rbe.queue_get("q", 5)
            if d is None:
                return
            with lock:
                got.append(d.id)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == sorted(f"m{i}" for i in range(200))


# ---------------------------------------------------------------------- membership
def test_membership_heartbeat_expiry_leave(rbe: RedisBackend) -> None:
    """Members live for ttl after each heartbeat (server clock); leave reports presence."""
    rbe.member_heartbeat("g", "a", {"host": "h1"}, 0.2)
    rbe.member_heartbeat("g", "b", {"host": "h2"}, 30)
    assert rbe.members("g") == {"a": {"host": "h1"}, "b": {"host": "h2"}}
    time.sleep(0.25)
    assert rbe.members("g") == {"b": {"host": "h2"}}
    assert rbe.member_leave("g", "a") is False
    rbe.member_heartbeat("g", "b", {"host": "h3"}, 30)
    assert rbe.members("g") == {"b": {"host": "h3"}}
    assert rbe.member_leave("g", "b") is True
    assert rbe.members("g") == {}


# ---------------------------------------------------------------------- fork safety
def test_forked_child_uses_its_own_connections(rbe: RedisBackend) -> None:
    """After fork the child opens new connections (different CLIENT ID) and works; the
    parent's connection is untouched."""
    parent_id = rbe._client.command("CLIENT", "ID")
    rbe.counter_add("c", 1, "r-parent")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            child_id = rbe._client.command("CLIENT", "ID")
            value = rbe.counter_add("c", 10, "r-child")
            os.write(w, f"{child_id} {value}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = os.read(r, 100).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_id, value = (int(x) for x in data.split())
    assert child_id != parent_id
    assert value == 11
    assert rbe._client.command("CLIENT", "ID") == parent_id
    assert rbe.counter_get("c") == 11


def test_put_of_the_threads_last_id_after_it_was_consumed_stores_nothing(
    rbe: RedisBackend, raw: redis.Redis, prefix: str
) -> None:
    """Putting the id of this thread's last put again, after a consumer took it, returns
    False and leaves nothing behind (the put claimed the id, then undid the claim)."""
    assert rbe.queue_put("q", "m1", '"a"', 0, 0) is True
    d = rbe.queue_get("q", 5)
    assert d is not None
    assert d.body == '"a"'
    assert rbe.queue_put("q", "m1", '"again"', 0, 0) is False
    assert rbe.queue_stats("q") == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    assert rbe.queue_get("q", 5) is None
    assert raw.hlen(f"{prefix}{{q:q}}:m") == 0
    # The record still names m1: another put of it is still refused, a new id is stored.
    assert rbe.queue_put("q", "m1", '"third"', 0, 0) is False
    assert rbe.queue_put("q", "m2", '"b"', 0, 0) is True
    assert rbe.queue_put("q", "m1", '"fourth"', 0, 0) is True


def test_wake_list_stays_bounded_and_waiters_still_wake(
    rbe: RedisBackend, raw: redis.Redis, prefix: str
) -> None:
    """Takes leave wake-ups in place: the list stays at most 512 long under a backlog, and a
    waiter that finds only stale wake-ups still sleeps until a real put wakes it."""
    for i in range(600):
        rbe.queue_put("q", f"m{i}", "1", 0, 0)
    assert 0 < raw.llen(f"{prefix}{{q:q}}:n") <= 512
    for _ in range(599):
        assert rbe.queue_get("q", 5) is not None
    assert raw.llen(f"{prefix}{{q:q}}:n") > 0  # stale: only one message is left
    assert rbe.queue_get("q", 5) is not None
    assert rbe.queue_get("q", 5) is None
    other = RedisBackend.from_url(rbe.url)
    got: list[float] = []
    waits = [0]

    def consumer() -> None:
        t0 = time.monotonic()
        while rbe.queue_get("q", 5) is None:
            waits[0] += 1
            rbe.queue_wait("q", 5.0)
        got.append(time.monotonic() - t0)

    other.queue_put("q", "due-later", "1", 60, 0)  # the queue is never empty below
    for i in range(300):  # a backlog taken by a consumer that never waits
        other.queue_put("q", f"s{i}", "1", 0, 0)
    for _ in range(300):
        assert other.queue_get("q", 5) is not None
    assert raw.llen(f"{prefix}{{q:q}}:n") == 301  # stale wake-ups (the delayed put too)
    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.3)
    other.queue_put("q", "late", "1", 0, 0)
    t.join(5)
    other.close()
    assert got
    assert 0.2 < got[0] < 0.8
    assert waits[0] <= 2  # the stale wake-ups did not make the waiter spin


def _server_commands(client: redis.Redis) -> dict[str, int]:
    """Commands run on the server since the last CONFIG RESETSTAT, scripts' own calls
    included, without the script calls themselves and this client's INFO/CONFIG."""
    stats = client.info("commandstats")
    skip = {"evalsha", "eval", "eval_ro", "evalsha_ro", "script", "info", "config"}
    calls = {key.removeprefix("cmdstat_"): int(v["calls"]) for key, v in stats.items()}
    return {name: n for name, n in calls.items() if name.split("|")[0] not in skip}


def test_put_get_receive_ack_server_commands() -> None:
    """Issue #11: each command inside a script costs a few µs, so a put is 6 commands, a get
    4 and an ack 3, also for the last message (the body lives in the message record, and
    the bookkeeping keys of an emptied queue go with the next take that finds it empty)."""
    with RedisServer() as server:
        be = RedisBackend.from_url(server.url)
        assert isinstance(be, RedisBackend)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            # Scripts loaded and the thread's put record present.
            assert be.queue_put("q", "warm", '"w"', 0, 0) is True
            assert be.queue_get("q", 5) is not None
            client.config_resetstat()
            assert be.queue_put("q", "m", '"a"', 0, 0) is True
            put = _server_commands(client)
            client.config_resetstat()
            d = be.queue_get("q", 5)
            got = _server_commands(client)
            assert d is not None
            assert (d.id, d.body, d.attempts, d.receipt) == ("m", '"a"', 1, "")
            assert sum(put.values()) == 6, put
            assert got == {"exists": 1, "zpopmin": 1, "hget": 1, "hdel": 1}, got
            assert client.hlen("unidist:{q:q}:m") == 0
            assert client.keys("unidist:{q:q}:b") == []
            assert be.queue_put("q", "m2", '"b"', 0, 0) is True
            client.config_resetstat()
            d = be.queue_receive("q", 30, 5)
            assert d is not None
            received = _server_commands(client)
            client.config_resetstat()
            assert be.queue_ack("q", d.id, d.receipt) is True
            acked = _server_commands(client)
            assert sum(received.values()) == 6, received
            assert acked == {"hget": 1, "zrem": 1, "hdel": 1}, acked
            # The next take finds the queue empty and deletes its bookkeeping keys.
            assert client.keys("unidist:{q:q}:[sn]") != []
            assert be.queue_get("q", 5) is None
            assert client.keys("unidist:*") == [f"unidist:{{q:q}}:r:{be._caller()}"]
        finally:
            client.close()
            be.close()


def test_body_with_spaces_and_newlines_survives_every_state(rbe: RedisBackend) -> None:
    """The body is stored after the record's header: receive, nack, visibility expiry,
    death, requeue and get all give back exactly the body that was put."""
    body = '{"a b": "c  d",\n "e": [1, 2] }  '
    assert rbe.queue_put("q", "m", body, 0, 3) is True
    d = rbe.queue_receive("q", 30, 3)
    assert d is not None
    assert d.body == body
    assert d.priority == 3
    assert rbe.queue_nack("q", "m", d.receipt, 0, 3) is True
    d = rbe.queue_receive("q", 0.05, 2)
    assert d is not None
    assert (d.body, d.attempts) == (body, 2)
    time.sleep(0.1)
    assert rbe.queue_receive("q", 30, 2) is None  # expired at max_attempts: dead
    dead = rbe.queue_dead("q")
    assert [(m.id, m.body, m.attempts, m.priority) for m in dead] == [("m", body, 2, 3)]
    assert rbe.queue_requeue_dead("q") == 1
    d = rbe.queue_get("q", 2)
    assert d is not None
    assert (d.body, d.attempts) == (body, 1)


def test_corrupt_body_names_the_queue_and_message(
    rbe: RedisBackend, raw: redis.Redis, prefix: str
) -> None:
    """A stored body that is not JSON raises CorruptData naming the queue and the message,
    from get() and from receive() (the name is built only when decoding fails)."""
    q = unidist.MessageQueue("q", backend=rbe)
    for _ in range(2):
        msg_id = q.put({"a": 1})
        key = f"{prefix}{{q:q}}:m"
        record = raw.hget(key, msg_id)
        assert record is not None
        header = " ".join(str(record).split(" ", 5)[:5])
        raw.hset(key, msg_id, header + ' {"a":')
    with pytest.raises(CorruptData, match=r"queue 'q' message [0-9a-f]{32}"):
        q.get(timeout=1)
    with pytest.raises(CorruptData, match=r"queue 'q' message [0-9a-f]{32}"):
        q.receive(timeout=1)
