"""Payload sizes: queue put+get and bucket set+get at 100 B, 10 KiB and 1 MiB (issue 11).

Registered by ``bench_sizes.py`` (not part of ``run.py``). The sizes come from the
environment variable ``UNIDIST_BENCH_SIZES`` (comma-separated bytes; default
``100,10240,1048576``), read at import so that spawned process workers register the same rows.

Every row id ends in ``@<bytes>``; a peer's ratio is taken against the unidist row of the same
size and durability. A queue message is a JSON string whose encoding is exactly the size; a
bucket value is a JSON object ``{"pad": "vvv..."}`` whose encoding is the size.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from typing import Any

from _common import (
    SIZES_ENV,
    file_url,
    fmt_size,
    memory_url,
    parse_sizes,
    redis_client,
    sqlite_default_sync,
)
from _harness import impl

DEFAULT_SIZES = (100, 10240, 1048576)
# Bytes of distinct bucket values one worker keeps (keys cycle): 1,000 keys at 100 B and
# 10 KiB, 8 at 1 MiB, so that the 1 MiB rows do not write a gigabyte.
STATE_BYTES_PER_WORKER = 8 << 20


SIZES = parse_sizes(os.environ.get(SIZES_ENV, "") or ",".join(map(str, DEFAULT_SIZES)))


def message(size: int) -> str:
    """A JSON string whose encoding is ``size`` bytes."""
    body = "m" * (size - 2)
    assert len(json.dumps(body)) == size
    return body


def value(size: int) -> dict[str, Any]:
    """A JSON object whose compact or default encoding is about ``size`` bytes."""
    return {"pad": "v" * max(1, size - len(json.dumps({"pad": ""})))}


def keys_per_worker(size: int) -> int:
    return max(1, min(1000, STATE_BYTES_PER_WORKER // size))


QOP = "queue put+get, {} message (each worker puts then gets)"
SOP = "bucket set+get, {} JSON value"


# ------------------------------------------------------------------------------ queues
def _q_unidist(url_of: Any, size: int, ack: bool = False) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import unidist

        q = unidist.MessageQueue(f"bench-{env.tag}", backend=url_of(env))
        body = message(size)

        def run(n: int) -> None:
            put = q.put
            if ack:
                receive = q.receive
                for _ in range(n):
                    put(body)
                    receive(timeout=30).ack()
            else:
                get = q.get
                for _ in range(n):
                    put(body)
                    get(timeout=30)

        return run

    return worker


def _q_stdlib(size: int) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        q, body = shared, message(size)

        def run(n: int) -> None:
            for _ in range(n):
                q.put(body)
                q.get(timeout=30)

        return run

    return worker


def _pq_ack_setup(env: Any) -> Any:
    from persistqueue import SQLiteAckQueue

    return SQLiteAckQueue(os.path.join(env.dir, "pq-ack"), multithreading=True, auto_commit=True)


def _pq_ack(size: int) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        q, body = shared, message(size)

        def run(n: int) -> None:
            for _ in range(n):
                q.put(body)
                q.ack(q.get(timeout=30))

        return run

    return worker


def _deque(size: int, sync: int | None) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import diskcache

        kwargs: dict[str, Any] = {"eviction_policy": "none"}
        if sync is not None:
            kwargs["sqlite_synchronous"] = sync
        cache = diskcache.Cache(os.path.join(env.dir, "deque"), **kwargs)
        dq, body = diskcache.Deque.fromcache(cache), message(size)

        def run(n: int) -> None:
            for _ in range(n):
                dq.append(body)
                while True:
                    try:
                        dq.popleft()
                        break
                    except IndexError:  # another worker took the last one: try again
                        continue

        return run, cache.close

    return worker


def _lpush_brpop(size: int) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        r = redis_client(env.redis_url())
        key, body = f"bench:{env.tag}:list", json.dumps(message(size)).encode()

        def run(n: int) -> None:
            for _ in range(n):
                r.lpush(key, body)
                r.brpop([key], timeout=30)

        return run, r.close

    return worker


def _close_shared(env: Any, shared: Any) -> None:
    close = getattr(shared, "close", None)
    if close is not None:
        close()


SQL_SYNC = sqlite_default_sync()
PQ_DUR = f"WAL sync={SQL_SYNC} (sqlite default)" + (
    ": fsync/commit" if SQL_SYNC in ("FULL", "EXTRA") else ": no fsync/op"
)
REDIS_DUR = "server: no persistence"


def _register_queues(size: int) -> None:
    op, at = QOP.format(fmt_size(size)), f"@{size}"
    common = {"group": "queues", "primitive": op}
    u_mem, u_file, u_ack, u_batch = (
        f"sizes.queues.memory.unidist{at}",
        f"sizes.queues.file.unidist{at}",
        f"sizes.queues.file.unidist_receive{at}",
        f"sizes.queues.file.unidist_batch{at}",
    )
    u_redis = f"sizes.queues.redis.unidist{at}"
    impl(id=u_mem, backend="memory", label="unidist MessageQueue get", role="unidist",
         durability="in-process, no snapshot", worker=_q_unidist(memory_url, size),
         kinds=("thread",), **common)  # fmt: skip
    impl(id=f"sizes.queues.memory.stdlib{at}", backend="memory", label="queue.Queue",
         role="limit", durability="in-process", worker=_q_stdlib(size),
         setup=lambda env: queue.Queue(), kinds=("thread",), compare_to=u_mem,
         **common)  # fmt: skip
    impl(id=u_file, backend="file", label="unidist MessageQueue get", role="unidist",
         durability="fsync=always (per op)",
         worker=_q_unidist(lambda env: file_url(env, "always"), size), **common)  # fmt: skip
    impl(id=u_ack, backend="file", label="unidist MessageQueue receive+ack", role="unidist",
         durability="fsync=always (per op)",
         worker=_q_unidist(lambda env: file_url(env, "always"), size, ack=True),
         **common)  # fmt: skip
    impl(id=u_batch, backend="file", label="unidist MessageQueue get batch", role="unidist",
         durability="fsync=batch (50 ms window)",
         worker=_q_unidist(lambda env: file_url(env, "batch"), size), **common)  # fmt: skip
    impl(id=f"sizes.queues.file.pq_ack{at}", backend="file",
         label="persist-queue SQLiteAckQueue", role="peer", durability=PQ_DUR,
         worker=_pq_ack(size), setup=_pq_ack_setup, teardown=_close_shared,
         kinds=("thread",), compare_to=u_ack, **common)  # fmt: skip
    impl(id=f"sizes.queues.file.deque{at}", backend="file", label="diskcache.Deque",
         role="peer", durability="WAL sync=NORMAL: no fsync/op", worker=_deque(size, None),
         compare_to=u_batch, **common)  # fmt: skip
    impl(id=f"sizes.queues.file.deque_full{at}", backend="file",
         label="diskcache.Deque sync=FULL", role="peer",
         durability="WAL sync=FULL: fsync/commit", worker=_deque(size, 2), compare_to=u_file,
         **common)  # fmt: skip
    impl(id=u_redis, backend="redis", label="unidist MessageQueue get", role="unidist",
         durability=REDIS_DUR, worker=_q_unidist(lambda env: env.redis_url(), size),
         needs=("redis",), **common)  # fmt: skip
    impl(id=f"sizes.queues.redis.lpush_brpop{at}", backend="redis", label="raw LPUSH+BRPOP",
         role="peer", durability=REDIS_DUR, worker=_lpush_brpop(size), compare_to=u_redis,
         needs=("redis",), **common)  # fmt: skip


# ------------------------------------------------------------------------------ state
def _s_unidist(url_of: Any, size: int) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import unidist

        bucket = unidist.SharedState(f"bench-{env.tag}", backend=url_of(env))
        v, nkeys = value(size), keys_per_worker(size)

        def run(n: int) -> None:
            for k in range(n):
                key = f"w{i}-k{k % nkeys}"
                bucket[key] = v
                bucket[key]

        return run

    return worker


def _s_dict_lock(size: int) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        lock, d = shared["lock"], shared["d"]
        v, nkeys = value(size), keys_per_worker(size)
        dumps, loads = json.dumps, json.loads

        def run(n: int) -> None:
            for k in range(n):
                key = f"w{i}-k{k % nkeys}"
                text = dumps(v)
                with lock:
                    d[key] = text
                with lock:
                    text = d[key]
                loads(text)

        return run

    return worker


def _s_index(size: int, sync: int | None) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import diskcache

        kwargs: dict[str, Any] = {"eviction_policy": "none"}
        if sync is not None:
            kwargs["sqlite_synchronous"] = sync
        cache = diskcache.Cache(os.path.join(env.dir, "index"), **kwargs)
        index = diskcache.Index.fromcache(cache)
        v, nkeys = value(size), keys_per_worker(size)

        def run(n: int) -> None:
            for k in range(n):
                key = f"w{i}-k{k % nkeys}"
                index[key] = v
                index[key]

        return run, cache.close

    return worker


def _s_hset(size: int) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        r = redis_client(env.redis_url())
        name = f"bench:{env.tag}:hash"
        v, nkeys = value(size), keys_per_worker(size)
        dumps, loads = json.dumps, json.loads

        def run(n: int) -> None:
            for k in range(n):
                key = f"w{i}-k{k % nkeys}"
                r.hset(name, key, dumps(v))
                loads(r.hget(name, key))

        return run, r.close

    return worker


def _register_state(size: int) -> None:
    op, at = SOP.format(fmt_size(size)), f"@{size}"
    common = {"group": "state", "primitive": op}
    u_mem, u_file, u_batch, u_redis = (
        f"sizes.state.memory.unidist{at}",
        f"sizes.state.file.unidist{at}",
        f"sizes.state.file.unidist_batch{at}",
        f"sizes.state.redis.unidist{at}",
    )
    impl(id=u_mem, backend="memory", label="unidist SharedState", role="unidist",
         durability="in-process, no snapshot", worker=_s_unidist(memory_url, size),
         kinds=("thread",), **common)  # fmt: skip
    impl(id=f"sizes.state.memory.dict_lock_json{at}", backend="memory",
         label="dict + Lock + json", role="limit", durability="in-process",
         worker=_s_dict_lock(size), setup=lambda env: {"lock": threading.Lock(), "d": {}},
         kinds=("thread",), compare_to=u_mem, **common)  # fmt: skip
    impl(id=u_file, backend="file", label="unidist SharedState", role="unidist",
         durability="fsync=always (per op)",
         worker=_s_unidist(lambda env: file_url(env, "always"), size), **common)  # fmt: skip
    impl(id=u_batch, backend="file", label="unidist SharedState batch", role="unidist",
         durability="fsync=batch (50 ms window)",
         worker=_s_unidist(lambda env: file_url(env, "batch"), size), **common)  # fmt: skip
    impl(id=f"sizes.state.file.index{at}", backend="file", label="diskcache.Index",
         role="peer", durability="WAL sync=NORMAL: no fsync/op", worker=_s_index(size, None),
         compare_to=u_batch, **common)  # fmt: skip
    impl(id=f"sizes.state.file.index_full{at}", backend="file",
         label="diskcache.Index sync=FULL", role="peer",
         durability="WAL sync=FULL: fsync/commit", worker=_s_index(size, 2),
         compare_to=u_file, **common)  # fmt: skip
    impl(id=u_redis, backend="redis", label="unidist SharedState", role="unidist",
         durability=REDIS_DUR, worker=_s_unidist(lambda env: env.redis_url(), size),
         needs=("redis",), **common)  # fmt: skip
    impl(id=f"sizes.state.redis.hset_hget{at}", backend="redis", label="raw HSET+HGET + json",
         role="peer", durability=REDIS_DUR, worker=_s_hset(size), compare_to=u_redis,
         needs=("redis",), **common)  # fmt: skip


for _size in SIZES:
    _register_queues(_size)
    _register_state(_size)
