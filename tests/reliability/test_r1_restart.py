"""R1: ``kill -9`` + restart of redis-server mid-work under ``appendfsync always``.

Three worker processes (queue puts, counter increments, state sets) run against one
redis-server with ``appendonly yes`` / ``appendfsync always`` and report every acknowledged
call to the parent over a pipe. The parent kills the server with SIGKILL and restarts it
``count(10, 200)`` times at seeded random instants; the first outage outlasts the retry
budget (``?retry_for=``), so calls must end in ``BackendUnavailable`` instead of hanging.

Pass: lost = 0, duplicated = 0, unexpected = 0, corrupt = 0; no call stalls longer than
the retry budget plus one attempt; the long outage surfaces as ``BackendUnavailable``.
Reproduce: ``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s
tests/reliability/test_r1_restart.py``.
"""

from __future__ import annotations

from tests.reliability._redis_workers import chaos
from tests.reliability._report import count, seed

RETRY_FOR = 1.5
CONNECT_TIMEOUT = 0.5
# Scheduling noise on a busy 2-core machine on top of retry_for + one connect attempt.
STALL_MARGIN = 1.5


def test_r1_kill9_restart_loses_no_acknowledged_write() -> None:
    """Every acknowledged put, increment and set survives 10 SIGKILLs of the server; an
    outage longer than the retry budget ends each call with BackendUnavailable in time."""
    run = chaos(
        "R1",
        "always",
        count(10, 200),
        seed(),
        retry_for=RETRY_FOR,
        connect_timeout=CONNECT_TIMEOUT,
        long_outage=RETRY_FOR + 0.6,
    )
    run.result.emit()
    found = run.audit
    assert found.lost == 0, found.details
    assert found.duplicated == 0
    assert found.unexpected == 0
    assert found.corrupt == 0, found.details
    # Work happened between the kills, in every worker.
    assert all(len(r.acked) >= 10 for r in run.reports), [len(r.acked) for r in run.reports]
    # The long outage made every worker's calls give up with BackendUnavailable (or its
    # subclass OutcomeUnknown for a call sent just before the kill), none past the budget.
    errors = {k for r in run.reports for k in r.errors}
    assert errors <= {"BackendUnavailable", "OutcomeUnknown"}, errors
    assert all(r.errors for r in run.reports)
    worst = max(ms for r in run.reports for ms in r.call_ms) / 1000
    assert worst <= RETRY_FOR + CONNECT_TIMEOUT + STALL_MARGIN, worst
