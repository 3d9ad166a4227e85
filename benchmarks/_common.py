"""Payloads and small helpers shared by the case modules."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

# A queue message: a JSON string whose encoding is exactly 100 bytes.
MESSAGE = "m" * 98
assert len(json.dumps(MESSAGE)) == 100

# A state value: a small JSON object of about 100 bytes.
VALUE: dict[str, Any] = {"owner": "bench", "n": 0, "tags": ["a", "b"], "pad": "v" * 46}
KEYS_PER_WORKER = 1000


def state_key(worker: int, i: int) -> str:
    return f"w{worker}-k{i % KEYS_PER_WORKER}"


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def file_url(env: Any, fsync: str) -> str:
    return f"file://{env.dir}/unidist?fsync={fsync}"


def memory_url(env: Any) -> str:
    return f"memory://{env.tag}"


@lru_cache(maxsize=1)
def sqlite_default_sync() -> str:
    """The ``synchronous`` level a fresh WAL connection gets here (a compile-time default)."""
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(str(Path(d) / "probe.db"))
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            (level,) = conn.execute("PRAGMA synchronous").fetchone()
        finally:
            conn.close()
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))


def w_write_fsync(env: Any, shared: Any, i: int) -> Any:
    # Each worker appends 8 bytes to its own file and fsyncs: what the disk allows.
    fd = os.open(os.path.join(env.dir, f"wf-{i}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pack = struct.Struct("<q").pack

    def run(n: int) -> None:
        for k in range(n):
            os.write(fd, pack(k))
            os.fsync(fd)

    return run, lambda: os.close(fd)
