"""Batches: queue put_many+get_many of 100 messages per call, and counter increments that
unidist coalesces across threads, against pipelined raw Redis. Issue 11.

One operation is one message (put and taken) or one increment, so the rates compare with
the single-message rows of the queues and counters groups. Run the counter rows at 4 and 8
threads: ``run.py --only batch --workers 1,4,8 --process-workers ""``.
"""

from __future__ import annotations

from typing import Any

from _common import MESSAGE, file_url, memory_url, redis_client
from _harness import impl, target
from cases_counters import w_incr
from cases_queues import _unidist_get_worker

BATCH = 100
OP_Q = f"queue put_many+get_many ({BATCH} x 100 B messages per call; ops = messages)"
OP_C = "counter increment from many threads (all workers on one counter)"


# ------------------------------------------------------------------------------ queues
def _unidist_batch_worker(url: str, env: Any) -> Any:
    import unidist

    q = unidist.MessageQueue(f"bench-{env.tag}", backend=url)
    bodies = [MESSAGE] * BATCH

    def run(n: int) -> int:
        rounds = max(1, n // BATCH)
        put_many, get_many = q.put_many, q.get_many
        for _ in range(rounds):
            put_many(bodies)
            got = 0
            # Other workers may take some of these: take as many as this worker put.
            while got < BATCH:
                got += len(get_many(BATCH - got, timeout=30))
        return rounds * BATCH

    return run


def _url_of(backend: str, fsync: str | None = None) -> Any:
    def url(env: Any) -> str:
        if backend == "memory":
            return memory_url(env)
        if backend == "file":
            return file_url(env, fsync or "always")
        return env.redis_url()

    return url


def _batch_worker(url: Any) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        return _unidist_batch_worker(url(env), env)

    return worker


def _single_worker(url: Any) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        return _unidist_get_worker(env, url(env))

    return worker


def w_lpush_rpop_pipelined(env: Any, shared: Any, i: int) -> Any:
    r = redis_client(env.redis_url())
    key = f"bench:{env.tag}:list"
    body = MESSAGE.encode()

    def run(n: int) -> int:
        rounds = max(1, n // BATCH)
        for _ in range(rounds):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.lpush(key, body)
            pipe.execute()
            got = 0
            while got < BATCH:
                items = r.rpop(key, BATCH - got)
                got += len(items or ())
        return rounds * BATCH

    return run, r.close


QUEUE_ROWS = (
    ("memory", None, "in-process, no snapshot"),
    ("file", "batch", "fsync=batch (50 ms window)"),
    ("file", "always", "fsync=always (per call)"),
    ("redis", None, "server: no persistence"),
)

for backend, fsync, dur in QUEUE_ROWS:
    sfx = f"_{fsync}" if fsync else ""
    u_id = f"batch.{backend}.queue_unidist{sfx}"
    url = _url_of(backend, fsync)
    kinds = ("thread",) if backend == "memory" else ("thread", "process")
    impl(
        id=u_id,
        group="batch",
        backend=backend,
        primitive=OP_Q,
        label=f"unidist put_many+get_many{f' fsync={fsync}' if fsync else ''}",
        role="unidist",
        durability=dur,
        worker=_batch_worker(url),
        kinds=kinds,
        needs=("redis",) if backend == "redis" else (),
    )
    impl(
        id=f"batch.{backend}.queue_single{sfx}",
        group="batch",
        backend=backend,
        primitive=OP_Q,
        label=f"unidist put+get one at a time{f' fsync={fsync}' if fsync else ''}",
        role="peer",
        durability=dur,
        worker=_single_worker(url),
        kinds=kinds,
        compare_to=u_id,
        needs=("redis",) if backend == "redis" else (),
        note=""
        if backend != "memory"
        else "the same queue with put()+get(): the ratio is what batching gains.",
    )

impl(
    id="batch.redis.lpush_rpop_pipe",
    group="batch",
    backend="redis",
    primitive=OP_Q,
    label=f"raw LPUSH x{BATCH} pipelined + RPOP count",
    role="limit",
    durability="server: no persistence",
    worker=w_lpush_rpop_pipelined,
    compare_to="batch.redis.queue_unidist",
    needs=("redis",),
    note=f"{BATCH} LPUSHes in one pipeline (no transaction), then RPOP key {BATCH}: at-most-once, "
    "no ids, priorities, delays or dedupe.",
)
target(
    unidist="batch.redis.queue_unidist",
    peer="batch.redis.lpush_rpop_pipe",
    factor=0.5,
    source="#11",
    text="redis put_many+get_many >=0.5x pipelined LPUSH+RPOP",
)


# ------------------------------------------------------------------------------ counters
def _counter_worker(url: Any) -> Any:
    def worker(env: Any, shared: Any, i: int) -> Any:
        import unidist

        counter = unidist.SharedCounter(f"bench-{env.tag}", backend=url(env))

        def run(n: int) -> None:
            incr = counter.incr
            for _ in range(n):
                incr()

        return run

    return worker


def w_incr_pipelined(env: Any, shared: Any, i: int) -> Any:
    r = redis_client(env.redis_url())
    key = f"bench:{env.tag}:incr"

    def run(n: int) -> int:
        rounds = max(1, n // BATCH)
        for _ in range(rounds):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.incr(key)
            pipe.execute()
        return rounds * BATCH

    return run, r.close


U_CREDIS = "batch.redis.counter_unidist"
impl(
    id=U_CREDIS,
    group="batch",
    backend="redis",
    primitive=OP_C,
    label="unidist SharedCounter.incr (coalesced)",
    role="unidist",
    durability="server: no persistence",
    worker=_counter_worker(_url_of("redis")),
    kinds=("thread",),
    needs=("redis",),
)
impl(
    id="batch.redis.counter_incr",
    group="batch",
    backend="redis",
    primitive=OP_C,
    label="raw INCR",
    role="peer",
    durability="server: no persistence",
    worker=w_incr,
    kinds=("thread",),
    compare_to=U_CREDIS,
    needs=("redis",),
    note="redis-py client.incr(key) from every thread (one connection each, from the pool).",
)
impl(
    id="batch.redis.counter_incr_pipe",
    group="batch",
    backend="redis",
    primitive=OP_C,
    label=f"raw INCR pipelined x{BATCH}",
    role="limit",
    durability="server: no persistence",
    worker=w_incr_pipelined,
    kinds=("thread",),
    compare_to=U_CREDIS,
    needs=("redis",),
)
target(
    unidist=U_CREDIS,
    peer="batch.redis.counter_incr",
    factor=0.9,
    source="#11",
    text="redis counter (coalesced) >=0.9x raw INCR",
)
target(
    unidist=U_CREDIS,
    peer="batch.redis.counter_incr_pipe",
    factor=0.5,
    source="#11",
    text="redis coalesced incr >=0.5x pipelined INCR (batch APIs)",
    configs=((4, "thread"), (8, "thread")),
)
impl(
    id="batch.file.counter_unidist",
    group="batch",
    backend="file",
    primitive=OP_C,
    label="unidist SharedCounter.incr (coalesced)",
    role="unidist",
    durability="fsync=always (per call)",
    worker=_counter_worker(_url_of("file", "always")),
    kinds=("thread",),
)
