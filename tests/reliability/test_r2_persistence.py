"""R2: ``kill -9`` + restart of redis-server under ``appendfsync everysec`` and without
persistence: the loss is measured and reported, never silent corruption.

Same workers and accounting as R1 (``_redis_workers.py``). What each mode may lose:

* ``everysec``: Redis writes the AOF to the kernel before replying and fsyncs once a second,
  so a crash of the *process* (kill -9) loses nothing the kernel holds; a crash of the
  *machine* may lose about the last second. The figure reported is the process-crash loss.
* ``off`` (no AOF, no RDB): every restart starts empty; everything acknowledged before the
  last restart is lost, and the figure says how much.

Pass in both modes: duplicated = 0, unexpected = 0, corrupt = 0 (whatever is still there is
exactly what was written, and the queue drains to empty); ``everysec`` loses at most about
one second of writes per restart. Reproduce: ``UNIDIST_SEED=<seed> .venv/bin/python -m
pytest -s tests/reliability/test_r2_persistence.py``.
"""

from __future__ import annotations

import pytest

from tests.reliability._redis_workers import chaos
from tests.reliability._report import count, seed


@pytest.mark.parametrize("persistence", ["everysec", "off"])
def test_r2_loss_is_reported_never_corruption(persistence: str) -> None:
    """Restarts lose at most what the persistence mode allows; what is left is intact."""
    cycles = count(3, 100)
    run = chaos("R2", persistence, cycles, seed(), retry_for=1.5, connect_timeout=0.5)
    calls_s = max(sum(r.call_ms) for r in run.reports) / 1000  # the workers' wall time
    rate = run.audit.acked / max(calls_s, 0.001)
    run.result.extra["writes_per_s"] = round(rate)
    run.result.extra["lost_frac"] = f"{run.audit.lost / max(run.audit.acked, 1):.3f}"
    run.result.emit()
    found = run.audit
    assert found.corrupt == 0, found.details
    assert found.duplicated == 0
    assert found.unexpected == 0
    assert all(len(r.acked) >= 10 for r in run.reports)
    if persistence == "everysec":
        # At most about one second of writes per restart (in practice 0 for kill -9).
        assert found.lost <= rate * 1.0 * cycles, (found.lost, rate)
    else:
        # Without persistence each restart wipes the data set: loss is real and reported.
        assert found.lost > 0
