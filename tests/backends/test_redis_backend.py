"""Redis backend internals: URLs and options, errors at the edge, key layout and hash tags,
static scripts, and the lock, counter and state methods of the Backend interface.

Every test talks to a real redis-server started by ``backends/redis/server.py``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import unidist
from backends.redis.server import RedisServer
from unidist.backends.redis import RedisBackend
from unidist.backends.redis import keys as K
from unidist.backends.redis._client import SCRIPT_NAMES, load_scripts
from unidist.errors import BackendUnavailable, CorruptData, InvalidName, InvalidURL, OutcomeUnknown


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_time(raw: redis.Redis) -> float:
    sec, usec = raw.time()
    return sec + usec / 1e6


def _h() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------- URLs and options
def test_unknown_option_is_named() -> None:
    """An option outside the table is InvalidURL naming it (before any connection)."""
    with pytest.raises(InvalidURL, match="'bogus'"):
        RedisBackend.from_url("redis://127.0.0.1:1/0?bogus=1")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis://127.0.0.1:1/0?ssl_cert_reqs=none", "rediss://"),
        ("redis://127.0.0.1:1/x", "database number"),
        ("redis://127.0.0.1:1/1?db=2", "database given twice"),
        ("redis://127.0.0.1:1/0?prefix=a{b}", "prefix"),
        ("redis://127.0.0.1:1/0?prefix=a*", "prefix"),
        ("redis://127.0.0.1:1/0?socket_timeout=0", "socket_timeout"),
        ("redis://127.0.0.1:1/0?retries=-1", "retries"),
        ("unix://", "socket path"),
    ],
)
def test_bad_urls_are_invalid(url: str, fragment: str) -> None:
    """Malformed URLs and option values are InvalidURL saying what is wrong."""
    with pytest.raises(InvalidURL, match=re.escape(fragment)):
        RedisBackend.from_url(url)


def test_options_reach_the_pool() -> None:
    """Typed options configure the pool; construction does not connect."""
    be = RedisBackend.from_url(
        "redis://u:pw@127.0.0.1:1/3?prefix=app:&connect_timeout=0.5&socket_timeout=2&retries=1"
    )
    kw = be._client.pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"]) == ("127.0.0.1", 1, 3)
    assert (kw["username"], kw["password"]) == ("u", "pw")
    assert kw["socket_connect_timeout"] == 0.5
    assert kw["socket_timeout"] == 2
    assert be.keys.prefix == "app:"
    assert be.scope == "network"


def test_rediss_verifies_certificates_by_default() -> None:
    """rediss:// uses TLS with certificate and host name checks unless told otherwise."""
    be = RedisBackend.from_url("rediss://h.example:6380/0?ssl_ca_certs=/etc/ca.pem")
    kw = be._client.pool.connection_kwargs
    assert be._client.pool.connection_class is redis.connection.SSLConnection
    assert kw["ssl_cert_reqs"] == "required"
    assert kw["ssl_check_hostname"] is True
    assert kw["ssl_ca_certs"] == "/etc/ca.pem"
    off = RedisBackend.from_url("rediss://h.example/0?ssl_cert_reqs=none")
    assert off._client.pool.connection_kwargs["ssl_check_hostname"] is False


def test_registry_serves_all_three_schemes(rserver: RedisServer) -> None:
    """connect() maps redis://, rediss:// and unix:// to RedisBackend."""
    try:
        assert isinstance(unidist.connect(rserver.url + "?prefix=reg:"), RedisBackend)
        assert isinstance(unidist.connect("rediss://127.0.0.1:1/0"), RedisBackend)
        assert isinstance(unidist.connect(rserver.unix_url + "&prefix=reg:"), RedisBackend)
    finally:
        unidist.backends.reset()


def test_unix_socket_url_works(rserver: RedisServer, prefix: str) -> None:
    """unix:///path/redis.sock?db=0 reaches the same server."""
    be = RedisBackend.from_url(f"{rserver.unix_url}&prefix={prefix}")
    tcp = RedisBackend.from_url(f"{rserver.url}?prefix={prefix}")
    try:
        be.ping()
        assert be.counter_add("via-unix", 5, _h()) == 5
        assert tcp.counter_get("via-unix") == 5
        assert be.where == str(rserver.socket_path)
    finally:
        be.close()
        tcp.close()


def test_password_is_redacted_in_url_and_repr() -> None:
    """The backend's url and repr never show the password."""
    be = RedisBackend.from_url("redis://alice:s3cret-pw@127.0.0.1:1/0")
    assert "s3cret-pw" not in be.url
    assert "s3cret-pw" not in repr(be)
    assert "alice:***@127.0.0.1:1" in be.url


