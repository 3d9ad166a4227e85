"""L3: mutual exclusion measured by overlap, not by counting acquisitions.

RELIABILITY.md 3.3 L3. K processes x M acquisitions: inside the lock each writes its identity
to a shared file, sleeps 1 ms and re-reads it (a changed identity is an overlap); a gauge
file (guarded by its own flock, independent of the lock under test) counts the holders
inside and keeps the maximum. Pass: violations = 0 and max holders = 1, while contentions
(an acquire that found the lock taken) > 0, which proves the run could have failed. For a
semaphore (limit 2, 4 processes): max concurrent <= limit, every process got in every time,
and more than one was inside at once at some point. Default run 3 x 30 and 4 x 10; soak
3 x 1,000 and 4 x 300.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._lock_proc import Proc, procs
from tests.reliability._report import Result, count, seed

pytestmark = [pytest.mark.multiprocess, pytest.mark.scope("host")]


def _run(url: str, tmp: Path, name: str, n: int, rounds: int, limit: int) -> list[dict[str, Any]]:
    path = tmp / f"{name}.ident"
    path.write_bytes(b" " * 32)
    (tmp / f"{name}.ident.gauge").write_bytes(b"0 0".ljust(40))
    with procs() as kids:
        for i in range(n):
            kids.append(
                Proc(
                    "overlap",
                    url=url,
                    name=name,
                    index=i,
                    path=str(path),
                    rounds=rounds,
                    limit=limit,
                )
            )
        for kid in kids:
            kid.expect("ready")
        for kid in kids:
            kid.send("go")
        results = [json.loads(kid.expect("result ", 100)) for kid in kids]
    top = int((tmp / f"{name}.ident.gauge").read_bytes().split()[1])
    for r in results:
        r["gauge_top"] = top
    return results


def test_l3_lock_overlap(backend_kind: str, backend_url: str, tmp_path: Path) -> None:
    sd = seed()
    n, rounds = 3, count(30, 1000)
    results = _run(backend_url, tmp_path, "l3", n, rounds, 1)
    res = Result("L3", backend_kind, sd, {"procs": n, "rounds": rounds, "kind": "lock"})
    res.attempted = n * rounds
    res.ok = sum(r["got"] for r in results)
    res.violations = sum(r["violations"] for r in results)
    contentions = sum(r["contentions"] for r in results)
    top = results[0]["gauge_top"]
    res.extra.update(acquisitions=res.ok, contentions=contentions, max_concurrent=top)
    res.emit()
    assert res.violations == 0
    assert top == 1, f"{top} holders inside the lock at once"
    assert res.ok == n * rounds
    assert contentions > 0, "no acquisition was ever contended: the test proved nothing"


def test_l3_semaphore_limit(backend_kind: str, backend_url: str, tmp_path: Path) -> None:
    sd = seed()
    n, rounds, limit = 4, count(10, 300), 2
    results = _run(backend_url, tmp_path, "l3s", n, rounds, limit)
    res = Result("L3", backend_kind, sd, {"procs": n, "rounds": rounds, "kind": "semaphore"})
    res.attempted = n * rounds
    res.ok = sum(r["got"] for r in results)
    top = results[0]["gauge_top"]
    res.violations = int(top > limit)
    contentions = sum(r["contentions"] for r in results)
    res.extra.update(limit=limit, max_concurrent=top, contentions=contentions)
    res.emit()
    assert top <= limit, f"{top} holders inside a semaphore of limit {limit}"
    assert all(r["got"] == rounds for r in results), "a process did not get in every time"
    assert top > 1, "never more than one inside: the semaphore was not exercised"
    assert contentions > 0
