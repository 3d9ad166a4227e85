"""Child process of the multi-process membership tests.

Run as ``python _members.py URL MEMBER_ID TTL ROLE``; prints one JSON object per line:

* ``holder``: joins, receives every message already queued on ``work`` without acking
  (``{"holding": [ids]}``), then sleeps; on SIGCONT after a pause it tries to ack them and
  prints ``{"acked": [results], "incarnation": ..., "old": ...}``.
* ``consumer``: joins, watches the view (``{"left": id, "incarnation": ..., "t": ...}``) and
  receives+acks messages (``{"got": id, "attempts": n, "t": ...}``) until killed.

Every line carries ``t`` (time.time() when printed). ``{"ready": true}`` follows the join.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402
from unidist.cluster import MemberEvent, Membership  # noqa: E402

_out = threading.Lock()


def say(**fields: Any) -> None:
    fields["t"] = time.time()
    with _out:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def holder(m: Membership, q: unidist.MessageQueue) -> None:
    held = []
    while True:
        try:
            held.append(q.receive(block=False))
        except unidist.Empty:
            break
    old = m.incarnation
    resumed = threading.Event()
    signal.signal(signal.SIGCONT, lambda *_: resumed.set())
    say(holding=[msg.id for msg in held], incarnation=old)
    # Poll: the signal may be taken by another thread, which does not wake this one.
    while not resumed.wait(0.05):
        pass
    # Give the heartbeat thread a moment to notice the lapse and rejoin.
    deadline = time.monotonic() + 5
    while m.incarnation == old and time.monotonic() < deadline:
        time.sleep(0.05)
    say(acked=[msg.ack() for msg in held], incarnation=m.incarnation, old=old)
    time.sleep(3600)


def consumer(m: Membership, q: unidist.MessageQueue) -> None:
    def on_event(event: MemberEvent) -> None:
        if event.kind == "left":
            say(left=event.member.id, incarnation=event.member.incarnation)
        else:
            say(joined=event.member.id, incarnation=event.member.incarnation)

    m.watch(on_event)
    while True:
        try:
            msg = q.receive(timeout=0.2)
        except unidist.Empty:
            continue
        say(got=msg.id, attempts=msg.attempts)
        msg.ack()


def main() -> None:
    faulthandler.register(signal.SIGUSR1)
    url, member_id, ttl, role = sys.argv[1:5]
    be = unidist.connect(url)
    q = be.queue("work", visibility_timeout=60)
    m = Membership(be, member_id=member_id, groups=["workers"], ttl=float(ttl))
    m.join()
    say(ready=True, incarnation=m.incarnation)
    {"holder": holder, "consumer": consumer}[role](m, q)


if __name__ == "__main__":
    main()
