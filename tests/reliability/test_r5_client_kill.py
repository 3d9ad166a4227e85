"""R5: a client killed mid-operation leaves every object as it was before or after the
operation, never half-way.

A forked child loops over large operations (a 1 MB message put by a Lua script, one HSET of
300 state keys written as one generation, a counter increment by a Lua script) and marks in
shared memory when it is inside a call. The parent ``kill -9``s it at a seeded random
instant, ``count(20, 500)`` times, then checks: every message drains whole and the queue
counts match; all 300 state keys hold the same generation; the counter equals the number
of completed increments, or one more. Kills that land inside a call are counted.

Pass: violations = 0, and at least one kill landed inside a call.
Reproduce: ``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s
tests/reliability/test_r5_client_kill.py``.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import struct
import tempfile
import time

import unidist
from backends.redis.server import RedisServer
from tests.reliability._report import Result, count, seed

KEYS = 300
PAD = "x" * 1_000_000
_SLOT = struct.Struct("qqq")  # inside-a-call flag, increments completed, generation


def _child(url: str, shared: mmap.mmap) -> None:
    be = unidist.connect(url)
    q, c, s = be.queue("q"), be.counter("c"), be.state("s")
    _, done, gen = _SLOT.unpack_from(shared)
    while True:
        gen += 1
        _SLOT.pack_into(shared, 0, 1, done, gen)
        s.update({f"k{i:03d}": {"g": gen, "pad": "y" * 2000} for i in range(KEYS)})
        q.put({"g": gen, "pad": PAD})
        c.incr()
        done += 1
        _SLOT.pack_into(shared, 0, 0, done, gen)


def test_r5_killed_client_leaves_no_half_operation() -> None:
    """kill -9 of a client at any instant never leaves a half-applied operation."""
    seed_value = seed()
    rng = random.Random(seed_value)
    runs = count(20, 500)
    result = Result("R5", "redis", seed_value, params={"runs": runs}, path=tempfile.gettempdir())
    problems: list[str] = []
    inside = 0
    with RedisServer() as server:
        url = f"{server.url}?prefix=r5:"
        shared = mmap.mmap(-1, _SLOT.size)
        be = unidist.connect(url)
        q, c, s = be.queue("q"), be.counter("c"), be.state("s")
        for run in range(runs):
            _SLOT.pack_into(shared, 0, 0, c.get(), run * 1000)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                try:
                    _child(url, shared)
                finally:
                    os._exit(1)
            time.sleep(rng.uniform(0.02, 0.15))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            flag, done, _ = _SLOT.unpack_from(shared)
            inside += flag
            result.attempted += 1
            # State: one HSET of every key, so all keys carry one generation.
            gens = {v["g"] for v in s.values()}
            if len(s) not in (0, KEYS) or len(gens) > 1:
                problems.append(f"run {run}: state holds {len(s)} keys of generations {gens}")
            # Queue: whatever was put drains whole, and the counts agree.
            stats = q.stats()
            drained = 0
            while True:
                try:
                    body = q.get(block=False)
                except unidist.Empty:
                    break
                drained += 1
                if body.get("pad") != PAD:
                    problems.append(f"run {run}: message {body.get('g')} is not whole")
            if drained != stats["ready"] or any(q.stats().values()):
                problems.append(f"run {run}: stats {stats} but {drained} messages drained")
            # Counter: the increments that returned, plus at most the one in flight.
            value = c.get()
            if not done <= value <= done + 1:
                problems.append(f"run {run}: counter {value}, completed increments {done}")
            result.ok += 1
        unidist.backends.reset()
    result.violations = len(problems)
    result.extra.update(kills_inside_a_call=inside)
    result.emit()
    assert problems == []
    assert inside > 0  # the kills really hit operations in flight
