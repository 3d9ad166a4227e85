"""Queues: put+get of a 100-byte message. Each worker puts one message and then takes one from
the shared queue (so 4 workers are 4 producers and 4 consumers at once). Issues 4 and 11."""

from __future__ import annotations

import os
import queue
from typing import Any

from _common import MESSAGE, file_url, memory_url, redis_client, sqlite_default_sync
from _harness import impl, target

OP = "queue put+get (100 B message; each worker puts then gets)"
OP_ACK = OP


def _unidist_get_worker(env: Any, url: str) -> Any:
    import unidist

    q = unidist.MessageQueue(f"bench-{env.tag}", backend=url)

    def run(n: int) -> None:
        put, get = q.put, q.get
        for _ in range(n):
            put(MESSAGE)
            get(timeout=30)

    return run


def _unidist_receive_worker(env: Any, url: str) -> Any:
    import unidist

    q = unidist.MessageQueue(f"bench-{env.tag}", backend=url)

    def run(n: int) -> None:
        put, receive = q.put, q.receive
        for _ in range(n):
            put(MESSAGE)
            receive(timeout=30).ack()

    return run


# ------------------------------------------------------------------------------ memory
def w_unidist_memory(env: Any, shared: Any, i: int) -> Any:
    return _unidist_get_worker(env, memory_url(env))


def s_stdlib_queue(env: Any) -> Any:
    return queue.Queue()


def w_stdlib_queue(env: Any, shared: Any, i: int) -> Any:
    q = shared

    def run(n: int) -> None:
        put, get = q.put, q.get
        for _ in range(n):
            put(MESSAGE)
            get(timeout=30)

    return run


U_MEM = "queues.memory.unidist"
impl(
    id=U_MEM,
    group="queues",
    backend="memory",
    primitive=OP,
    label="unidist MessageQueue get",
    role="unidist",
    durability="in-process, no snapshot",
    worker=w_unidist_memory,
    kinds=("thread",),
)
impl(
    id="queues.memory.stdlib",
    group="queues",
    backend="memory",
    primitive=OP,
    label="queue.Queue",
    role="limit",
    durability="in-process",
    worker=w_stdlib_queue,
    setup=s_stdlib_queue,
    kinds=("thread",),
    compare_to=U_MEM,
)


# ------------------------------------------------------------------------------ file
def w_unidist_file_always(env: Any, shared: Any, i: int) -> Any:
    return _unidist_get_worker(env, file_url(env, "always"))


def w_unidist_file_batch(env: Any, shared: Any, i: int) -> Any:
    return _unidist_get_worker(env, file_url(env, "batch"))


def w_unidist_file_receive(env: Any, shared: Any, i: int) -> Any:
    return _unidist_receive_worker(env, file_url(env, "always"))


def s_pq_file(env: Any) -> Any:
    from persistqueue import Queue

    return Queue(os.path.join(env.dir, "pq-file"), tempdir=env.dir)


def w_pq_file(env: Any, shared: Any, i: int) -> Any:
    q = shared

    def run(n: int) -> None:
        for _ in range(n):
            q.put(MESSAGE)
            q.get(timeout=30)
            q.task_done()

    return run


def s_pq_sqlite(env: Any) -> Any:
    from persistqueue import SQLiteQueue

    return SQLiteQueue(os.path.join(env.dir, "pq-sqlite"), multithreading=True, auto_commit=True)


def w_pq_sqlite(env: Any, shared: Any, i: int) -> Any:
    q = shared

    def run(n: int) -> None:
        for _ in range(n):
            q.put(MESSAGE)
            q.get(timeout=30)

    return run


def s_pq_ack(env: Any) -> Any:
    from persistqueue import SQLiteAckQueue

    return SQLiteAckQueue(os.path.join(env.dir, "pq-ack"), multithreading=True, auto_commit=True)


def w_pq_ack(env: Any, shared: Any, i: int) -> Any:
    q = shared

    def run(n: int) -> None:
        for _ in range(n):
            q.put(MESSAGE)
            item = q.get(timeout=30)
            q.ack(item)

    return run


def _close_shared(env: Any, shared: Any) -> None:
    close = getattr(shared, "close", None)
    if close is not None:
        close()


def _deque_worker(sync: int | None) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import diskcache

        kwargs: dict[str, Any] = {"eviction_policy": "none"}
        if sync is not None:
            kwargs["sqlite_synchronous"] = sync
        cache = diskcache.Cache(os.path.join(env.dir, "deque"), **kwargs)
        dq = diskcache.Deque.fromcache(cache)

        def run(n: int) -> None:
            for _ in range(n):
                dq.append(MESSAGE)
                while True:
                    try:
                        dq.popleft()
                        break
                    except IndexError:  # another worker took the last one: try again
                        continue

        return run, cache.close

    return worker


w_deque_default = _deque_worker(None)
w_deque_full = _deque_worker(2)

