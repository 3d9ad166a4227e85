"""Fixtures for the backend-internals tests: real redis-servers and a reply-dropping proxy.

The servers come from ``backends/redis/server.py`` (free loopback ports); every test gets a
fresh key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends.redis.server import RedisServer  # noqa: E402
from tests.reliability._redis_proxy import LossyProxy  # noqa: E402
from unidist.backends.redis import RedisBackend  # noqa: E402


@pytest.fixture(scope="session")
def rserver() -> Iterator[RedisServer]:
    """One throwaway redis-server (no persistence, TCP and unix socket) for the session."""
    with RedisServer(unix_socket=True) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def rbe(rserver: RedisServer, prefix: str) -> Iterator[RedisBackend]:
    """A RedisBackend with its own key prefix."""
    be = RedisBackend.from_url(f"{rserver.url}?prefix={prefix}")
    assert isinstance(be, RedisBackend)
    yield be
    be.close()


@pytest.fixture
def raw(rserver: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client on the same server, for looking at keys directly."""
    client = redis.Redis.from_url(rserver.url, decode_responses=True)
    yield client
    client.close()


class DropProxy(LossyProxy):
    """A loopback TCP proxy in front of a redis-server that can lose replies.

    While :attr:`drop` is positive, the next reply from the server is swallowed and the
    client connection closed (the command *was* executed): the "ambiguous outcome" case.
    """

    def __init__(self, target_port: int) -> None:
        self.drop = 0
        super().__init__(target_port, p=0.0, seed=0)

    def _lose(self) -> bool:
        if self.drop > 0:
            self.drop -= 1
            return True
        return False


@pytest.fixture
def proxy(rserver: RedisServer) -> Iterator[DropProxy]:
    p = DropProxy(rserver.port)
    yield p
    p.close()
