"""Counters: increments of one shared counter by every worker. Issues 3 and 11."""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from typing import Any

from _common import file_url, memory_url, redis_client, w_write_fsync
from _harness import impl, target

OP = "counter increment (all workers on one counter)"


# ------------------------------------------------------------------------------ memory
def w_unidist_memory(env: Any, shared: Any, i: int) -> Any:
    import unidist

    counter = unidist.SharedCounter("bench", backend=memory_url(env))

    def run(n: int) -> None:
        incr = counter.incr
        for _ in range(n):
            incr()

    return run


def s_dict_lock(env: Any) -> Any:
    return {"lock": threading.Lock(), "d": {"bench": 0}}


def w_dict_lock(env: Any, shared: Any, i: int) -> Any:
    lock, d = shared["lock"], shared["d"]

    def run(n: int) -> None:
        for _ in range(n):
            with lock:
                d["bench"] += 1

    return run


U_MEM = "counters.memory.unidist"
impl(
    id=U_MEM,
    group="counters",
    backend="memory",
    primitive=OP,
    label="unidist SharedCounter",
    role="unidist",
    durability="in-process, no snapshot",
    worker=w_unidist_memory,
    kinds=("thread",),
)
impl(
    id="counters.memory.dict_lock",
    group="counters",
    backend="memory",
    primitive=OP,
    label="dict + threading.Lock",
    role="limit",
    durability="in-process",
    worker=w_dict_lock,
    setup=s_dict_lock,
    kinds=("thread",),
    compare_to=U_MEM,
)


# ------------------------------------------------------------------------------ redis
def w_unidist_redis(env: Any, shared: Any, i: int) -> Any:
    import unidist

    counter = unidist.SharedCounter(f"bench-{env.tag}", backend=env.redis_url())

    def run(n: int) -> None:
        incr = counter.incr
        for _ in range(n):
            incr()

    return run


def w_incr(env: Any, shared: Any, i: int) -> Any:
    r = redis_client(env.redis_url())
    key = f"bench:{env.tag}:incr"

    def run(n: int) -> None:
        incr = r.incr
        for _ in range(n):
            incr(key)

    return run, r.close


def w_incr_pipelined(env: Any, shared: Any, i: int) -> Any:
    r = redis_client(env.redis_url())
    key = f"bench:{env.tag}:incr"

    def run(n: int) -> int:
        for _ in range(n):
            pipe = r.pipeline(transaction=False)
            for _ in range(100):
                pipe.incr(key)
            pipe.execute()
        return n * 100

    return run, r.close


U_REDIS = "counters.redis.unidist"
REDIS_DUR = "server: no persistence"
impl(
    id=U_REDIS,
    group="counters",
    backend="redis",
    primitive=OP,
    label="unidist SharedCounter",
    role="unidist",
    durability=REDIS_DUR,
    worker=w_unidist_redis,
    needs=("redis",),
)
impl(
    id="counters.redis.incr",
    group="counters",
    backend="redis",
    primitive=OP,
    label="raw INCR",
    role="peer",
    durability=REDIS_DUR,
    worker=w_incr,
    compare_to=U_REDIS,
    needs=("redis",),
    note="redis-py client.incr(key): one round trip, no request id (a lost reply is ambiguous).",
)
impl(
    id="counters.redis.incr_pipe",
    group="counters",
    backend="redis",
    primitive=OP,
    label="raw INCR pipelined x100",
    role="limit",
    durability=REDIS_DUR,
    worker=w_incr_pipelined,
    compare_to=U_REDIS,
    needs=("redis",),
    note="100 INCRs per pipeline (no transaction): a reference for batch APIs.",
)
target(
    unidist=U_REDIS,
    peer="counters.redis.incr",
    factor=1 / 1.2,
    source="#3",
    text="redis counter within 1.2x of raw INCR (>=0.83x)",
)
target(
    unidist=U_REDIS,
    peer="counters.redis.incr",
    factor=0.9,
    source="#11",
    text="redis counter >=0.9x raw INCR",
)


# ------------------------------------------------------------------------------ file
def w_unidist_file_always(env: Any, shared: Any, i: int) -> Any:
    import unidist

    counter = unidist.SharedCounter("bench", backend=file_url(env, "always"))

    def run(n: int) -> None:
        incr = counter.incr
        for _ in range(n):
            incr()

    return run