# ---------------------------------------------------------------------- errors at the edge
def test_unreachable_server_fails_fast_naming_host_port() -> None:
    """Nothing listening: construction is cheap, the first call is BackendUnavailable
    naming host:port within 2 s, and the password never appears."""
    port = _closed_port()
    t0 = time.monotonic()
    be = RedisBackend.from_url(f"redis://:hunter2-pw@127.0.0.1:{port}/0")
    assert time.monotonic() - t0 < 0.1
    for call in (be.ping, lambda: be.counter_get("c"), lambda: be.lock_owners("l")):
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert time.monotonic() - t0 < 2.0
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "hunter2-pw" not in str(info.value)
        assert "hunter2-pw" not in repr(info.value)
        assert "hunter2-pw" not in info.value.url
        assert not isinstance(info.value, OutcomeUnknown)
        assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_silent_server_is_bounded_not_a_hang() -> None:
    """A peer that accepts connections but never answers costs about the timeouts."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        be = RedisBackend.from_url(
            f"redis://127.0.0.1:{port}/0?connect_timeout=0.3&socket_timeout=0.3"
        )
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
            be.ping()
        assert time.monotonic() - t0 < 1.5


def test_non_redis_peer_is_backend_unavailable() -> None:
    """Something that is not Redis on the port gives BackendUnavailable, not a parser error."""
    with socket.create_server(("127.0.0.1", 0)) as fake:
        port = fake.getsockname()[1]

        def answer() -> None:
            conn, _ = fake.accept()
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            time.sleep(0.5)
            conn.close()

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        be = RedisBackend.from_url(f"redis://127.0.0.1:{port}/0?retries=0")
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
            be.ping()
        t.join()


def test_wrong_password_is_authentication_failed_without_the_password() -> None:
    """A wrong or missing password is BackendUnavailable saying authentication failed; the
    password appears in neither message nor repr."""
    with RedisServer(password="right-pass") as srv:
        wrong = RedisBackend.from_url(f"redis://:wrong-pass-123@127.0.0.1:{srv.port}/0")
        with pytest.raises(BackendUnavailable, match="authentication failed") as info:
            wrong.ping()
        for text in (str(info.value), repr(info.value), info.value.url, repr(wrong)):
            assert "wrong-pass-123" not in text
            assert "right-pass" not in text
        assert f"127.0.0.1:{srv.port}" in str(info.value)
        missing = RedisBackend.from_url(f"redis://127.0.0.1:{srv.port}/0")
        with pytest.raises(BackendUnavailable, match="authentication failed"):
            missing.counter_get("c")
        right = RedisBackend.from_url(srv.url)
        right.ping()
        right.close()


def test_server_restart_is_survived_and_outage_is_reported() -> None:
    """While the server is down calls raise BackendUnavailable quickly; after a restart on
    the same port the same backend object works again (no stale connections)."""
    with RedisServer() as srv:
        be = RedisBackend.from_url(srv.url)
        assert be.counter_add("c", 1, _h()) == 1
        srv.kill()
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable):
            be.counter_get("c")
        assert time.monotonic() - t0 < 2.0
        srv.start()
        assert be.counter_get("c") == 0  # no persistence: the data is gone, the handle works
        assert be.counter_add("c", 2, _h()) == 2
        be.close()


def test_aof_always_keeps_acknowledged_writes_across_kill_9() -> None:
    """With appendfsync always, every acknowledged increment, state write and put survives
    SIGKILL of the server."""
    with RedisServer(aof=True) as srv:
        be = RedisBackend.from_url(srv.url)
        for _ in range(50):
            be.counter_add("c", 1, _h())
        be.state_set("b", "k", '"v"')
        assert be.queue_put("q", "m1", '"body"', 0, 0)
        srv.kill()
        srv.start()
        assert be.counter_get("c") == 50
        assert be.state_get("b", "k") == '"v"'
        got = be.queue_get("q", 5)
        assert got is not None
        assert got.body == '"body"'
        be.close()


def test_wrongtype_data_under_the_prefix_is_corrupt_data(
    rbe: RedisBackend, raw: redis.Redis
) -> None:
    """A key of the wrong type or a non-integer counter is CorruptData, not a crash."""
    raw.hset(rbe.keys.counter("c"), "x", "1")
    with pytest.raises(CorruptData):
        rbe.counter_add("c", 1, _h())
    raw.set(rbe.keys.counter("d"), "not-a-number")
    with pytest.raises(CorruptData):
        rbe.counter_get("d")
    with pytest.raises(CorruptData):
        rbe.counter_add("d", 1, _h())
    raw.set(rbe.keys.state("b"), "x")
    with pytest.raises(CorruptData):
        rbe.state_get("b", "k")


# ---------------------------------------------------------------------- lost replies (R3)
def test_lost_reply_counter_add_is_applied_once(proxy: Any, prefix: str) -> None:
    """A lost INCR reply is retried with the same request id: applied exactly once."""
    p = proxy
    be = RedisBackend.from_url(f"redis://127.0.0.1:{p.port}/0?prefix={prefix}")
    try:
        assert be.counter_add("c", 10, _h()) == 10
        p.drop = 1
        assert be.counter_add("c", 5, _h()) == 15
        assert p.dropped == 1
        assert be.counter_get("c") == 15
    finally:
        be.close()


def test_lost_reply_of_non_idempotent_ops_is_outcome_unknown(proxy: Any, prefix: str) -> None:
    """queue_get and state_delete are never retried after sending; lock_release and
    queue_ack whose retry finds nothing to do raise OutcomeUnknown; puts are not duplicated."""
    p = proxy
    be = RedisBackend.from_url(f"redis://127.0.0.1:{p.port}/0?prefix={prefix}")
    try:
        # Load every script first, so the dropped reply is the command's own, not NOSCRIPT.
        be.queue_get("warm", 5)
        be.state_delete("warm", "k")
        be.lock_release("warm", "h")
        be.lock_acquire("warm", 1, "h", {}, 1)
        be.queue_ack("warm", "m", "1.x")
        be.queue_put("q", "m1", "1", 0, 0)
        be.queue_put("q", "m2", "2", 0, 0)
        p.drop = 1
        with pytest.raises(OutcomeUnknown):
            be.queue_get("q", 5)
        assert be.queue_stats("q")["ready"] == 1  # it did take one

        be.state_set("b", "k", "1")
        p.drop = 1
        with pytest.raises(OutcomeUnknown):
            be.state_delete("b", "k")
        assert be.state_get("b", "k") is None

        holder = _h()
        assert be.lock_acquire("l", 1, holder, {}, None) is not None
        p.drop = 1
        with pytest.raises(OutcomeUnknown):
            be.lock_release("l", holder)
        assert be.lock_owners("l") == []

        p.drop = 1
        assert be.queue_put("q", "m3", "3", 0, 0) is True  # retried, recognised as its own
        assert be.queue_stats("q")["ready"] == 2
        d = be.queue_receive("q", 30, 5)
        assert d is not None
        p.drop = 1
        with pytest.raises(OutcomeUnknown):
            be.queue_ack("q", d.id, d.receipt)
        assert be.queue_stats("q")["in_flight"] == 0

        p.drop = 1
        g = be.lock_acquire("l2", 1, holder, {}, None)  # retried: same grant, one holder
        assert g is not None
        assert len(be.lock_owners("l2")) == 1
    finally:
        be.close()


# ---------------------------------------------------------------------- keys and slots
def test_key_layout_and_prefix() -> None:
    """Keys are <prefix>{<kind>:<name>}[:suffix]."""
    ks = K.KeySpace("unidist:")
    assert ks.counter("jobs") == "unidist:{c:jobs}"
    assert ks.state("config") == "unidist:{s:config}"
    assert ks.lock("backup")[0] == "unidist:{l:backup}:h"
    assert ks.queue("work")[1] == "unidist:{q:work}:r"
    assert ks.group("g")[0] == "unidist:{g:g}:e"
    assert ks.name_of("unidist:{q:work}:m", K.QUEUE, ":m") == "work"
    assert ks.name_of("unidist:{q:work}:m:x", K.QUEUE, ":m") is None
    assert ks.name_of("other:{q:work}:m", K.QUEUE, ":m") is None


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a{b}", "a b", "x\x00", "*", "a" * 201])
def test_invalid_names_never_reach_the_server(bad: str) -> None:
    """A bad name is InvalidName before any I/O (the server here does not even exist)."""
    be = RedisBackend.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    calls = [
        lambda: be.counter_add(bad, 1, "r"),
        lambda: be.state_set(bad, "k", "1"),
        lambda: be.lock_acquire(bad, 1, "h", {}, None),
        lambda: be.queue_put(bad, "m", "1", 0, 0),
        lambda: be.queue_put("q", bad, "1", 0, 0),
        lambda: be.members(bad),
        lambda: be.lock_wait(bad, 0.1),
        lambda: be.queue_wait(bad, 0.1),
    ]
    for call in calls:
        with pytest.raises(InvalidName):
            call()


def test_hash_slot_matches_redis_py() -> None:
    """Our CRC16 slot function agrees with redis-py's cluster key_slot."""
    for key in ["123456789", "unidist:{q:work}:r", "{}x", "a{}{b}", "{user1000}.following"]:
        assert K.hash_slot(key) == key_slot(key.encode())


