"""Child processes of the queue scenarios (Q2, Q5): ``python _queue_procs.py KIND ARGS...``.

Kinds:
    put-delayed URL QUEUE N SEED      puts N messages with delays of 0.6-1.2 s, then exits;
                                      prints one JSON line [id, due (wall-clock s)] per put
    produce URL QUEUE PREFIX START END
                                      puts ids PREFIX-START..PREFIX-(END-1) (client ids, so a
                                      retry after a crash never duplicates); prints
                                      ``P <id>`` once each put has returned (acknowledged)
    consume URL QUEUE MODE RECORD VT WORK_MS
                                      MODE ``get`` or ``receive``; forever: take a message,
                                      append its id to RECORD (O_APPEND, one write: what
                                      "processed" means), sleep WORK_MS, then ack (receive)

The parent kills these with SIGKILL at random instants; what they reported, what RECORD
holds and what the queue still holds are then compared (see ``_queue_account.py``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402


def put_delayed(url: str, queue: str, n: str, seed: str) -> None:
    rng = random.Random(int(seed))
    q = unidist.MessageQueue(queue, backend=url)
    for i in range(int(n)):
        delay = rng.uniform(0.6, 1.2)
        due = time.time() + delay
        msg_id = q.put({"i": i, "due": due}, delay=delay, priority=rng.choice([0, 0, 1]))
        print(json.dumps([msg_id, due]), flush=True)


def produce(url: str, queue: str, prefix: str, start: str, end: str) -> None:
    q = unidist.MessageQueue(queue, backend=url)
    for j in range(int(start), int(end)):
        msg_id = f"{prefix}-{j}"
        q.put({"id": msg_id, "pad": "x" * 64}, id=msg_id)
        sys.stdout.write(f"P {msg_id}\n")
        sys.stdout.flush()


def consume(url: str, queue: str, mode: str, record: str, vt: str, work_ms: str) -> None:
    q = unidist.MessageQueue(queue, backend=url, visibility_timeout=float(vt), max_attempts=100)
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    work = float(work_ms) / 1000
    while True:
        try:
            if mode == "get":
                body = q.get(timeout=0.5)
                assert isinstance(body, dict)
                os.write(fd, f"{body['id']} 1\n".encode())
                continue
            m = q.receive(timeout=0.5)
        except unidist.Empty:
            continue
        assert isinstance(m.body, dict)
        os.write(fd, f"{m.body['id']} {m.attempts}\n".encode())
        time.sleep(work)  # "processing": a kill lands here most of the time
        m.ack()


KINDS = {"put-delayed": put_delayed, "produce": produce, "consume": consume}

if __name__ == "__main__":
    KINDS[sys.argv[1]](*sys.argv[2:])
