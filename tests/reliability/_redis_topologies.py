"""Throwaway Redis topologies for R4: a primary with a replica watched by three Sentinels,
and a three-node Redis Cluster. Everything listens on 127.0.0.1 and is stopped on exit."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from backends.redis.server import RedisSentinel, RedisServer


def _wait(what: str, check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class SentinelSet:
    primary: RedisServer
    replica: RedisServer
    sentinels: list[RedisSentinel]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.sentinels[0].service}/0"


@contextlib.contextmanager
def sentinel_set(count: int = 1) -> Iterator[SentinelSet]:
    """Primary + replica (both ``appendfsync always``) and ``count`` Sentinels (quorum a
    majority), returned once the replica is in sync and every Sentinel knows it and the
    other Sentinels (they find each other within a few seconds)."""
    servers: list[RedisServer] = []
    try:
        primary = RedisServer(aof=True, extra_args=["--repl-diskless-sync-delay", "0"])
        servers.append(primary)
        replica = RedisServer(aof=True, extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
        servers.append(replica)
        with redis.Redis(port=replica.port, decode_responses=True) as r:
            _wait(
                "the replica to sync",
                lambda: r.info("replication").get("master_link_status") == "up",
            )
        sentinels = []
        for _ in range(count):
            sentinels.append(RedisSentinel(primary, quorum=count // 2 + 1))
            servers.append(sentinels[-1])
        for s in sentinels:
            with redis.Redis(port=s.port, decode_responses=True) as c:
                _wait(
                    "the Sentinels to see the replica and each other",
                    lambda c=c: (
                        len(c.sentinel_slaves(s.service)) == 1
                        and len(c.sentinel_sentinels(s.service)) == count - 1
                    ),
                )
        yield SentinelSet(primary, replica, sentinels)
    finally:
        for server in reversed(servers):
            server.stop()


@dataclass
class ClusterSet:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/0"

    def client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(port=node.port, decode_responses=True)

    def node_ids(self) -> dict[int, str]:
        """port -> node id."""
        ids = {}
        for n in self.nodes:
            with self.client(n) as c:
                ids[n.port] = c.execute_command("CLUSTER", "MYID")
        return ids

    def owner(self, slot: int) -> RedisServer:
        with self.client(self.nodes[0]) as c:
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(slot)

    def migrate(self, slot: int, dst: RedisServer, pause: float = 0.0) -> int:
        """Move ``slot`` to ``dst`` key by key (the documented resharding steps), pausing
        ``pause`` seconds between keys so that clients meet the migration half-way;
        returns the keys moved."""
        src = self.owner(slot)
        if src is dst:
            return 0
        ids = self.node_ids()
        moved = 0
        with self.client(src) as s, self.client(dst) as d:
            d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src.port])
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst.port])
            while True:
                keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)
                if not keys:
                    break
                s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                time.sleep(pause)
            for n in self.nodes:
                with self.client(n) as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst.port])
        return moved


@contextlib.contextmanager
def cluster_set(size: int = 3) -> Iterator[ClusterSet]:
    """``size`` primaries (no replicas, ``appendfsync always``) forming one Redis Cluster,
    returned once every node reports ``cluster_state:ok``."""
    nodes: list[RedisServer] = []
    try:
        for _ in range(size):
            nodes.append(
                RedisServer(
                    aof=True,
                    extra_args=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                )
            )
        subprocess.run(
            ["redis-cli", "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        topo = ClusterSet(nodes)
        for n in nodes:
            with topo.client(n) as c:
                _wait(
                    "the cluster to form",
                    lambda c=c: (
                        c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") >= 0
                        and len(c.execute_command("CLUSTER", "SLOTS")) >= size
                    ),
                )
        yield topo
    finally:
        for n in reversed(nodes):
            n.stop()
