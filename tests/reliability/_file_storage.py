"""Raw storage fingerprints for the bad-input scenarios (B1, B3): the bytes a backend holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import redis

from unidist.backends import Backend


def _tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = Path(dirpath) / f
            out[os.path.relpath(p, root)] = p.read_bytes()
    return out


def fingerprint(backend: Backend, backend_kind: str, request: pytest.FixtureRequest) -> Any:
    """Everything the backend stores, byte for byte where the storage is reachable:
    the data directory tree (file), every key under the prefix with its DUMP (redis), the
    observable state of the test's objects (memory)."""
    if backend_kind == "file":
        root = Path(backend.url.partition("://")[2].partition("?")[0])
        return _tree(root)
    if backend_kind == "redis":
        server = request.getfixturevalue("redis_server")
        prefix = backend.url.partition("prefix=")[2].partition("&")[0]
        r = redis.Redis.from_url(server.url)
        try:
            keys = sorted(r.scan_iter(match=prefix + "*", count=1000))
            return {k: r.dump(k) for k in keys}
        finally:
            r.close()
    return (
        backend.counters(),
        {b: backend.state_items(b) for b in backend.buckets()},
        {q: backend.queue_stats(q) for q in backend.queues()},
    )