def w_unidist_file_batch(env: Any, shared: Any, i: int) -> Any:
    import unidist

    counter = unidist.SharedCounter("bench", backend=file_url(env, "batch"))

    def run(n: int) -> None:
        incr = counter.incr
        for _ in range(n):
            incr()

    return run


def _diskcache_worker(sync: int | None) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import diskcache

        kwargs = {} if sync is None else {"sqlite_synchronous": sync}
        cache = diskcache.Cache(os.path.join(env.dir, "diskcache"), **kwargs)

        def run(n: int) -> None:
            incr = cache.incr
            for _ in range(n):
                incr("bench", default=0)

        return run, cache.close

    return worker


w_diskcache_default = _diskcache_worker(None)
w_diskcache_full = _diskcache_worker(2)


def w_flock_rewrite(env: Any, shared: Any, i: int) -> Any:
    # The naive durable counter: flock, read, write value+1 in place, fsync, unlock.
    fd = os.open(os.path.join(env.dir, "naive-counter"), os.O_RDWR | os.O_CREAT, 0o600)
    st = struct.Struct("<q")

    def run(n: int) -> None:
        for _ in range(n):
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, 8, 0)
                value = st.unpack(raw)[0] if len(raw) == 8 else 0
                os.pwrite(fd, st.pack(value + 1), 0)
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    return run, lambda: os.close(fd)


U_FILE = "counters.file.unidist"
U_FILE_BATCH = "counters.file.unidist_batch"
impl(
    id=U_FILE,
    group="counters",
    backend="file",
    primitive=OP,
    label="unidist SharedCounter",
    role="unidist",
    durability="fsync=always (per op)",
    worker=w_unidist_file_always,
)
impl(
    id=U_FILE_BATCH,
    group="counters",
    backend="file",
    primitive=OP,
    label="unidist SharedCounter batch",
    role="unidist",
    durability="fsync=batch (50 ms window)",
    worker=w_unidist_file_batch,
)
impl(
    id="counters.file.diskcache",
    group="counters",
    backend="file",
    primitive=OP,
    label="diskcache Cache.incr",
    role="peer",
    durability="WAL sync=NORMAL: no fsync/op",
    worker=w_diskcache_default,
    compare_to=U_FILE_BATCH,
    note="diskcache.Cache(dir).incr(key) with its defaults (sqlite WAL, synchronous=NORMAL: "
    "fsync only at checkpoints; a power loss can lose recent commits); compared with "
    "unidist fsync=batch.",
)
impl(
    id="counters.file.diskcache_full",
    group="counters",
    backend="file",
    primitive=OP,
    label="diskcache Cache.incr sync=FULL",
    role="peer",
    durability="WAL sync=FULL: fsync/commit",
    worker=w_diskcache_full,
    compare_to=U_FILE,
    note="diskcache.Cache(dir, sqlite_synchronous=2): the WAL is fsynced at each commit, "
    "the same durability as unidist fsync=always.",
)
impl(
    id="counters.file.write_fsync",
    group="counters",
    backend="file",
    primitive=OP,
    label="write+fsync, own file",
    role="limit",
    durability="fsync per op",
    worker=w_write_fsync,
    compare_to=U_FILE,
    note="each worker appends 8 bytes to its own file and fsyncs: the disk's durable-write rate.",
)
impl(
    id="counters.file.flock_rewrite",
    group="counters",
    backend="file",
    primitive=OP,
    label="flock+pread+pwrite+fsync",
    role="peer",
    durability="fsync per op",
    worker=w_flock_rewrite,
    compare_to=U_FILE,
    note="the naive durable counter: flock one file, read, write value+1 in place, fsync, unlock "
    "(not crash-atomic beyond an 8-byte write).",
)
target(
    unidist=U_FILE,
    peer="counters.file.write_fsync",
    factor=0.6,
    source="#11",
    text="file counter fsync=always >=0.6x raw write+fsync (1 writer; 4 procs vs 4 writers)",
    configs=((1, "thread"), (4, "process")),
)
target(
    unidist=U_FILE_BATCH,
    peer="counters.file.diskcache",
    factor=1.5,
    source="#11",
    text="file counter fsync=batch >=1.5x diskcache incr",
)
