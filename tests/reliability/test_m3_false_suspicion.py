"""M3: false suspicion under CPU and I/O stress, measured and reported.

RELIABILITY.md 3.6 M3. Members that never die heartbeat (ttl ``TTL``, grace ``GRACE``) while
two processes burn CPU and one writes and fsyncs in a loop, on a machine that may have only
two cores. This process watches. Every ``suspect`` event is a false positive (nobody died),
and so is every ``left`` event (a false death: the member rejoins with a new incarnation and
its locks are fenced). Reports both as counts and per member-minute.

Membership reports suspicion, not truth: the pass criteria are that the figures are
reported and that the view heals: once the stress ends, every member is in the view again
(same or new incarnation) within ttl + grace + 2 s.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import unidist
from tests.reliability._lock_proc import Proc, procs
from tests.reliability._report import Result, count, seed
from unidist.cluster import MemberEvent, Membership

pytestmark = [pytest.mark.multiprocess, pytest.mark.scope("host")]

TTL = 1.0
GRACE = 1.0
MEMBERS = 3
CPU_BURN = "import time\nend = time.monotonic() + {d}\nwhile time.monotonic() < end: pass\n"
IO_BURN = (
    "import os, time\nend = time.monotonic() + {d}\n"
    "fd = os.open({p!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
    "while time.monotonic() < end:\n"
    "    os.write(fd, b'x' * 65536); os.fsync(fd)\n"
    "    if os.lseek(fd, 0, 1) > 64 << 20: os.ftruncate(fd, 0); os.lseek(fd, 0, 0)\n"
)


def test_m3_false_suspicion_rate_under_stress(
    backend_kind: str, backend_url: str, tmp_path: Path
) -> None:
    sd = seed()
    duration = count(2, 120)
    res = Result("M3", backend_kind, sd, {"members": MEMBERS, "ttl": TTL, "grace": GRACE,
                                          "stress_s": duration})  # fmt: skip
    events: list[MemberEvent] = []
    watcher = Membership(
        backend_url, member_id="m3-watcher", groups=[], ttl=TTL, grace=GRACE, current=False
    )
    burners: list[subprocess.Popen[bytes]] = []
    ids = {f"m3-{i}" for i in range(MEMBERS)}
    try:
        watcher.join()
        with procs() as kids:
            for mid in sorted(ids):
                kids.append(
                    Proc("member", url=backend_url, member={"id": mid, "ttl": TTL, "grace": GRACE})
                )
            for kid in kids:
                kid.expect("ready")
            watcher.watch(
                lambda e: events.append(e) if e.member.id in ids else None, suspicion=True
            )
            started = time.monotonic()
            burners += [
                subprocess.Popen([sys.executable, "-c", CPU_BURN.format(d=duration)])
                for _ in range(2)
            ]
            io = IO_BURN.format(d=duration, p=str(tmp_path / "io-burn"))
            burners.append(subprocess.Popen([sys.executable, "-c", io]))
            for b in burners:
                b.wait(duration + 30)
            stressed = time.monotonic() - started
            end = time.monotonic() + TTL + GRACE + 2
            while {m.id for m in watcher.members()} < ids and time.monotonic() < end:
                time.sleep(0.1)
            healed = {m.id for m in watcher.members()} >= ids
    finally:
        for b in burners:
            if b.poll() is None:
                b.kill()
            b.wait()
        watcher.leave()
        unidist.backends.reset()
    suspects = sum(e.kind == "suspect" for e in events)
    deaths = sum(e.kind == "left" for e in events)
    member_minutes = MEMBERS * stressed / 60
    res.attempted = MEMBERS
    res.ok = MEMBERS if healed else 0
    res.extra.update(
        false_suspicions=suspects,
        false_deaths=deaths,
        suspicions_per_member_minute=round(suspects / member_minutes, 2),
        deaths_per_member_minute=round(deaths / member_minutes, 2),
        healed=healed,
    )
    res.emit()
    assert healed, "members still missing from the view after the stress ended"