U_FILE = "queues.file.unidist"
U_FILE_BATCH = "queues.file.unidist_batch"
U_FILE_ACK = "queues.file.unidist_receive"
SQL_SYNC = sqlite_default_sync()
PQ_SQL_DUR = f"WAL sync={SQL_SYNC} (sqlite default)" + (
    ": fsync/commit" if SQL_SYNC in ("FULL", "EXTRA") else ": no fsync/op"
)
impl(
    id=U_FILE,
    group="queues",
    backend="file",
    primitive=OP,
    label="unidist MessageQueue get",
    role="unidist",
    durability="fsync=always (per op)",
    worker=w_unidist_file_always,
)
impl(
    id=U_FILE_ACK,
    group="queues",
    backend="file",
    primitive=OP_ACK,
    label="unidist MessageQueue receive+ack",
    role="unidist",
    durability="fsync=always (per op)",
    worker=w_unidist_file_receive,
    note="put, receive(), ack(): at-least-once delivery (three journaled operations).",
)
impl(
    id=U_FILE_BATCH,
    group="queues",
    backend="file",
    primitive=OP,
    label="unidist MessageQueue get batch",
    role="unidist",
    durability="fsync=batch (50 ms window)",
    worker=w_unidist_file_batch,
)
impl(
    id="queues.file.pq_file",
    group="queues",
    backend="file",
    primitive=OP,
    label="persist-queue Queue (file)",
    role="peer",
    durability="flush per op, no fsync",
    worker=w_pq_file,
    setup=s_pq_file,
    kinds=("thread",),
    compare_to=U_FILE_BATCH,
    note="persistqueue.Queue(path): put, get, task_done; data is flushed (not fsynced) per put, "
    "fsynced only when a 100-item chunk fills; the info file is replaced without fsync. No "
    "option gives fsync per operation. Not process-safe (one object shared by the threads; "
    "no process rows). Compared with unidist fsync=batch.",
)
impl(
    id="queues.file.pq_sqlite",
    group="queues",
    backend="file",
    primitive=OP,
    label="persist-queue SQLiteQueue",
    role="peer",
    durability=PQ_SQL_DUR,
    worker=w_pq_sqlite,
    setup=s_pq_sqlite,
    teardown=_close_shared,
    kinds=("thread",),
    compare_to=U_FILE,
    note="persistqueue.SQLiteQueue(path, multithreading=True, auto_commit=True): a commit per "
    "put and per get; persist-queue sets journal_mode=WAL and leaves synchronous at sqlite's "
    f"compiled default, which is {SQL_SYNC} here (FULL fsyncs the WAL at each commit). One "
    "object shared by the threads (separate objects on one file can hand out a message twice); "
    "no process rows.",
)
impl(
    id="queues.file.pq_ack",
    group="queues",
    backend="file",
    primitive=OP,
    label="persist-queue SQLiteAckQueue",
    role="peer",
    durability=PQ_SQL_DUR,
    worker=w_pq_ack,
    setup=s_pq_ack,
    teardown=_close_shared,
    kinds=("thread",),
    compare_to=U_FILE_ACK,
    note="persistqueue.SQLiteAckQueue(path, multithreading=True, auto_commit=True): put, get, "
    "ack (three commits); same sqlite settings as SQLiteQueue. Compared with unidist "
    "receive+ack.",
)
impl(
    id="queues.file.deque",
    group="queues",
    backend="file",
    primitive=OP,
    label="diskcache.Deque",
    role="peer",
    durability="WAL sync=NORMAL: no fsync/op",
    worker=w_deque_default,
    compare_to=U_FILE_BATCH,
    note="diskcache.Deque over Cache(dir, eviction_policy='none'): append + popleft, its "
    "defaults otherwise (WAL, synchronous=NORMAL); compared with unidist fsync=batch.",
)
impl(
    id="queues.file.deque_full",
    group="queues",
    backend="file",
    primitive=OP,
    label="diskcache.Deque sync=FULL",
    role="peer",
    durability="WAL sync=FULL: fsync/commit",
    worker=w_deque_full,
    compare_to=U_FILE,
    note="diskcache.Deque with sqlite_synchronous=2: the same durability as unidist fsync=always.",
)
target(
    unidist=U_FILE_ACK,
    peer="queues.file.pq_ack",
    factor=2.0,
    source="#4",
    text="file queue (fsync=always, receive+ack) >=2x SQLiteAckQueue",
)
target(
    unidist=U_FILE_ACK,
    peer="queues.file.pq_ack",
    factor=2.5,
    source="#11",
    text="file queue (fsync=always, receive+ack) >=2.5x SQLiteAckQueue",
)
target(
    unidist=U_FILE,
    peer="queues.file.deque_full",
    factor=1.0,
    source="#4",
    text="file queue (fsync=always) >=1.0x diskcache.Deque at equal durability, 1 worker",
    configs=((1, "thread"),),
)
target(
    unidist=U_FILE,
    peer=None,
    factor=1.0,
    source="#4",
    text="file queue (fsync=always) rises with 4 writers (group commit): 4 workers / 1 thread",
    kind="scaling",
)
target(
    unidist=U_FILE,
    peer=None,
    factor=10_000,
    source="#11",
    text="file queue (fsync=always) >=10k/s with 4 producers+consumers",
    kind="absolute",
    configs=((4, "thread"), (4, "process")),
)
target(
    unidist=U_FILE_BATCH,
    peer="queues.file.deque",
    factor=2.0,
    source="#11",
    text="file queue (fsync=batch) >=2x diskcache.Deque",
)


