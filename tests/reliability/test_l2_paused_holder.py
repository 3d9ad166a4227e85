"""L2: a holder paused (SIGSTOP) longer than its lease, then resumed: the GC-pause case.

RELIABILITY.md 3.3 L2. A child takes the lock with ttl ``TTL`` and is stopped; this process
takes the lock once the lease ran out (a larger token) and writes a fenced entry with it.
The child is resumed and, in a seeded order, renews, releases and writes with its old token.
Pass: ``renew()`` fails (``lost`` set), ``release()`` raises ``LockNotOwned`` and leaves the
new holder untouched, the stale fenced write is rejected (0 accepted), the new holder still
holds the lock and releases it normally.
"""

from __future__ import annotations

import random
import time

import pytest

import unidist
from tests.reliability._lock_proc import Proc, procs, staged
from tests.reliability._report import Result, count, seed
from unidist.lock import fenced_get, fenced_set

pytestmark = [pytest.mark.multiprocess, pytest.mark.scope("host")]

TTL = 0.5


def test_l2_resumed_holder_is_fenced(backend_kind: str, backend_url: str) -> None:
    rng = random.Random(sd := seed())
    runs = count(2, 20)
    res = Result("L2", backend_kind, sd, {"runs": runs, "ttl": TTL})
    stale_attempted = stale_accepted = 0
    lock = unidist.SharedLock("l2", backend=backend_url)
    state = unidist.SharedState("fence", backend=backend_url)
    try:
        with procs() as kids:
            make = lambda: Proc("holder", url=backend_url, name="l2", ttl=TTL)  # noqa: E731
            for run, kid in enumerate(staged(kids, runs, make)):
                old = int(kid.ask("acquire").split()[1])
                assert kid.ask("write res").startswith("accepted")
                res.attempted += 1
                kid.stop()
                stopped = time.monotonic()
                assert lock.acquire(timeout=TTL + 5), "lease of a stopped holder never ended"
                res.timing("takeover", (time.monotonic() - stopped) * 1000)
                assert lock.token is not None
                assert lock.token > old
                assert fenced_set(state, "res", {"pid": "parent", "run": run}, lock.token)
                kid.cont()
                order = ["renew", "release", "write"]
                rng.shuffle(order)
                answers = {cmd: kid.ask(cmd if cmd != "write" else "write res") for cmd in order}
                stale_attempted += 1
                if answers["write"].startswith("accepted"):
                    stale_accepted += 1
                value, tok = fenced_get(state, "res")
                owner = lock.owner()
                fine = (
                    answers["renew"].startswith("lost")
                    and answers["release"] == "notowned"
                    and answers["write"].startswith("rejected")
                    and value == {"pid": "parent", "run": run}
                    and tok == lock.token
                    and owner is not None
                    and owner["token"] == lock.token
                )
                if fine:
                    res.ok += 1
                else:
                    res.violations += 1
                    print(f"run {run}: order {order} answers {answers} owner {owner}")
                lock.release()  # the new holder was never disturbed: this must not raise
                kid.send("exit")
    finally:
        res.extra["stale_writes_attempted"] = stale_attempted
        res.extra["stale_writes_accepted"] = stale_accepted
        res.emit()
        unidist.backends.reset()
    assert stale_accepted == 0
    assert res.violations == 0, res.block()
    assert res.ok == runs
