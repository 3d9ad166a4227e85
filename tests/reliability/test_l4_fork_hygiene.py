"""L4: fork hygiene and per-acquisition ownership.

RELIABILITY.md 3.3 L4. (a) A holder ``os.fork()``s a child that sleeps with every inherited
descriptor open, then the holder is killed with ``kill -9``: the lock must be free within
1 s on ``file://`` (the child closed its inherited flock descriptors at fork) and within
ttl + 1 s on Redis. (b) On ``file://`` a third party in the holder's process opens and closes
the lock's files (what a backup tool or a careless library does): the lock stays held, as it
would not with ``fcntl``/``lockf`` locks. (c) Two ``SharedLock`` objects with one name in one
thread contend.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import unidist
from tests.reliability._lock_proc import Proc, kill_pid, procs, staged
from tests.reliability._report import Result, count, seed

pytestmark = pytest.mark.multiprocess

TTL = {"file": 5.0, "redis": 0.5}
BOUND = {"file": 1.0, "redis": TTL["redis"] + 1.0}


@pytest.mark.scope("host")
def test_l4_killed_parent_of_a_forked_child_frees_the_lock(
    backend_kind: str, backend_url: str
) -> None:
    sd = seed()
    runs = count(2, 20)
    res = Result("L4", backend_kind, sd, {"runs": runs, "case": "fork+kill"})
    bound = BOUND[backend_kind]
    lock = unidist.SharedLock("l4", backend=backend_url)
    grandchildren: list[int] = []
    try:
        with procs() as kids:
            ttl = TTL[backend_kind]
            make = lambda: Proc("holder", url=backend_url, name="l4", ttl=ttl)  # noqa: E731
            for kid in staged(kids, runs, make):
                old = int(kid.ask("acquire").split()[1])
                grandchildren.append(int(kid.ask("fork 60").split()[1]))
                assert kid.ask("contend") == "contend refused"  # (c), in the holder's thread
                res.attempted += 1
                killed = time.monotonic()
                kid.kill()
                got = lock.acquire(timeout=bound + 5)
                took = time.monotonic() - killed
                res.timing("handover", took * 1000)
                assert got, "lock never freed after its holder was killed"
                Path(f"/proc/{grandchildren[-1]}").stat()  # the forked child still lives
                if took <= bound and lock.token is not None and lock.token > old:
                    res.ok += 1
                else:
                    res.violations += 1
                lock.release()
    finally:
        for pid in grandchildren:
            kill_pid(pid)
        res.emit()
        unidist.backends.reset()
    assert res.violations == 0, res.block()


def test_l4_third_party_open_close_keeps_a_file_lock(tmp_path: Path) -> None:
    sd = seed()
    url = f"file://{tmp_path / 'data'}"
    res = Result("L4", "file", sd, {"case": "third-party open/close"}, path=str(tmp_path))
    lock = unidist.SharedLock("l4t", backend=url)
    try:
        with procs() as kids:
            kid = Proc("holder", url=url, name="l4t")
            kids.append(kid)
            kid.expect("ready")
            kid.ask("acquire")
            touched = int(kid.ask("touch").split()[1])
            assert touched >= 2, "expected the meta and slot files"
            res.attempted = 1
            still_held = lock.acquire(blocking=False) is False
            renewed = kid.ask("renew") == "renewed"
            released = kid.ask("release") == "released"
            res.ok = int(still_held and renewed and released)
            res.violations = 1 - res.ok
            res.extra["files_touched"] = touched
            assert lock.acquire(timeout=1), "lock not free after its holder released it"
            lock.release()
    finally:
        res.emit()
        unidist.backends.reset()
    assert still_held, "a third-party open/close in the holder's process dropped the lock"
    assert renewed
    assert released
