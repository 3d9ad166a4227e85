"""Throwaway Redis topologies for R4: a primary with a replica watched by three Sentinels,
and a three-node Redis Cluster. Everything listens on 127.0.0.1 and is stopped on exit."""

from __future__ import annotations

import contextlib
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
