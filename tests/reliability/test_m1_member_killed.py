"""M1: a member killed with ``kill -9`` is suspected after its ttl and dead after the grace.

RELIABILITY.md 3.6 M1. Child processes join the membership (ttl ``TTL``, grace ``GRACE``),
this process watches as another member, and the children are killed one at a time with
SIGKILL. Pass, for each: a ``suspect`` event, then a ``left`` event (dead), suspicion no
earlier than the ttl after the kill minus one heartbeat interval and within ttl + 1 s, death
within ttl + grace + 1 s. Reports detection latency p50/p99/max of both.
"""

from __future__ import annotations

import queue
import time

import pytest

import unidist
from tests.reliability._lock_proc import Proc, procs
from tests.reliability._report import Result, count, seed
from unidist.cluster import MemberEvent, Membership

pytestmark = [pytest.mark.multiprocess, pytest.mark.scope("host")]

TTL = 0.6
GRACE = 0.6
SLACK = 1.0
#: members started at once (the soak kills 50 in batches)
BATCH = 5


def test_m1_killed_member_suspected_then_dead(backend_kind: str, backend_url: str) -> None:
    sd = seed()
    n = count(2, 50)
    res = Result("M1", backend_kind, sd, {"members": n, "ttl": TTL, "grace": GRACE})
    events: queue.Queue[tuple[float, MemberEvent]] = queue.Queue()
    watcher = Membership(
        backend_url, member_id="m1-watcher", groups=[], ttl=TTL, grace=GRACE, current=False
    )
    try:
        watcher.join()
        watcher.watch(lambda e: events.put((time.monotonic(), e)), suspicion=True)
        for batch in range(0, n, BATCH):
            _kill_batch(backend_url, watcher, events, res, range(batch, min(n, batch + BATCH)))
    finally:
        watcher.leave()
        res.emit()
        unidist.backends.reset()
    assert res.violations == 0, res.block()


def _kill_batch(
    url: str,
    watcher: Membership,
    events: queue.Queue[tuple[float, MemberEvent]],
    res: Result,
    indexes: range,
) -> None:
    """Start members ``indexes`` at once, then kill them one at a time."""
    with procs() as kids:
        for i in indexes:
            kids.append(Proc("member", url=url, member={"id": f"m1-{i}", "ttl": TTL,
                                                        "grace": GRACE}))  # fmt: skip
        incs = {f"m1-{i}": kid.expect("ready").split()[1] for i, kid in zip(indexes, kids)}
        deadline = time.monotonic() + 30
        while {m.id for m in watcher.members()} < set(incs):
            assert time.monotonic() < deadline, "children never showed up in the view"
            time.sleep(0.05)
        for i, kid in zip(indexes, kids):
            mid = f"m1-{i}"
            res.attempted += 1
            # a loaded machine may have made it rejoin (a false death): follow the
            # incarnation it has now
            now = {m.id: m.incarnation for m in watcher.members()}
            incs[mid] = now.get(mid, incs[mid])
            killed = time.monotonic()
            kid.kill()
            suspect_at = dead_at = None
            end = killed + TTL + GRACE + SLACK + 5
            while dead_at is None and time.monotonic() < end:
                try:
                    at, ev = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if ev.member.id != mid or ev.member.incarnation != incs[mid] or at < killed:
                    continue
                if ev.kind == "suspect" and suspect_at is None:
                    suspect_at = at - killed
                elif ev.kind == "left":
                    dead_at = at - killed
            if suspect_at is not None:
                res.timing("suspect", suspect_at * 1000)
            if dead_at is not None:
                res.timing("dead", dead_at * 1000)
            fine = (
                suspect_at is not None
                and dead_at is not None
                and TTL * 2 / 3 - 0.05 <= suspect_at <= TTL + SLACK
                and suspect_at <= dead_at <= TTL + GRACE + SLACK
            )
            if fine:
                res.ok += 1
            else:
                res.violations += 1
                print(f"{mid}: suspect after {suspect_at}, dead after {dead_at}")