# ------------------------------------------------------------------------------ redis
def _redis_get(which: str) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        return _unidist_get_worker(env, env.redis_url(which))

    return worker


def _redis_receive(which: str) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        return _unidist_receive_worker(env, env.redis_url(which))

    return worker


def _lpush_brpop(which: str) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        r = redis_client(env.redis_url(which))
        key = f"bench:{env.tag}:list"
        body = MESSAGE.encode()

        def run(n: int) -> None:
            for _ in range(n):
                r.lpush(key, body)
                r.brpop([key], timeout=30)

        return run, r.close

    return worker


def _stream_setup(which: str) -> Any:
    def setup(env: Any) -> Any:
        r = redis_client(env.redis_url(which))
        r.xgroup_create(f"bench:{env.tag}:stream", "workers", id="0", mkstream=True)
        r.close()

    return setup


def _streams(which: str) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        r = redis_client(env.redis_url(which))
        key = f"bench:{env.tag}:stream"
        body = MESSAGE.encode()
        consumer = f"c{i}-{os.getpid()}"

        def run(n: int) -> None:
            for _ in range(n):
                r.xadd(key, {"b": body})
                got = r.xreadgroup("workers", consumer, {key: ">"}, count=1, block=30_000)
                for _stream, entries in got:
                    for entry_id, _fields in entries:
                        r.xack(key, "workers", entry_id)

        return run, r.close

    return worker


for which, dur in (("plain", "server: no persistence"), ("aof", "AOF appendfsync always")):
    sfx = "" if which == "plain" else "_aof"
    lsfx = "" if which == "plain" else " (AOF)"
    u_get = f"queues.redis.unidist{sfx}"
    u_ack = f"queues.redis.unidist_receive{sfx}"
    impl(
        id=u_get,
        group="queues",
        backend="redis",
        primitive=OP,
        label=f"unidist MessageQueue get{lsfx}",
        role="unidist",
        durability=dur,
        worker=_redis_get(which),
        needs=("redis",),
    )
    impl(
        id=u_ack,
        group="queues",
        backend="redis",
        primitive=OP_ACK,
        label=f"unidist MessageQueue receive+ack{lsfx}",
        role="unidist",
        durability=dur,
        worker=_redis_receive(which),
        needs=("redis",),
    )
    impl(
        id=f"queues.redis.lpush_brpop{sfx}",
        group="queues",
        backend="redis",
        primitive=OP,
        label=f"raw LPUSH+BRPOP{lsfx}",
        role="peer",
        durability=dur,
        worker=_lpush_brpop(which),
        compare_to=u_get,
        needs=("redis",),
        note="" if sfx else "client.lpush(key, body); client.brpop([key]): at-most-once.",
    )
    impl(
        id=f"queues.redis.streams{sfx}",
        group="queues",
        backend="redis",
        primitive=OP_ACK,
        label=f"Streams XADD+XREADGROUP+XACK{lsfx}",
        role="peer",
        durability=dur,
        worker=_streams(which),
        setup=_stream_setup(which),
        compare_to=u_ack,
        needs=("redis",),
        note=""
        if sfx
        else "XADD; XREADGROUP count=1 BLOCK (one consumer group, a consumer per worker); "
        "XACK: at-least-once; compared with unidist receive+ack. XACK leaves the entry in the "
        "stream (no XDEL, so the stream grows); unidist's ack deletes the message.",
    )
    target(
        unidist=u_get,
        peer=f"queues.redis.lpush_brpop{sfx}",
        factor=1 / 1.5,
        source="#4",
        text=f"redis queue within 1.5x of raw LPUSH+BRPOP{lsfx} (>=0.67x)",
    )
    target(
        unidist=u_get,
        peer=f"queues.redis.lpush_brpop{sfx}",
        factor=0.8,
        source="#11",
        text=f"redis queue get >=0.8x raw LPUSH+BRPOP{lsfx}",
    )
    target(
        unidist=u_ack,
        peer=f"queues.redis.streams{sfx}",
        factor=1.5,
        source="#11",
        text=f"redis queue receive+ack >=1.5x Streams{lsfx}",
    )
