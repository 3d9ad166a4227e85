"""Fixtures for the backend-internals tests: real redis-servers and a reply-dropping proxy.

The servers come from ``backends/redis/server.py`` (free loopback ports); every test gets a
fresh key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends.redis.server import RedisServer  # noqa: E402
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


class DropProxy:
    """A loopback TCP proxy in front of a redis-server that can lose replies.

    While :attr:`drop` is positive, the next reply from the server is swallowed and the
    client connection closed (the command *was* executed): the "ambiguous outcome" case.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.drop = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._closed = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if replies:
                    with self._lock:
                        lose = self.drop > 0
                        if lose:
                            self.drop -= 1
                            self.dropped += 1
                    if lose:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def proxy(rserver: RedisServer) -> Iterator[DropProxy]:
    p = DropProxy(rserver.port)
    yield p
    p.close()