def test_every_key_of_one_object_is_in_one_slot(rbe: RedisBackend, raw: redis.Redis) -> None:
    """After exercising every family, each stored key is under the prefix, carries a hash
    tag, and shares its object's Cluster slot."""
    h1, h2 = _h(), _h()
    rbe.lock_acquire("lk", 1, h1, {}, 30)
    rbe.lock_acquire("lk", 1, h2, {}, 30, waiting=True)
    rbe.lock_release("lk", h1)
    rbe.counter_add("ctr", 1, _h())
    rbe.state_set("bkt", "k", "1")
    rbe.queue_put("qq", "m1", "1", 0, 0)
    rbe.queue_put("qq", "m2", "1", 60, 0)
    rbe.queue_receive("qq", 30, 1)
    rbe.member_heartbeat("grp", "me", {}, 30)
    stored = list(raw.scan_iter(match=rbe.keys.prefix + "*"))
    assert len(stored) >= 12
    objects: dict[str, set[int]] = {}
    for key in stored:
        tag = re.match(re.escape(rbe.keys.prefix) + r"\{([a-z]):([^}]+)\}", key)
        assert tag is not None, key
        objects.setdefault(tag.group(0), set()).add(key_slot(key.encode()))
    assert {k.split("{")[1].rstrip("}") for k in objects} == {
        "l:lk",
        "c:ctr",
        "s:bkt",
        "q:qq",
        "g:grp",
    }
    for slots in objects.values():
        assert len(slots) == 1


