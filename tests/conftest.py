"""Shared fixtures: one real backend of every kind per test, and real redis-servers.

``backend`` is parametrized over ``memory``, ``file`` and ``redis``; every test using it runs
on all three. Tests that need several processes or hosts declare the scope they need with
``@pytest.mark.scope("host")`` (processes of one host: file, redis) or
``@pytest.mark.scope("network")`` (redis); they are only generated for backends that have
that scope, so nothing is ever skipped. Each test gets its own namespace: a fresh
``memory://NAME`` store, a fresh directory, or a fresh Redis key prefix.

The Redis server is started by the suite itself (``backends/redis/server.py``) on a free
loopback port and stopped at the end; a missing ``redis-server`` fails the run loudly.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402
from backends.redis.server import RedisServer  # noqa: E402
from unidist.backends import Backend  # noqa: E402
from unidist.backends.redis import acl  # noqa: E402

BACKENDS = ("memory", "file", "redis")
_SCOPE_RANK = {"process": 0, "host": 1, "network": 2}
_BACKEND_SCOPE = {"memory": "process", "file": "host", "redis": "network"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scope(level): needs a backend shared at least at that level (host, network)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_kind" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("scope")
    need = _SCOPE_RANK[marker.args[0]] if marker else 0
    kinds = [k for k in BACKENDS if _SCOPE_RANK[_BACKEND_SCOPE[k]] >= need]
    metafunc.parametrize("backend_kind", kinds)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server (persistence off) for the whole session."""
    with RedisServer() as server:
        yield server


def redis_acl_url(server: RedisServer, prefix: str) -> str:
    """A URL for a fresh ACL user of ``server`` that may run only the commands unidist needs
    (``unidist.backends.redis.acl``) on keys under ``prefix``: every conformance test on Redis
    runs least-privileged."""
    user, password = f"u{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    with redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", *acl.setuser_args(user, password, prefix))
    return f"redis://{user}:{password}@{server.host}:{server.port}/0?prefix={prefix}"


def make_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, isolated backend URL of ``kind`` for one test."""
    tag = uuid.uuid4().hex[:12]
    if kind == "memory":
        return f"memory://t{tag}"
    if kind == "file":
        path = tmp_path / "unidist-data"
        return f"file://{path}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return redis_acl_url(server, f"t{tag}:")


@pytest.fixture
def backend_url(backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An isolated URL of the parametrized backend kind (usable from child processes too,
    except memory://)."""
    return make_url(backend_kind, request, tmp_path)


@pytest.fixture
def backend(backend_url: str) -> Iterator[Backend]:
    """A connected, isolated backend of each kind; closed after the test."""
    be = unidist.connect(backend_url)
    try:
        yield be
    finally:
        unidist.backends.reset()
