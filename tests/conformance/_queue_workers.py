"""Child-process workers for the cross-process conformance tests (queues and buckets).

Run as ``python _queue_workers.py COMMAND ARGS...``; each command prints its result on stdout
(JSON or an int) and exits 0, or exits non-zero with a traceback on stderr.

Commands:
    transform URL BUCKET KEY N BARRIER_DIR PARTIES   N atomic increments of KEY; prints N
    dump-state URL BUCKET                            prints the bucket as a JSON object
    produce URL QUEUE PREFIX N BARRIER_DIR PARTIES   puts N messages with ids PREFIX-0..N-1
    consume-get URL QUEUE BARRIER_DIR PARTIES        get() until a "STOP" body; prints ids
    consume-receive URL QUEUE BARRIER_DIR PARTIES NACK_PERCENT SEED
                                                     receive()+ack() until "STOP"; nacks about
                                                     NACK_PERCENT % of deliveries first; prints
                                                     the ids it acked
    dump-queue URL QUEUE                             get(block=False) until Empty; prints bodies
    race-transform URL BUCKET KEY N BARRIER_DIR PARTIES
                                                     N transforms with a non-None default; prints N
    race-toggle URL BUCKET KEY N BARRIER_DIR PARTIES N null/absent cycles; prints violations

A barrier is a directory: each party creates a file in it, then waits (polling against a
deadline) until PARTIES files exist, so that all workers start their loops together.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402

STOP = "STOP"
BARRIER_TIMEOUT = 60.0
IDLE_TIMEOUT = 30.0


def start_worker(argv: list[str]) -> subprocess.Popen[str]:
    """Start ``python _queue_workers.py *argv`` with its stdout and stderr captured."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reap(procs: list[subprocess.Popen[str]], timeout: float = 120) -> list[str]:
    """Wait for every worker and return their stdouts.

    Fails (AssertionError) if a worker exits non-zero; kills and reaps every worker still
    running when the timeout passes or anything goes wrong, so no child outlives a test.
    """
    outs: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            assert proc.returncode == 0, f"worker {proc.args[2:]} exited {proc.returncode}:\n{err}"
            outs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    return outs


def run_workers(argvs: list[list[str]], timeout: float = 120) -> list[str]:
    """Start one worker per argv at once, reap them all, return their stdouts."""
    return reap([start_worker(argv) for argv in argvs], timeout)


def barrier(directory: str, parties: int) -> None:
    """Wait until ``parties`` processes have reached this barrier directory."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while sum(1 for _ in path.iterdir()) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {directory}: fewer than {parties} parties arrived")
        time.sleep(0.005)


def transform(url: str, bucket: str, key: str, n: str, bdir: str, parties: str) -> None:
    s = unidist.SharedState(bucket, backend=url)
    barrier(bdir, int(parties))
    for _ in range(int(n)):
        s.transform(key, lambda v: v + 1, default=0)
    print(int(n))


DEFAULT = "DEFAULT"


def _origin(value: object) -> dict[str, str]:
    """What a racing transform saw: the default (key absent), a stored null, or a value."""
    seen = "default" if value == DEFAULT else "null" if value is None else "value"
    return {"from": seen, "w": uuid.uuid4().hex}


def race_transform_once(s: unidist.SharedState, key: str) -> None:
    """One transform with a non-None default that records what ``fn`` was given."""
    s.transform(key, _origin, default=DEFAULT)


def race_toggle_once(s: unidist.SharedState, key: str) -> int:
    """One cycle of the null/absent toggler; returns the violations it saw (0 or more).

    The toggler is the only writer of null and the only deleter. After it stores null the
    key is never absent until its own pop, so a value it pops must not come from a transform
    that was given the default; after that pop the key is never null until its next store,
    so the value of a second pop must not come from a transform that was given a null.
    """
    bad = 0
    s[key] = None
    first = s.pop(key, None)
    if isinstance(first, dict) and first["from"] == "default":
        bad += 1
    second = s.pop(key, None)
    if isinstance(second, dict) and second["from"] == "null":
        bad += 1
    return bad


def race_transform(url: str, bucket: str, key: str, n: str, bdir: str, parties: str) -> None:
    s = unidist.SharedState(bucket, backend=url)
    barrier(bdir, int(parties))
    for _ in range(int(n)):
        race_transform_once(s, key)
    print(int(n))


def race_toggle(url: str, bucket: str, key: str, n: str, bdir: str, parties: str) -> None:
    s = unidist.SharedState(bucket, backend=url)
    barrier(bdir, int(parties))
    print(sum(race_toggle_once(s, key) for _ in range(int(n))))


def dump_state(url: str, bucket: str) -> None:
    print(json.dumps(unidist.SharedState(bucket, backend=url).snapshot()))


def produce(url: str, queue: str, prefix: str, n: str, bdir: str, parties: str) -> None:
    q = unidist.MessageQueue(queue, backend=url)
    barrier(bdir, int(parties))
    for j in range(int(n)):
        q.put({"id": f"{prefix}-{j}", "pad": "x" * 40}, id=f"{prefix}-{j}")
    print(int(n))


def consume_get(url: str, queue: str, bdir: str, parties: str) -> None:
    q = unidist.MessageQueue(queue, backend=url)
    barrier(bdir, int(parties))
    seen: list[str] = []
    while True:
        body = q.get(timeout=IDLE_TIMEOUT)
        if body == STOP:
            break
        assert isinstance(body, dict)
        seen.append(str(body["id"]))
    print(json.dumps(seen))


def consume_receive(
    url: str, queue: str, bdir: str, parties: str, nack_percent: str, seed: str
) -> None:
    q = unidist.MessageQueue(queue, backend=url, visibility_timeout=20, max_attempts=1000)
    rng = random.Random(int(seed))
    barrier(bdir, int(parties))
    acked: list[str] = []
    while True:
        m = q.receive(timeout=IDLE_TIMEOUT)
        if m.body == STOP:
            m.ack()
            break
        if rng.random() * 100 < float(nack_percent):
            m.nack()  # redelivered at once to some consumer
            continue
        assert isinstance(m.body, dict)
        if m.ack():
            acked.append(str(m.body["id"]))
    print(json.dumps(acked))


def dump_queue(url: str, queue: str) -> None:
    q = unidist.MessageQueue(queue, backend=url)
    bodies = []
    while True:
        try:
            bodies.append(q.get(block=False))
        except unidist.Empty:
            break
    print(json.dumps(bodies))


COMMANDS = {
    "transform": transform,
    "dump-state": dump_state,
    "race-transform": race_transform,
    "race-toggle": race_toggle,
    "produce": produce,
    "consume-get": consume_get,
    "consume-receive": consume_receive,
    "dump-queue": dump_queue,
}


if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