def test_scripts_are_static_package_files() -> None:
    """Every script is a .lua file shipped in the package, loaded verbatim apart from the
    shared parts it names with ``-- @include`` (themselves package files); no Lua is
    assembled from data in Python."""
    folder = resources.files("unidist.backends.redis").joinpath("scripts")
    files = {p.name for p in folder.iterdir() if p.name.endswith(".lua")}
    shared = {f for f in files if f.startswith("_")}
    assert files - shared == {f"{n}.lua" for n in SCRIPT_NAMES}
    for name, script in load_scripts().items():
        text = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        for part in shared:
            text = text.replace(
                f"-- @include {part}", folder.joinpath(part).read_text(encoding="utf-8")
            )
        assert script.source == text
        assert "-- @include" not in script.source
        assert "redis.call" in script.source
    src = Path(K.__file__).parent
    for py in src.glob("*.py"):
        text = py.read_text(encoding="utf-8")
        assert "redis.call(" not in text, py
        assert "redis.pcall(" not in text, py


# ---------------------------------------------------------------------- locks
def test_grant_fields_and_tokens(rbe: RedisBackend, raw: redis.Redis) -> None:
    """A grant carries holder, a token >= server µs, server-clock acquired_at/expires_at;
    tokens strictly increase across acquisitions and survive release."""
    before = _server_time(raw)
    g1 = rbe.lock_acquire("l", 1, "h1", {"host": "a"}, 10.0)
    assert g1 is not None
    assert g1.holder == "h1"
    assert g1.name == "l"
    assert before - 0.01 <= g1.acquired_at <= _server_time(raw) + 0.01
    assert g1.expires_at is not None
    assert abs(g1.expires_at - g1.acquired_at - 10.0) < 1e-3
    assert g1.token >= int(before * 1e6)
    assert rbe.lock_release("l", "h1") is True
    tokens = [g1.token]
    for i in range(20):
        g = rbe.lock_acquire("l", 1, f"x{i}", {}, None)
        assert g is not None
        assert g.expires_at is None
        tokens.append(g.token)
        rbe.lock_release("l", f"x{i}")
    assert tokens == sorted(set(tokens))


def test_tokens_increase_across_restart_without_persistence() -> None:
    """Fencing tokens keep increasing after the server restarts and forgets everything."""
    with RedisServer() as srv:
        be = RedisBackend.from_url(srv.url)
        g1 = be.lock_acquire("l", 1, "a", {}, None)
        srv.kill()
        srv.start()
        assert be.lock_owners("l") == []
        g2 = be.lock_acquire("l", 1, "b", {}, None)
        assert g1 is not None
        assert g2 is not None
        assert g2.token > g1.token
        be.close()


def test_retried_acquire_returns_the_same_grant(rbe: RedisBackend) -> None:
    """lock_acquire with a holder that already holds returns its grant (idempotent retry)."""
    g1 = rbe.lock_acquire("l", 1, "h", {}, 5)
    g2 = rbe.lock_acquire("l", 1, "h", {}, 5)
    assert g1 == g2
    assert len(rbe.lock_owners("l")) == 1


