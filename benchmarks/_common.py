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


SIZES_ENV = "UNIDIST_BENCH_SIZES"  # the sizes cases_sizes registers (set by bench_sizes)
MIN_SIZE = 16  # bytes: the smallest payload bench_sizes accepts


def parse_sizes(text: str) -> list[int]:
    """``"100,10240,1048576"`` -> sorted sizes; ValueError names what is wrong."""
    sizes: set[int] = set()
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = 1
        for suffix, m in (("kib", 1024), ("k", 1024), ("mib", 1 << 20), ("m", 1 << 20)):
            if part.endswith(suffix):
                part, mult = part[: -len(suffix)], m
                break
        try:
            n = int(part) * mult
        except ValueError:
            raise ValueError(
                f"size {part!r} is not a number of bytes (e.g. 100, 10k, 1m)"
            ) from None
        if n < MIN_SIZE or n > (64 << 20):
            raise ValueError(f"size {n} bytes is outside {MIN_SIZE} B .. 64 MiB")
        sizes.add(n)
    if not sizes:
        raise ValueError("no sizes given")
    return sorted(sizes)


def fmt_size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


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
