"""Membership with real processes over file:// and redis:// (RELIABILITY 3.6 M1, M2).

A member killed with ``kill -9`` (or stopped with SIGSTOP past its ttl) is seen to leave by
the others within ttl + 1 s, and the messages it had received but not acked are delivered to
another consumer within that time, though their visibility timeout is a minute. A stopped
member that resumes rejoins with a new incarnation and its old deliveries are fenced.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import unidist
from unidist.cluster import Membership

pytestmark = [pytest.mark.multiprocess, pytest.mark.scope("host")]

HERE = Path(__file__).resolve().parent
TTL = 2.0
SLACK = 1.0


class Child:
    """A ``_members.py`` process whose JSON lines are collected by a reader thread."""

    def __init__(self, url: str, member_id: str, role: str) -> None:
        self.id = member_id
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_members.py"), url, member_id, str(TTL), role],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def expect(self, key: str, timeout: float = 20) -> dict[str, Any]:
        """The first (new or already seen) line holding ``key``."""
        for rec in self.seen:
            if key in rec:
                return rec
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                rec = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                pytest.fail(f"{self.id}: no {key!r} line within {timeout} s; {self.seen}; "
                            f"{self.stacks()}")  # fmt: skip
            self.seen.append(rec)
            if key in rec:
                return rec

    def stacks(self) -> str:
        """Kill the child after it printed its threads' stacks (faulthandler on SIGUSR1)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(0.5)
            self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.proc.poll() is None:
            os.kill(child.proc.pid, signal.SIGCONT)
        child.kill()


def _start_holder_and_consumers(
    url: str, children: list[Child], n_messages: int
) -> tuple[Child, list[Child], list[str]]:
    q = unidist.MessageQueue("work", backend=url, visibility_timeout=60)
    ids = [q.put(i) for i in range(n_messages)]
    holder = Child(url, "holder", "holder")
    children.append(holder)
    assert sorted(holder.expect("holding")["holding"]) == sorted(ids)
    consumers = [Child(url, f"consumer{i}", "consumer") for i in range(2)]
    children.extend(consumers)
    for c in consumers:
        c.expect("ready")
    assert q.stats()["in_flight"] == n_messages
    return holder, consumers, ids


def _check_left_and_redelivered(
    consumers: list[Child], ids: list[str], since: float, incarnation: str
) -> None:
    deadline = since + TTL + SLACK
    for c in consumers:
        left = c.expect("left")
        assert left["left"] == "holder"
        assert left["incarnation"] == incarnation
        assert left["t"] <= deadline, f"{c.id} saw the holder leave {left['t'] - since:.2f} s late"
    end = time.monotonic() + TTL + 5
    got: dict[str, dict[str, Any]] = {}
    while len(got) < len(ids) and time.monotonic() < end:
        for c in consumers:
            for rec in c.drain():
                if "got" in rec:
                    got[rec["got"]] = rec
        time.sleep(0.02)
    assert sorted(got) == sorted(ids)
    for rec in got.values():
        assert rec["attempts"] == 2
        assert rec["t"] <= deadline, f"redelivered {rec['t'] - since:.2f} s after the loss"


def test_killed_member_leaves_and_its_messages_move_on(
    backend_url: str, children: list[Child]
) -> None:
    holder, consumers, ids = _start_holder_and_consumers(backend_url, children, 3)
    incarnation = holder.expect("holding")["incarnation"]
    observer = Membership(backend_url, member_id="observer", current=False)
    assert "holder" in [m.id for m in observer.members(group="workers")]
    os.kill(holder.proc.pid, signal.SIGKILL)
    killed = time.time()
    holder.proc.wait(10)
    _check_left_and_redelivered(consumers, ids, killed, incarnation)
    assert "holder" not in [m.id for m in observer.members()]
    assert sorted(m.id for m in observer.members(group="workers")) == ["consumer0", "consumer1"]
    stats = unidist.MessageQueue("work", backend=backend_url).stats()
    assert stats == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


def test_stopped_member_rejoins_with_new_incarnation_and_is_fenced(
    backend_url: str, children: list[Child]
) -> None:
    holder, consumers, ids = _start_holder_and_consumers(backend_url, children, 2)
    old = holder.expect("holding")["incarnation"]
    os.kill(holder.proc.pid, signal.SIGSTOP)
    stopped = time.time()
    _check_left_and_redelivered(consumers, ids, stopped, old)
    os.kill(holder.proc.pid, signal.SIGCONT)
    resumed = holder.expect("acked")
    assert resumed["old"] == old
    assert resumed["incarnation"] != old
    assert resumed["acked"] == [False] * len(ids)  # its old deliveries are fenced
    end = time.monotonic() + TTL + 5
    for c in consumers:
        while not any(
            r.get("joined") == "holder" and r["incarnation"] == resumed["incarnation"]
            for r in c.drain()
        ):
            assert time.monotonic() < end, f"{c.id} did not see the holder rejoin"
            time.sleep(0.02)