def test_fifo_among_waiters(rbe: RedisBackend) -> None:
    """Waiters are granted in registration order; a newcomer never jumps the queue."""
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    assert rbe.lock_acquire("l", 1, "w1", {}, None, waiting=True) is None
    assert rbe.lock_acquire("l", 1, "w2", {}, None, waiting=True) is None
    assert rbe.lock_release("l", "a")
    assert rbe.lock_acquire("l", 1, "new", {}, None) is None
    assert rbe.lock_acquire("l", 1, "w2", {}, None, waiting=True) is None
    g = rbe.lock_acquire("l", 1, "w1", {}, None, waiting=True)
    assert g is not None
    assert rbe.lock_release("l", "w1")
    assert rbe.lock_acquire("l", 1, "w2", {}, None, waiting=True) is not None


def test_waiter_registration_lapses(rbe: RedisBackend) -> None:
    """A waiter that stops refreshing blocks others only for WAITER_TTL."""
    rbe.WAITER_TTL = 0.2  # type: ignore[misc]
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    assert rbe.lock_acquire("l", 1, "dead", {}, None, waiting=True) is None
    rbe.lock_release("l", "a")
    assert rbe.lock_acquire("l", 1, "late", {}, None) is None
    time.sleep(0.3)
    assert rbe.lock_acquire("l", 1, "late", {}, None) is not None


def test_release_hands_the_slot_to_the_head_waiter(rbe: RedisBackend) -> None:
    """A release gives the slot straight to the FIFO head: its blocked lock_wait claims it
    and the next lock_acquire returns it with a larger token."""
    g0 = rbe.lock_acquire("l", 1, "a", {"who": "a"}, None)
    assert g0 is not None
    assert rbe.lock_acquire("l", 1, "w", {"who": "w"}, 30, waiting=True) is None
    rbe.lock_release("l", "a")
    assert [o["who"] for o in rbe.lock_owners("l")] == ["w"]
    rbe.lock_wait("l", 1.0, "w")
    g = rbe.lock_acquire("l", 1, "w", {"who": "w"}, 30, waiting=True)
    assert g is not None
    assert g.token > g0.token
    assert g.expires_at is not None
    assert abs(g.expires_at - g.acquired_at - 30) < 1e-3
    assert rbe.lock_release("l", "w") is True


def test_unclaimed_handoff_to_a_dead_waiter_lapses(rbe: RedisBackend) -> None:
    """A waiter that died after registering gets the slot handed over but never claims it;
    after WAITER_TTL the slot goes to the next waiter, even for a lock without ttl."""
    rbe.WAITER_TTL = 0.3  # type: ignore[misc]
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    assert rbe.lock_acquire("l", 1, "dead", {}, None, waiting=True) is None
    assert rbe.lock_acquire("l", 1, "next", {}, None, waiting=True) is None
    rbe.lock_release("l", "a")  # handed to "dead", which never calls again
    assert rbe.lock_acquire("l", 1, "next", {}, None, waiting=True) is None
    time.sleep(0.35)
    g = rbe.lock_acquire("l", 1, "next", {}, None, waiting=True)
    assert g is not None
    assert [o["holder"] for o in rbe.lock_owners("l")] == ["next"]
    time.sleep(0.35)  # a claimed/normal grant without ttl does not lapse
    assert [o["holder"] for o in rbe.lock_owners("l")] == ["next"]


def test_claimed_handoff_outlives_the_waiter_ttl(rbe: RedisBackend) -> None:
    """A grant claimed by a blocked lock_wait is a normal lease (no ttl: held until release)."""
    rbe.WAITER_TTL = 0.3  # type: ignore[misc]
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    assert rbe.lock_acquire("l", 1, "w", {}, None, waiting=True) is None
    t = threading.Thread(target=rbe.lock_wait, args=("l", 2.0, "w"))
    t.start()
    time.sleep(0.1)
    rbe.lock_release("l", "a")
    t.join(3)
    time.sleep(0.5)
    assert [o["holder"] for o in rbe.lock_owners("l")] == ["w"]
    assert rbe.lock_acquire("l", 1, "x", {}, None) is None
    assert rbe.lock_release("l", "w") is True


def test_cancel_after_handoff_passes_the_slot_on(rbe: RedisBackend) -> None:
    """A waiter that gives up after a slot was handed to it frees that slot for the next."""
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    rbe.lock_acquire("l", 1, "w1", {}, None, waiting=True)
    rbe.lock_acquire("l", 1, "w2", {}, None, waiting=True)
    rbe.lock_release("l", "a")  # handed to w1
    rbe.lock_cancel_wait("l", "w1")  # w1 timed out at that very moment
    assert [o["holder"] for o in rbe.lock_owners("l")] == ["w2"]
    assert rbe.lock_acquire("l", 1, "w2", {}, None, waiting=True) is not None


