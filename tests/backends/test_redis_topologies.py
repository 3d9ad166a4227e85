"""Redis backend: the retry budget, ``redis+sentinel://`` and ``redis+cluster://`` URLs, and
the Cluster client's routing (listing over every primary, blocking waits, lock hand-off)
against a real three-node Redis Cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import unidist
from backends.redis.server import RedisServer, free_port
from tests.reliability._redis_topologies import ClusterSet, cluster_set
from unidist.backends.redis import RedisBackend
from unidist.backends.redis.keys import hash_slot
from unidist.errors import BackendUnavailable, InvalidURL


# ---------------------------------------------------------------------- retry budget
def test_retry_for_bounds_the_stall_then_backend_unavailable() -> None:
    """With ?retry_for=S a call to a server that is down retries for S seconds, then
    raises BackendUnavailable saying how long it tried."""
    url = f"redis://127.0.0.1:{free_port()}/0?retry_for=0.6&connect_timeout=0.2"
    be = RedisBackend.from_url(url)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"gave up after 0\.\d s") as info:
        be.counter_get("c")
    took = time.monotonic() - t0
    assert 0.55 <= took <= 0.6 + 0.2 + 1.0, took
    assert "127.0.0.1" in str(info.value)


def test_retry_for_rides_through_a_restart() -> None:
    """A call made while the server restarts waits for it within the budget."""
    with RedisServer() as srv:
        be = RedisBackend.from_url(f"{srv.url}?retry_for=5")
        be.ping()
        srv.kill()
        restarter = threading.Timer(0.5, srv.start)
        restarter.start()
        try:
            t0 = time.monotonic()
            be.ping()
            assert 0.4 <= time.monotonic() - t0 <= 5.0
        finally:
            restarter.join()
            be.close()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis+sentinel://127.0.0.1:26379", "service"),
        ("redis+sentinel://127.0.0.1:26379/a/b/c", "service"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "database number"),
        ("redis+sentinel://127.0.0.1:99999/svc", "bad port"),
        ("redis+sentinel://,127.0.0.1/svc", "empty host"),
        ("redis://127.0.0.1/0?sentinel_password=x", r"needs a redis\+sentinel"),
        ("redis+cluster://127.0.0.1:7000/1", "database 0"),
        ("redis+cluster://127.0.0.1:7000?db=2", "database 0"),
        ("redis+cluster://127.0.0.1:7000?retry_for=0", "retry_for"),
    ],
)
def test_bad_topology_urls_are_invalid(url: str, fragment: str) -> None:
    with pytest.raises(InvalidURL, match=fragment):
        RedisBackend.from_url(url)


def test_multi_host_urls_are_redacted() -> None:
    """The password of a Sentinel or Cluster URL is hidden like any other."""
    be = RedisBackend.from_url("redis+sentinel://app:pw-123@a:1,b:2/svc/0")
    assert repr(be) == "<RedisBackend redis+sentinel://app:***@a:1,b:2/svc/0>"
    assert "service 'svc' via Sentinel a:1,b:2" in be.where
    cl = RedisBackend.from_url("redis+cluster://:pw-123@[::1]:7000,h:7001")
    assert "pw-123" not in repr(cl)
    assert cl.where == "Redis Cluster ::1:7000,h:7001"


# ---------------------------------------------------------------------- Cluster
@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSet]:
    with cluster_set() as topo:
        yield topo


@pytest.fixture
def cbe(cluster: ClusterSet) -> Iterator[RedisBackend]:
    be = unidist.connect(f"{cluster.url}?retry_for=5")
    assert isinstance(be, RedisBackend)
    yield be
    unidist.backends.reset()


def test_cluster_objects_spread_over_nodes_and_listing_sees_all(cbe: RedisBackend) -> None:
    """Objects land on different primaries; counters(), buckets() and queues() SCAN them
    all."""
    names = [f"n{i}" for i in range(12)]
    nodes = {hash_slot(cbe.keys.counter(n)) // 5462 for n in names}
    assert len(nodes) > 1  # the names really are spread over several primaries
    for i, n in enumerate(names):
        cbe.counter(n).incr(i + 1)
        cbe.state(n)["k"] = i
        cbe.queue(n).put(i)
    assert cbe.counters() == {n: i + 1 for i, n in enumerate(names)}
    assert cbe.buckets() == sorted(names)
    assert cbe.queues() == sorted(names)


def test_cluster_blocking_waits_and_lock_handoff(cbe: RedisBackend) -> None:
    """A blocked receive is woken by a put and a waiting lock gets the release, through the
    node that owns each object."""
    q = cbe.queue("wake")
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    t.start()
    time.sleep(0.2)
    q.put("hello")
    t.join(10)
    assert got == ["hello"]
    lock = cbe.lock("L", ttl=10)
    assert lock.acquire()
    other = cbe.lock("L", ttl=10)
    waited: list[bool] = []
    t = threading.Thread(target=lambda: waited.append(other.acquire(timeout=10)))
    t.start()
    time.sleep(0.2)
    lock.release()
    t.join(10)
    assert waited == [True]
    assert other.token > lock.token
    other.release()


def test_cluster_follows_a_migrated_slot(cluster: ClusterSet, cbe: RedisBackend) -> None:
    """After the slot of a counter moves to another primary, the client follows MOVED."""
    c = cbe.counter("moving")
    assert c.incr() == 1
    slot = hash_slot(cbe.keys.counter("moving"))
    owner = cluster.owner(slot)
    dst = next(n for n in cluster.nodes if n is not owner)
    assert cluster.migrate(slot, dst) >= 1
    assert cluster.owner(slot) is dst
    assert c.incr() == 2
    assert cbe.counters()["moving"] == 2


def test_cluster_ask_redirect_loads_scripts_on_the_importing_node(
    cluster: ClusterSet, cbe: RedisBackend
) -> None:
    """Mid-migration, a script whose keys already moved is sent to the importing node with
    ASKING, also the EVAL that follows a NOSCRIPT there (the node never ran it)."""
    c = cbe.counter("asked")
    assert c.incr() == 1
    slot = hash_slot(cbe.keys.counter("asked"))
    src = cluster.owner(slot)
    dst = next(n for n in cluster.nodes if n is not src)
    ids = cluster.node_ids()
    with cluster.client(src) as s, cluster.client(dst) as d:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src.port])
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst.port])
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
        d.execute_command("SCRIPT", "FLUSH")
        try:
            assert c.incr() == 2  # src: keys gone -> ASK -> dst: ASKING, NOSCRIPT, ASKING, EVAL
        finally:
            for node in cluster.nodes:
                with cluster.client(node) as n:
                    n.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst.port])
    assert c.get() == 2
