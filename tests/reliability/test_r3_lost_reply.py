"""R3: ambiguous outcomes. A loopback proxy forwards every command to redis-server and, at
a seeded random 10 % of replies, swallows the reply and closes the connection: the command
ran but the client cannot know.

* Queue puts carry a client-generated id; unidist retries a put with the same id and a
  per-call nonce, and the application retries a put that still failed with the same id.
  A consumer on a direct connection takes messages as fast as they come, so a retry often
  arrives after the first attempt's message was already consumed.
* Counter increments are retried with a request id the server remembers, so a retry never
  adds twice; when the retry budget runs out the call raises ``OutcomeUnknown``.

Pass: every put consumed exactly once (duplicated = 0, lost = 0); the counter equals the
acknowledged increments plus at most the ``OutcomeUnknown`` ones (double increments = 0).
Reproduce: ``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s
tests/reliability/test_r3_lost_reply.py``.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter

import unidist
from backends.redis.server import RedisServer
from tests.reliability._redis_proxy import LossyProxy
from tests.reliability._report import Result, count, seed
from unidist.errors import BackendUnavailable, OutcomeUnknown

DROP_RATE = 0.1


def test_r3_lost_replies_never_duplicate_puts_or_increments() -> None:
    """Puts are never duplicated and increments never double-applied when replies are lost."""
    n = count(150, 20_000)
    seed_value = seed()
    result = Result(
        "R3", "redis", seed_value, params={"drop_rate": DROP_RATE}, path=tempfile.gettempdir()
    )
    with RedisServer() as server:
        proxy = LossyProxy(server.port, DROP_RATE, seed_value)
        lossy = f"redis://127.0.0.1:{proxy.port}/0?prefix=r3:&retry_for=2"
        direct = f"{server.url}?prefix=r3:"
        consumed: Counter[str] = Counter()
        done = threading.Event()

        def consume() -> None:
            q = unidist.connect(direct).queue("q")
            while True:
                try:
                    with q.receive(timeout=0.2) as m:
                        consumed[m.body["id"]] += 1
                except unidist.Empty:
                    if done.is_set():
                        return

        consumer = threading.Thread(target=consume)
        consumer.start()
        try:
            be = unidist.connect(lossy)
            q, c = be.queue("q"), be.counter("c")
            put_ok, put_retried = [], 0
            incr_ok, incr_unknown = 0, 0
            errors: Counter[str] = Counter()
            t0 = time.monotonic()
            for i in range(n):
                msg_id = f"m{i}"
                while True:  # the application's retry: the same id again
                    try:
                        q.put({"id": msg_id}, id=msg_id)
                        break
                    except BackendUnavailable as exc:
                        errors[type(exc).__name__] += 1
                        put_retried += 1
                put_ok.append(msg_id)
                try:
                    c.incr()
                    incr_ok += 1
                except OutcomeUnknown:
                    errors["OutcomeUnknown"] += 1
                    incr_unknown += 1
            elapsed = time.monotonic() - t0
        finally:
            done.set()
            consumer.join(30)
            proxy.close()
            value = unidist.connect(direct).counter("c").get()
            unidist.backends.reset()
    assert not consumer.is_alive()
    result.attempted = 2 * n
    result.ok = sum(1 for m in put_ok if consumed[m] >= 1) + min(value, incr_ok)
    result.lost = sum(1 for m in put_ok if consumed[m] == 0) + max(0, incr_ok - value)
    duplicated_puts = sum(k - 1 for k in consumed.values() if k > 1)
    double_incr = max(0, value - incr_ok - incr_unknown)
    result.duplicated = duplicated_puts + double_incr
    result.unexpected = len(set(consumed) - set(put_ok))
    result.recovered = max(0, value - incr_ok)
    result.extra.update(
        injected_drops=proxy.dropped,
        duplicated_puts=duplicated_puts,
        double_increments=double_incr,
        outcome_unknown=incr_unknown,
        app_put_retries=put_retried,
        errors=",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "none",
        ops_per_s=round(2 * n / elapsed),
    )
    result.emit()
    assert proxy.dropped >= n // 20  # the fault was really injected
    assert duplicated_puts == 0, [m for m, k in consumed.items() if k > 1][:10]
    assert result.lost == 0
    assert result.unexpected == 0
    assert double_incr == 0
    assert incr_ok <= value <= incr_ok + incr_unknown