def test_cancel_wait_lets_the_next_waiter_in(rbe: RedisBackend) -> None:
    """lock_cancel_wait removes the registration so the next waiter is first."""
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    rbe.lock_acquire("l", 1, "w1", {}, None, waiting=True)
    rbe.lock_acquire("l", 1, "w2", {}, None, waiting=True)
    rbe.lock_release("l", "a")
    rbe.lock_cancel_wait("l", "w1")
    assert rbe.lock_acquire("l", 1, "w2", {}, None, waiting=True) is not None


def test_lease_expiry_release_and_renew(rbe: RedisBackend) -> None:
    """An expired lease frees the slot; the old holder's release/renew return False and
    never touch the new holder; renew extends by the server clock."""
    g = rbe.lock_acquire("l", 1, "old", {}, 0.2)
    assert g is not None
    assert rbe.lock_acquire("l", 1, "new", {}, None) is None
    time.sleep(0.3)
    g2 = rbe.lock_acquire("l", 1, "new", {}, 10)
    assert g2 is not None
    assert g2.token > g.token
    assert rbe.lock_release("l", "old") is False
    assert rbe.lock_renew("l", "old", 10) is False
    assert [o["holder"] for o in rbe.lock_owners("l")] == ["new"]
    exp = rbe.lock_renew("l", "new", 30)
    assert isinstance(exp, float)
    assert exp > g2.acquired_at + 29
    assert rbe.lock_renew("l", "new", None) is None
    assert rbe.lock_owners("l")[0]["expires_at"] is None
    assert rbe.lock_release("l", "new") is True
    assert rbe.lock_release("l", "new") is False


def test_semaphore_slots_owners_and_listing(rbe: RedisBackend) -> None:
    """limit=3 grants three holders; owners carry info and are ordered; locks() lists live
    ones only; lock_break frees everything."""
    for i in range(3):
        assert rbe.lock_acquire("s", 3, f"h{i}", {"pid": i}, 60) is not None
    assert rbe.lock_acquire("s", 3, "h3", {}, 60) is None
    owners = rbe.lock_owners("s")
    assert [o["holder"] for o in owners] == ["h0", "h1", "h2"]
    assert [o["pid"] for o in owners] == [0, 1, 2]
    assert all(set(o) >= {"token", "acquired_at", "expires_at"} for o in owners)
    rbe.lock_acquire("gone", 1, "x", {}, 0.05)
    time.sleep(0.1)
    assert set(rbe.locks()) == {"s"}
    assert rbe.lock_break("s") == 3
    assert rbe.locks() == {}
    assert rbe.lock_acquire("s", 3, "h3", {}, 60) is not None


def test_lock_wait_wakes_the_head_waiter_promptly(rbe: RedisBackend) -> None:
    """A release wakes the FIFO head's lock_wait at once (no polling interval)."""
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    woke: list[float] = []

    def waiter() -> None:
        assert rbe.lock_acquire("l", 1, "w", {}, None, waiting=True) is None
        t0 = time.monotonic()
        rbe.lock_wait("l", 5.0, "w")
        woke.append(time.monotonic() - t0)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    rbe.lock_release("l", "a")
    t.join(5)
    assert woke
    assert 0.2 < woke[0] < 0.5
    assert rbe.lock_acquire("l", 1, "w", {}, None, waiting=True) is not None


def test_lock_wait_blocks_without_busy_spinning(rbe: RedisBackend, raw: redis.Redis) -> None:
    """With nothing happening, lock_wait blocks for its timeout using one command."""
    assert rbe.lock_acquire("l", 1, "a", {}, None)
    assert rbe.lock_acquire("l", 1, "w", {}, None, waiting=True) is None
    before = int(raw.info("stats")["total_commands_processed"])
    t0 = time.monotonic()
    rbe.lock_wait("l", 0.5, "w")
    elapsed = time.monotonic() - t0
    after = int(raw.info("stats")["total_commands_processed"])
    assert 0.45 < elapsed < 1.0
    assert after - before <= 3  # our BLPOP plus the INFO itself


def test_lock_wait_is_bounded_by_the_earliest_lease(rbe: RedisBackend) -> None:
    """A waiter behind a ttl holder wakes when the lease ends, not at its own timeout."""
    assert rbe.lock_acquire("l", 1, "a", {}, 0.3)
    assert rbe.lock_acquire("l", 1, "w", {}, None, waiting=True) is None
    t0 = time.monotonic()
    rbe.lock_wait("l", 5.0, "w")
    assert time.monotonic() - t0 < 0.6
    assert rbe.lock_acquire("l", 1, "w", {}, None, waiting=True) is not None


