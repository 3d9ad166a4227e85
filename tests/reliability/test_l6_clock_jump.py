"""L6: a clock jump in one client neither steals a live lock nor stretches a lease.

RELIABILITY.md 3.3 L6. Child processes run with ``$UNIDIST_CLOCK_SKEW`` (see
:mod:`unidist._clock`), a wall clock one hour off, as after an NTP step or ``date -s`` in
that client:

* a waiter one hour *ahead* tries for a live lock (ttl 30 s) for ``WAIT`` seconds: it must
  not get it (the holder's owner record and token stay the same);
* a holder one hour *behind* takes the lock with ttl ``TTL`` and stops renewing: an honest
  waiter gets the lock about ``TTL`` later, not an hour later.

Expiry is judged by the backend's clock: the Redis server's ``TIME``, the host's monotonic
clock on ``file://``. Pass: steals = 0, every stretched lease taken over within TTL + 1 s.
"""

from __future__ import annotations

import time

import pytest

import unidist
from tests.reliability._lock_proc import Proc, procs
from tests.reliability._report import Result, count, seed

pytestmark = [pytest.mark.multiprocess, pytest.mark.scope("host")]

HOUR = 3600.0
WAIT = 1.0
TTL = 0.5


def test_l6_clock_jump_in_one_client(backend_kind: str, backend_url: str) -> None:
    sd = seed()
    runs = count(1, 10)
    res = Result("L6", backend_kind, sd, {"runs": runs, "skew_s": HOUR})
    steals = 0
    lock = unidist.SharedLock("l6", backend=backend_url, ttl=30)
    try:
        with procs() as kids:
            for _ in range(runs):
                ahead = Proc("holder", env={"UNIDIST_CLOCK_SKEW": str(HOUR)}, url=backend_url,
                             name="l6")  # fmt: skip
                behind = Proc("holder", env={"UNIDIST_CLOCK_SKEW": str(-HOUR)}, url=backend_url,
                              name="l6", ttl=TTL)  # fmt: skip
                kids += [ahead, behind]
                ahead.expect("ready")
                behind.expect("ready")
                for kid, skew in ((ahead, HOUR), (behind, -HOUR)):  # the skew is in effect
                    assert abs(float(kid.ask("clock").split()[1]) - time.time() - skew) < 60
                # 1. a waiter one hour ahead against a live lock
                assert lock.acquire(timeout=5)
                before = lock.owner()
                res.attempted += 1
                if ahead.ask(f"acquire {WAIT}", WAIT + 30) != "timeout":
                    steals += 1
                after = lock.owner()
                if after is None or before is None or after["token"] != before["token"]:
                    steals += 1
                lock.release()
                # 2. a holder one hour behind: its lease ends on the backend's clock
                assert behind.ask("acquire").startswith("acquired")
                res.attempted += 1
                start = time.monotonic()
                got = lock.acquire(timeout=TTL + 10)
                took = time.monotonic() - start
                res.timing("takeover", took * 1000)
                if got and took <= TTL + 1.0:
                    res.ok += 1
                else:
                    res.violations += 1
                if got:
                    lock.release()
                if steals == 0:
                    res.ok += 1
                ahead.send("exit")
                behind.send("exit")
    finally:
        res.violations += steals
        res.extra["steals"] = steals
        res.emit()
        unidist.backends.reset()
    assert steals == 0, "a client with its clock an hour ahead took a live lock"
    assert res.violations == 0, res.block()
