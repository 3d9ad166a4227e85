"""L5: fencing tokens never repeat or go backwards across crashes and backend restarts.

RELIABILITY.md 3.3 L5. Children take and release one lock as fast as they can, printing each
token they were granted, and are killed with ``kill -9`` at seeded random instants (so some
die between a grant and its persistence, others while reserving a new block of tokens).

* ``file://``: two churning processes per cycle, both killed; the next cycle's processes
  start from what is on disk. (The file backend has no server: a "restart" is every process
  dying.)
* Redis with AOF (``appendfsync always``): the server is killed with ``kill -9`` mid-churn and
  restarted from its AOF; Redis without persistence: the same, the server restarts empty
  and tokens continue from the server clock (token = max(last + 1, server time in µs)).

Pass: all tokens distinct, each process's tokens increasing, and every token of a cycle
larger than every token of the cycles before it. Reports the smallest step across a restart.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.redis.server import RedisServer
from tests.reliability._lock_proc import Proc, procs
from tests.reliability._report import Result, count, seed

pytestmark = pytest.mark.multiprocess


def _tokens(lines: list[str]) -> list[int]:
    return [int(t.split()[1]) for t in lines if t.startswith("tok ")]


def _check(res: Result, cycles: list[list[list[int]]]) -> None:
    """``cycles``: per cycle, per process, the tokens it printed."""
    seen: set[int] = set()
    high = 0
    steps: list[int] = []
    for c, per_proc in enumerate(cycles):
        flat = [t for toks in per_proc for t in toks]
        res.attempted += len(flat)
        for toks in per_proc:
            if any(b <= a for a, b in itertools.pairwise(toks)):
                res.violations += 1
        dup = len(flat) - len(set(flat)) + len(seen & set(flat))
        res.duplicated += dup
        if flat:
            if c and min(flat) <= high:
                res.violations += 1
            if c:
                steps.append(min(flat) - high)
            high = max(high, *flat)
        seen |= set(flat)
    res.ok = res.attempted - res.duplicated
    res.extra["restarts"] = len(cycles) - 1
    res.extra["min_delta_across_restart"] = min(steps) if steps else "-"


def test_l5_file_tokens_survive_kills(tmp_path: Path) -> None:
    rng = random.Random(sd := seed())
    url = f"file://{tmp_path / 'data'}"
    n = count(2, 200)
    res = Result("L5", "file", sd, {"cycles": n, "procs": 2}, path=str(tmp_path))
    cycles: list[list[list[int]]] = []
    with procs() as kids:
        # the next pair starts while this one churns and waits for its turn (start-up is
        # not what is measured)
        kids += [Proc("churn", url=url, name="l5", gate=True) for _ in range(2)]
        for c in range(n):
            pair = kids[2 * c : 2 * c + 2]
            if c + 1 < n:
                kids += [Proc("churn", url=url, name="l5", gate=True) for _ in range(2)]
            for kid in pair:
                kid.expect("ready")
                kid.send("go")
            first = [[int(kid.expect("tok "))] for kid in pair]
            time.sleep(rng.uniform(0.0, 0.2))
            for kid in pair:
                kid.kill()
            cycles.append([f + _tokens(kid.drain()) for f, kid in zip(first, pair, strict=True)])
            for kid in pair:
                kid.close()  # a soak runs hundreds of children: free their descriptors now
    _check(res, cycles)
    res.emit()
    assert res.duplicated == 0
    assert res.violations == 0, res.block()
    assert all(any(c) for c in cycles), "a cycle granted no token at all"


@pytest.fixture(params=["aof", "none"])
def redis_restartable(request: pytest.FixtureRequest) -> Iterator[tuple[str, RedisServer]]:
    with RedisServer(aof=request.param == "aof") as server:
        yield request.param, server


def test_l5_redis_tokens_survive_server_kills(
    redis_restartable: tuple[str, RedisServer],
) -> None:
    persistence, server = redis_restartable
    rng = random.Random(sd := seed())
    url = f"{server.url}?prefix=l5:"
    n = count(3, 20)
    res = Result("L5", "redis", sd, {"persistence": persistence, "cycles": n})
    cycles: list[list[list[int]]] = []
    with procs() as kids:
        for c in range(n):
            if c:
                server.restart(hard=True)  # kill -9 of redis-server, then start again
            # a ttl: with AOF the killed child's lease survives the restart until it ends
            kid = Proc("churn", url=url, name="l5", ttl=1.0)
            kids.append(kid)
            first = int(kid.expect("tok "))
            time.sleep(rng.uniform(0.0, 0.2))
            if c + 1 < n:
                server.kill()  # mid-churn: the child dies on the lost connection
            kid.kill()
            cycles.append([[first, *_tokens(kid.drain())]])
    _check(res, cycles)
    res.emit()
    assert res.duplicated == 0
    assert res.violations == 0, res.block()
    assert all(any(c) for c in cycles)