def test_uncontended_acquire_and_release_stay_lean(rbe: RedisBackend, raw: redis.Redis) -> None:
    """With nobody waiting, acquire and release skip the waiter upkeep: few commands inside
    the scripts, no wake-up push, and the grant is still a normal one."""
    h = _h()
    assert rbe.lock_acquire("lean", 1, h, {}, 30)
    assert rbe.lock_release("lean", h)
    raw.config_resetstat()
    g = rbe.lock_acquire("lean", 1, h, {"x": 1}, 30)
    assert g is not None
    assert rbe.lock_owners("lean")[0]["x"] == 1
    raw.config_resetstat()
    assert rbe.lock_acquire("lean", 1, h, {}, 30) == g  # a retry finds its grant
    assert rbe.lock_release("lean", h)
    stats = raw.info("commandstats")
    inner = {k: v["calls"] for k, v in stats.items() if k.startswith("cmdstat_")}
    for name in ("evalsha", "config|resetstat", "info"):
        inner.pop(f"cmdstat_{name}", None)
    assert "cmdstat_rpush" not in inner
    assert "cmdstat_zrangebyscore" in inner  # the retry settled the held lock
    assert sum(inner.values()) <= 16, inner
    assert raw.exists(*rbe.keys.lock("lean")[1:4], rbe.keys.lock("lean")[5]) == 0
    g2 = rbe.lock_acquire("lean", 1, h, {}, 30)
    assert g2 is not None
    assert g2.token > g.token


def test_quiet_release_leaves_ended_leases_to_the_next_acquire(rbe: RedisBackend) -> None:
    """A semaphore slot whose lease ended is freed by the next acquire, even when the
    releases before it took the quiet path."""
    assert rbe.lock_acquire("s", 2, "short", {}, 0.2)
    assert rbe.lock_acquire("s", 2, "a", {}, 30)
    assert rbe.lock_acquire("s", 2, "b", {}, 30) is None
    time.sleep(0.3)
    assert not rbe.lock_release("s", "short")
    assert rbe.lock_acquire("s", 2, "b", {}, 30) is not None
    assert [o["holder"] for o in rbe.lock_owners("s")] == ["a", "b"]


def test_generic_lock_wait_is_woken_by_a_release(rbe: RedisBackend, raw: redis.Redis) -> None:
    """A lock_wait without a registration announces itself, so a release wakes it at once;
    releases with nobody waiting push nothing."""
    assert rbe.lock_acquire("gw", 1, "a", {}, None)
    assert rbe.lock_release("gw", "a")
    assert raw.exists(rbe.keys.lock("gw")[5]) == 0
    assert rbe.lock_acquire("gw", 1, "a", {}, None)
    woke: list[float] = []

    def waiter() -> None:
        t0 = time.monotonic()
        rbe.lock_wait("gw", 5.0)
        woke.append(time.monotonic() - t0)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert rbe.lock_release("gw", "a")
    t.join(5)
    assert woke
    assert 0.2 < woke[0] < 1.0


def test_contended_lock_is_fair_and_exclusive(rbe: RedisBackend) -> None:
    """Four threads x 15 acquisitions through the wait protocol: never two holders, every
    thread gets its turns, and FIFO keeps the counts equal."""
    active = 0
    max_active = 0
    counts = [0] * 4
    guard = threading.Lock()
    stop = threading.Event()

    def worker(i: int) -> None:
        nonlocal active, max_active
        while not stop.is_set():
            holder = _h()
            g = rbe.lock_acquire("l", 1, holder, {}, None, waiting=True)
            while g is None:
                rbe.lock_wait("l", 0.5, holder)
                g = rbe.lock_acquire("l", 1, holder, {}, None, waiting=True)
            with guard:
                active += 1
                max_active = max(max_active, active)
            time.sleep(0.001)
            with guard:
                active -= 1
                counts[i] += 1
                if sum(counts) >= 60:
                    stop.set()
            assert rbe.lock_release("l", holder)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert max_active == 1
    assert min(counts) >= 1
    assert max(counts) <= 2 * min(counts) + 2


# ---------------------------------------------------------------------- counters
def test_counter_add_get_set_and_dedupe(rbe: RedisBackend) -> None:
    """Missing counter is 0; request ids dedupe; set overwrites; counters() lists all."""
    assert rbe.counter_get("c") == 0
    assert rbe.counter_add("c", 5, "r1") == 5
    assert rbe.counter_add("c", 5, "r1") == 5
    assert rbe.counter_add("c", -7, "r2") == -2
    rbe.counter_set("d", 2**63 - 1)
    assert rbe.counter_get("d") == 2**63 - 1
    assert rbe.counters() == {"c": -2, "d": 2**63 - 1}


