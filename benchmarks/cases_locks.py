"""Locks: uncontended acquire+release (each worker has its own lock name). Issue 3."""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Any

from _common import file_url, memory_url, redis_client
from _harness import impl, target

OP = "lock acquire+release (uncontended: one lock per worker)"


# ------------------------------------------------------------------------------ memory
def w_unidist_memory(env: Any, shared: Any, i: int) -> Any:
    import unidist

    lock = unidist.SharedLock(f"bench-{i}", backend=memory_url(env))

    def run(n: int) -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    return run


def w_threading_lock(env: Any, shared: Any, i: int) -> Any:
    lock = threading.Lock()

    def run(n: int) -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    return run


def s_owner_dict(env: Any) -> Any:
    return {"mutex": threading.Lock(), "owners": {}}


def w_threading_lock_dict(env: Any, shared: Any, i: int) -> Any:
    # The floor for a lock with an owner record: acquire, record who holds it, release.
    lock = threading.Lock()
    mutex, owners = shared["mutex"], shared["owners"]
    name = f"bench-{i}"
    me = threading.current_thread().name

    def run(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            with mutex:
                owners[name] = me
            with mutex:
                del owners[name]
            lock.release()

    return run


U_MEM = "locks.memory.unidist"
impl(
    id=U_MEM,
    group="locks",
    backend="memory",
    primitive=OP,
    label="unidist SharedLock",
    role="unidist",
    durability="in-process, not persisted",
    worker=w_unidist_memory,
    kinds=("thread",),
)
impl(
    id="locks.memory.threading",
    group="locks",
    backend="memory",
    primitive=OP,
    label="threading.Lock",
    role="limit",
    durability="in-process",
    worker=w_threading_lock,
    kinds=("thread",),
    compare_to=U_MEM,
)
impl(
    id="locks.memory.threading_dict",
    group="locks",
    backend="memory",
    primitive=OP,
    label="threading.Lock + owner dict",
    role="limit",
    durability="in-process",
    worker=w_threading_lock_dict,
    setup=s_owner_dict,
    kinds=("thread",),
    compare_to=U_MEM,
    note="acquire a threading.Lock, record the owner in a dict guarded by a second lock, "
    "delete the record, release (what a lock with owner() needs at least).",
)
target(
    unidist=U_MEM,
    peer="locks.memory.threading",
    factor=1 / 3,
    source="#3",
    text="memory lock within 3x of threading.Lock (>=0.33x)",
)
target(
    unidist=U_MEM,
    peer="locks.memory.threading",
    factor=0.2,
    source="#11",
    text="memory lock >=0.2x threading.Lock",
)


# ------------------------------------------------------------------------------ file
def w_unidist_file(env: Any, shared: Any, i: int) -> Any:
    import unidist

    lock = unidist.SharedLock(f"bench-{i}", backend=file_url(env, "always"))

    def run(n: int) -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    return run


def w_flock(env: Any, shared: Any, i: int) -> Any:
    fd = os.open(os.path.join(env.dir, f"flock-{i}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    flock, ex, un = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN

    def run(n: int) -> None:
        for _ in range(n):
            flock(fd, ex)
            flock(fd, un)

    return run, lambda: os.close(fd)


def w_portalocker(env: Any, shared: Any, i: int) -> Any:
    import portalocker

    lock = portalocker.Lock(os.path.join(env.dir, f"portalocker-{i}.lock"), timeout=30)

    def run(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    return run


def w_filelock(env: Any, shared: Any, i: int) -> Any:
    import filelock

    lock = filelock.FileLock(os.path.join(env.dir, f"filelock-{i}.lock"), timeout=30)

    def run(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    return run


U_FILE = "locks.file.unidist"
impl(
    id=U_FILE,
    group="locks",
    backend="file",
    primitive=OP,
    label="unidist SharedLock",
    role="unidist",
    durability="flock; not persisted",
    worker=w_unidist_file,
)
impl(
    id="locks.file.flock",
    group="locks",
    backend="file",
    primitive=OP,
    label="fcntl.flock on an open fd",
    role="limit",
    durability="flock; not persisted",
    worker=w_flock,
    compare_to=U_FILE,
    note="flock(LOCK_EX) + flock(LOCK_UN) on a descriptor opened once: no owner record, no token.",
)
impl(
    id="locks.file.portalocker",
    group="locks",
    backend="file",
    primitive=OP,
    label="portalocker.Lock",
    role="peer",
    durability="flock; not persisted",
    worker=w_portalocker,
    compare_to=U_FILE,
    note="portalocker.Lock(path, timeout=30): opens the file and flocks it on each acquire.",
)
impl(
    id="locks.file.filelock",
    group="locks",
    backend="file",
    primitive=OP,
    label="filelock.FileLock",
    role="peer",
    durability="flock; not persisted",
    worker=w_filelock,
    compare_to=U_FILE,
    note="filelock.FileLock(path, timeout=30): opens, flocks, unlocks and closes per acquisition.",
)
target(
    unidist=U_FILE,
    peer="locks.file.filelock",
    factor=1.0,
    source="#3",
    text="file lock >=1.0x filelock.FileLock",
)
target(
    unidist=U_FILE,
    peer="locks.file.portalocker",
    factor=1.0,
    source="#3",
    text="file lock >=1.0x portalocker.Lock (also #11)",
)
target(
    unidist=U_FILE,
    peer="locks.file.filelock",
    factor=3.0,
    source="#11",
    text="file lock >=3x filelock.FileLock",
)


# ------------------------------------------------------------------------------ redis
def w_unidist_redis(env: Any, shared: Any, i: int) -> Any:
    import unidist

    lock = unidist.SharedLock(f"bench-{env.tag}-{i}", backend=env.redis_url())

    def run(n: int) -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    return run


def w_redispy_lock(env: Any, shared: Any, i: int) -> Any:
    r = redis_client(env.redis_url())
    lock = r.lock(f"bench:redispy:{i}", timeout=30)

    def run(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    return run, r.close


def w_python_redis_lock(env: Any, shared: Any, i: int) -> Any:
    import redis_lock

    r = redis_client(env.redis_url())
    lock = redis_lock.Lock(r, f"bench:prl:{i}", expire=30)

    def run(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    return run, r.close


def w_pottery(env: Any, shared: Any, i: int) -> Any:
    from pottery import Redlock

    r = redis_client(env.redis_url())
    lock = Redlock(key=f"bench:pottery:{i}", masters={r}, auto_release_time=30)

    def run(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    return run, r.close


U_REDIS = "locks.redis.unidist"
REDIS_DUR = "server: no persistence"
impl(
    id=U_REDIS,
    group="locks",
    backend="redis",
    primitive=OP,
    label="unidist SharedLock",
    role="unidist",
    durability=REDIS_DUR,
    worker=w_unidist_redis,
    needs=("redis",),
)
impl(
    id="locks.redis.redispy",
    group="locks",
    backend="redis",
    primitive=OP,
    label="redis-py Lock",
    role="peer",
    durability=REDIS_DUR,
    worker=w_redispy_lock,
    compare_to=U_REDIS,
    needs=("redis",),
    note="redis.Redis.lock(name, timeout=30): SET NX PX, release by a Lua compare-and-delete.",
)
impl(
    id="locks.redis.python_redis_lock",
    group="locks",
    backend="redis",
    primitive=OP,
    label="python-redis-lock",
    role="peer",
    durability=REDIS_DUR,
    worker=w_python_redis_lock,
    compare_to=U_REDIS,
    needs=("redis",),
    note="redis_lock.Lock(client, name, expire=30).",
)
impl(
    id="locks.redis.pottery",
    group="locks",
    backend="redis",
    primitive=OP,
    label="pottery Redlock",
    role="peer",
    durability=REDIS_DUR,
    worker=w_pottery,
    compare_to=U_REDIS,
    needs=("redis",),
    note="pottery.Redlock(key, masters={client}, auto_release_time=30): one master.",
)
target(
    unidist=U_REDIS,
    peer="locks.redis.redispy",
    factor=1.0,
    source="#3",
    text="redis lock >=1.0x redis-py Lock",
)
target(
    unidist=U_REDIS,
    peer="locks.redis.redispy",
    factor=1.2,
    source="#11",
    text="redis lock >=1.2x redis-py Lock",
)
target(
    unidist=U_REDIS,
    peer="locks.redis.pottery",
    factor=2.0,
    source="#3",
    text="redis lock >=2x pottery Redlock",
)
target(
    unidist=U_REDIS,
    peer="locks.redis.pottery",
    factor=4.0,
    source="#11",
    text="redis lock >=4x pottery Redlock",
)
