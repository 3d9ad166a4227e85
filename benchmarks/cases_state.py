"""State buckets: set+get of a ~100-byte JSON value (each worker its own 1,000 keys of one
shared bucket). Issues 4 and 11."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from _common import VALUE, file_url, memory_url, redis_client, state_key, w_write_fsync
from _harness import impl, target

OP = "bucket set+get (~100 B JSON value)"


def _unidist_bucket_worker(env: Any, url: str, i: int) -> Any:
    import unidist

    bucket = unidist.SharedState("bench", backend=url)
    value = dict(VALUE)

    def run(n: int) -> None:
        for k in range(n):
            key = state_key(i, k)
            bucket[key] = value
            bucket[key]

    return run


# ------------------------------------------------------------------------------ memory
def w_unidist_memory(env: Any, shared: Any, i: int) -> Any:
    return _unidist_bucket_worker(env, memory_url(env), i)


def s_dict_lock(env: Any) -> Any:
    return {"lock": threading.Lock(), "d": {}}


def w_dict_lock_json(env: Any, shared: Any, i: int) -> Any:
    lock, d = shared["lock"], shared["d"]
    dumps, loads = json.dumps, json.loads

    def run(n: int) -> None:
        for k in range(n):
            key = state_key(i, k)
            text = dumps(VALUE)
            with lock:
                d[key] = text
            with lock:
                text = d[key]
            loads(text)

    return run


U_MEM = "state.memory.unidist"
impl(
    id=U_MEM,
    group="state",
    backend="memory",
    primitive=OP,
    label="unidist SharedState",
    role="unidist",
    durability="in-process, no snapshot",
    worker=w_unidist_memory,
    kinds=("thread",),
)
impl(
    id="state.memory.dict_lock_json",
    group="state",
    backend="memory",
    primitive=OP,
    label="dict + Lock + json",
    role="limit",
    durability="in-process",
    worker=w_dict_lock_json,
    setup=s_dict_lock,
    kinds=("thread",),
    compare_to=U_MEM,
    note="json.dumps, set under a threading.Lock, get under the lock, json.loads.",
)


# ------------------------------------------------------------------------------ file
def w_unidist_file_always(env: Any, shared: Any, i: int) -> Any:
    return _unidist_bucket_worker(env, file_url(env, "always"), i)


def w_unidist_file_batch(env: Any, shared: Any, i: int) -> Any:
    return _unidist_bucket_worker(env, file_url(env, "batch"), i)


def _index_worker(sync: int | None) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import diskcache

        kwargs: dict[str, Any] = {"eviction_policy": "none"}
        if sync is not None:
            kwargs["sqlite_synchronous"] = sync
        cache = diskcache.Cache(os.path.join(env.dir, "index"), **kwargs)
        index = diskcache.Index.fromcache(cache)

        def run(n: int) -> None:
            for k in range(n):
                key = state_key(i, k)
                index[key] = VALUE
                index[key]

        return run, cache.close

    return worker


w_index_default = _index_worker(None)
w_index_full = _index_worker(2)


def _sqlitedict_worker(commit_each: bool) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        from sqlitedict import SqliteDict

        path = os.path.join(env.dir, "sqlitedict.db")
        d = SqliteDict(path, autocommit=not commit_each, encode=json.dumps, decode=json.loads)

        def run(n: int) -> None:
            for k in range(n):
                key = state_key(i, k)
                d[key] = VALUE
                if commit_each:
                    d.commit()
                d[key]

        return run, d.close

    return worker


w_sqlitedict_auto = _sqlitedict_worker(False)
w_sqlitedict_commit = _sqlitedict_worker(True)

U_FILE = "state.file.unidist"
U_FILE_BATCH = "state.file.unidist_batch"
impl(
    id=U_FILE,
    group="state",
    backend="file",
    primitive=OP,
    label="unidist SharedState",
    role="unidist",
    durability="fsync=always (per op)",
    worker=w_unidist_file_always,
)
impl(
    id=U_FILE_BATCH,
    group="state",
    backend="file",
    primitive=OP,
    label="unidist SharedState batch",
    role="unidist",
    durability="fsync=batch (50 ms window)",
    worker=w_unidist_file_batch,
)
impl(
    id="state.file.diskcache_index",
    group="state",
    backend="file",
    primitive=OP,
    label="diskcache.Index",
    role="peer",
    durability="WAL sync=NORMAL: no fsync/op",
    worker=w_index_default,
    compare_to=U_FILE_BATCH,
    note="diskcache.Index over Cache(dir, eviction_policy='none'), its defaults otherwise "
    "(pickled values; sqlite WAL synchronous=NORMAL); compared with unidist fsync=batch.",
)
impl(
    id="state.file.diskcache_index_full",
    group="state",
    backend="file",
    primitive=OP,
    label="diskcache.Index sync=FULL",
    role="peer",
    durability="WAL sync=FULL: fsync/commit",
    worker=w_index_full,
    compare_to=U_FILE,
    note="as diskcache.Index with sqlite_synchronous=2: fsync of the WAL at each commit.",
)
impl(
    id="state.file.sqlitedict",
    group="state",
    backend="file",
    primitive=OP,
    label="sqlitedict autocommit",
    role="peer",
    durability="async commit thread: not durable on return",
    worker=w_sqlitedict_auto,
    compare_to=U_FILE_BATCH,
    note="SqliteDict(path, autocommit=True, json encode/decode): writes are queued to a "
    "background thread and committed there (rollback journal, synchronous=FULL); a set "
    "returns before its commit. Compared with unidist fsync=batch.",
)
impl(
    id="state.file.sqlitedict_commit",
    group="state",
    backend="file",
    primitive=OP,
    label="sqlitedict commit per set",
    role="peer",
    durability="commit per set: fsync/op",
    worker=w_sqlitedict_commit,
    compare_to=U_FILE,
    note="SqliteDict(path, autocommit=False) with a blocking commit() after each set: "
    "durable on return like unidist fsync=always.",
)
impl(
    id="state.file.write_fsync",
    group="state",
    backend="file",
    primitive=OP,
    label="write+fsync, own file",
    role="limit",
    durability="fsync per op",
    worker=w_write_fsync,
    compare_to=U_FILE,
)
target(
    unidist=U_FILE,
    peer="state.file.write_fsync",
    factor=0.6,
    source="#11",
    text="file bucket fsync=always >=0.6x raw write+fsync (1 writer; 4 procs vs 4 writers)",
    configs=((1, "thread"), (4, "process")),
)
target(
    unidist=U_FILE_BATCH,
    peer="state.file.diskcache_index",
    factor=1.5,
    source="#11",
    text="file bucket fsync=batch >=1.5x diskcache.Index",
)


# ------------------------------------------------------------------------------ redis
def w_unidist_redis(env: Any, shared: Any, i: int) -> Any:
    import unidist

    bucket = unidist.SharedState(f"bench-{env.tag}", backend=env.redis_url())
    value = dict(VALUE)

    def run(n: int) -> None:
        for k in range(n):
            key = state_key(i, k)
            bucket[key] = value
            bucket[key]

    return run


def w_pottery_dict(env: Any, shared: Any, i: int) -> Any:
    from pottery import RedisDict

    r = redis_client(env.redis_url())
    d = RedisDict(redis=r, key=f"bench:{env.tag}:pottery")

    def run(n: int) -> None:
        for k in range(n):
            key = state_key(i, k)
            d[key] = VALUE
            d[key]

    return run, r.close


def w_hset_hget(env: Any, shared: Any, i: int) -> Any:
    r = redis_client(env.redis_url())
    name = f"bench:{env.tag}:hash"
    dumps, loads = json.dumps, json.loads

    def run(n: int) -> None:
        for k in range(n):
            key = state_key(i, k)
            r.hset(name, key, dumps(VALUE))
            loads(r.hget(name, key))

    return run, r.close


U_REDIS = "state.redis.unidist"
REDIS_DUR = "server: no persistence"
impl(
    id=U_REDIS,
    group="state",
    backend="redis",
    primitive=OP,
    label="unidist SharedState",
    role="unidist",
    durability=REDIS_DUR,
    worker=w_unidist_redis,
    needs=("redis",),
)
impl(
    id="state.redis.pottery",
    group="state",
    backend="redis",
    primitive=OP,
    label="pottery RedisDict",
    role="peer",
    durability=REDIS_DUR,
    worker=w_pottery_dict,
    compare_to=U_REDIS,
    needs=("redis",),
    note="pottery.RedisDict(redis=client, key=...): a Redis hash, JSON values.",
)
impl(
    id="state.redis.hset_hget",
    group="state",
    backend="redis",
    primitive=OP,
    label="raw HSET+HGET + json",
    role="peer",
    durability=REDIS_DUR,
    worker=w_hset_hget,
    compare_to=U_REDIS,
    needs=("redis",),
    note="client.hset(hash, key, json.dumps(v)); json.loads(client.hget(hash, key)).",
)
target(
    unidist=U_REDIS,
    peer="state.redis.pottery",
    factor=2.0,
    source="#4",
    text="redis bucket >=2x pottery RedisDict",
)
target(
    unidist=U_REDIS,
    peer="state.redis.hset_hget",
    factor=0.9,
    source="#11",
    text="redis bucket >=0.9x raw HSET+HGET",
)