def test_counter_results_beyond_2_53_are_exact(rbe: RedisBackend) -> None:
    """Lua sees INCRBY's reply as a double; results it cannot hold exactly are read back."""
    for start in (2**53 - 2, -(2**53) + 2, 2**63 - 10, -(2**63) + 10):
        rbe.counter_set("big", start)
        step = 1 if start > 0 else -1
        for i in range(1, 5):
            rid = _h()
            assert rbe.counter_add("big", step, rid) == start + i * step
            assert rbe.counter_add("big", step, rid) == start + i * step  # dedupe
        assert rbe.counter_get("big") == start + 4 * step


def test_counter_overflow_changes_nothing(rbe: RedisBackend, raw: redis.Redis) -> None:
    """Leaving the signed 64-bit range is OverflowError and nothing changes (not even a key
    being created); deltas beyond 64 bits work when the result fits."""
    rbe.counter_set("c", 2**63 - 2)
    with pytest.raises(OverflowError):
        rbe.counter_add("c", 2, _h())
    assert rbe.counter_get("c") == 2**63 - 2
    with pytest.raises(OverflowError):
        rbe.counter_add("fresh", -(2**64), _h())
    assert raw.exists(rbe.keys.counter("fresh")) == 0
    with pytest.raises(OverflowError):
        rbe.counter_add("fresh", 2**63, _h())
    assert raw.exists(rbe.keys.counter("fresh")) == 0
    rbe.counter_set("n", -(2**63))
    assert rbe.counter_add("n", 2**64 - 1, _h()) == 2**63 - 1
    with pytest.raises(OverflowError):
        rbe.counter_set("n", 2**63)


# ---------------------------------------------------------------------- state buckets
def test_state_methods(rbe: RedisBackend) -> None:
    """get/set/update/delete/len/items/clear/buckets on one hash per bucket."""
    assert rbe.state_get("b", "k") is None
    rbe.state_set("b", "k", '{"a":1}')
    rbe.state_update("b", {"x": "1", "y": "[2]", "": '"empty key"'})
    assert rbe.state_items("b") == {"k": '{"a":1}', "x": "1", "y": "[2]", "": '"empty key"'}
    assert rbe.state_len("b") == 4
    assert rbe.state_delete("b", "x") == "1"
    assert rbe.state_delete("b", "x") is None
    rbe.state_set("other", "k", "1")
    assert rbe.buckets() == ["b", "other"]
    rbe.state_clear("b")
    assert rbe.state_len("b") == 0
    assert rbe.buckets() == ["other"]


def test_state_cas_semantics(rbe: RedisBackend) -> None:
    """expected None matches absent or null; new None deletes; mismatch changes nothing."""
    assert rbe.state_cas("b", "k", None, "1") is True
    assert rbe.state_cas("b", "k", None, "2") is False
    assert rbe.state_cas("b", "k", "2", "3") is False
    assert rbe.state_get("b", "k") == "1"
    assert rbe.state_cas("b", "k", "1", "null") is True
    assert rbe.state_cas("b", "k", None, "4") is True
    assert rbe.state_cas("b", "k", "4", None) is True
    assert rbe.state_get("b", "k") is None
    assert rbe.state_cas("b", "k", None, None) is True
    assert rbe.state_len("b") == 0


def test_state_update_is_all_or_nothing_for_readers(rbe: RedisBackend) -> None:
    """A reader never sees half of an update (one HSET)."""
    items = {f"k{i}": str(i) for i in range(200)}
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(len(rbe.state_items("b")))

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(20):
        rbe.state_update("b", items)
        rbe.state_clear("b")
    done.set()
    t.join()
    assert set(seen) <= {0, 200}


def test_any_number_of_threads_can_use_one_backend(rbe: RedisBackend) -> None:
    """Threads come and go: the 150th short-lived thread works like the first (no pool cap)."""
    errors: list[BaseException] = []

    def one() -> None:
        try:
            rbe.counter_add("threads", 1, uuid.uuid4().hex)
        except BaseException as exc:  # recorded for the assertion below
            errors.append(exc)

    for _ in range(150):
        t = threading.Thread(target=one)
        t.start()
        t.join()
    assert errors == []
    assert rbe.counter_get("threads") == 150


def test_counter_dedupe_records_stay_few(rbe: RedisBackend, raw: redis.Redis, prefix: str) -> None:
    """Many increments leave one dedupe record per calling thread, not one per increment."""
    for _ in range(500):
        rbe.counter_add("few", 1, uuid.uuid4().hex)
    keys = [k for k in raw.scan_iter(match=f"{prefix}*") if ":r:" in k]
    assert len(keys) == 1
    assert rbe.counter_get("few") == 500
