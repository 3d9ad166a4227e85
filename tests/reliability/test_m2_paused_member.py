"""M2: a member stopped (SIGSTOP) past its timeout is declared dead and fenced; resumed, it
rejoins with a new incarnation and its old tokens are refused.

RELIABILITY.md 3.6 M2. A child joins the membership and takes the ``leader`` lock *without a
ttl* (so only membership can free it: on ``file://`` its flock outlives any lease), and
writes a fenced entry as leader. It is stopped. This process, a watching member, sees it
suspected and then dead, which breaks the dead incarnation's lock; it takes the lock (a
larger token) and writes as the new leader. The child is resumed. Pass: it rejoins with a
new incarnation; its ``renew()`` fails, its ``release()`` raises ``LockNotOwned``; its write
with the old token is refused (0 accepted), so fenced operations never had two leaders; the
new leader is untouched.
"""

from __future__ import annotations

import time

import pytest

import unidist
from tests.reliability._lock_proc import Proc, procs
from tests.reliability._report import Result, count, seed
from unidist.cluster import Membership
from unidist.lock import fenced_get, fenced_set

pytestmark = [pytest.mark.multiprocess, pytest.mark.scope("host")]

TTL = 0.6
GRACE = 0.6


def test_m2_resumed_member_rejoins_and_is_fenced(backend_kind: str, backend_url: str) -> None:
    sd = seed()
    runs = count(1, 10)
    res = Result("M2", backend_kind, sd, {"runs": runs, "ttl": TTL, "grace": GRACE})
    stale_accepted = 0
    watcher = Membership(
        backend_url, member_id="m2-watcher", groups=[], ttl=TTL, grace=GRACE, current=False
    )
    lock = unidist.SharedLock("leader", backend=backend_url)
    state = unidist.SharedState("fence", backend=backend_url)
    try:
        watcher.join()
        with procs() as kids:
            for run in range(runs):
                mid = f"m2-{run}"
                kid = Proc("holder", url=backend_url, name="leader",
                           member={"id": mid, "ttl": TTL, "grace": GRACE})  # fmt: skip
                kids.append(kid)
                kid.expect("ready")
                old_inc = kid.ask("incarnation").split()[1]
                old = int(kid.ask("acquire").split()[1])
                owner = lock.owner()
                assert owner is not None
                assert owner["member"] == mid
                assert owner["incarnation"] == old_inc
                assert kid.ask("write leader").startswith("accepted")
                res.attempted += 1
                kid.stop()
                stopped = time.monotonic()
                got = lock.acquire(timeout=TTL + GRACE + 5)
                res.timing("takeover", (time.monotonic() - stopped) * 1000)
                assert got, "the stopped member's lock was never broken"
                assert lock.token is not None
                assert lock.token > old
                assert fenced_set(state, "leader", {"pid": "watcher", "run": run}, lock.token)
                kid.cont()
                deadline = time.monotonic() + 10
                while (new_inc := kid.ask("incarnation").split()[1]) == old_inc:
                    assert time.monotonic() < deadline, "the resumed member never rejoined"
                    time.sleep(0.05)
                renew, release, write = (
                    kid.ask("renew"),
                    kid.ask("release"),
                    kid.ask("write leader"),
                )
                if write.startswith("accepted"):
                    stale_accepted += 1
                value, _ = fenced_get(state, "leader")
                owner = lock.owner()
                fine = (
                    new_inc != old_inc
                    and renew.startswith("lost")
                    and release == "notowned"
                    and write.startswith("rejected")
                    and value == {"pid": "watcher", "run": run}
                    and owner is not None
                    and owner["token"] == lock.token
                )
                if fine:
                    res.ok += 1
                else:
                    res.violations += 1
                    print(f"run {run}: {renew=} {release=} {write=} {value=} {owner=}")
                lock.release()
                kid.send("exit")
    finally:
        res.extra["stale_writes_accepted"] = stale_accepted
        res.extra["locks_broken_by_watcher"] = watcher.fenced
        watcher.leave()
        res.emit()
        unidist.backends.reset()
    assert stale_accepted == 0
    assert res.violations == 0, res.block()
