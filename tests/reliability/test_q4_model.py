"""Q4: the queue against a reference model (Hypothesis state machine) on every backend.

The state machine lives in ``tests/conformance/test_queue_model.py`` (put, put of an id
again, get, receive, ack, nack at once or delayed, purge, requeue and list the dead, with
``stats()``/``len()`` checked against the model after every step). The conformance suite
runs it with a fixed bounded count; this scenario runs ``count(10, 1000)`` further
examples per backend (1,000 under the soak command) and prints the result block.

Pass: no sequence of operations makes the queue disagree with the model (violations = 0).
Reproduce:
``UNIDIST_SOAK=1 .venv/bin/python -m pytest -s tests/reliability/test_q4_model.py``.
"""

from __future__ import annotations

import time

from tests.conformance.test_queue_model import QueueMachine, run_model
from tests.reliability._report import Result, count, seed
from unidist.backends import Backend

STEPS = 40


def test_q4_queue_matches_the_model(backend: Backend, backend_kind: str) -> None:
    """Every generated sequence of queue operations leaves the queue as the model says."""
    examples = count(10, 1000)
    done = [0]

    class Counting(QueueMachine):
        def teardown(self) -> None:
            done[0] += 1
            super().teardown()

    t0 = time.monotonic()
    result = Result("Q4", backend_kind, seed(), params={"examples": examples, "steps": STEPS})
    try:
        run_model(Counting, backend, max_examples=examples, steps=STEPS)
    except BaseException:
        result.violations = 1
        raise
    finally:
        result.attempted = done[0]
        result.ok = done[0] - result.violations
        result.timing("run", (time.monotonic() - t0) * 1000)
        result.emit()
    assert done[0] >= examples
