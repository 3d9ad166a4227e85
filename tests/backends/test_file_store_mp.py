"""The file backend's store across real processes: counter increments stay exact.

Children are started with the ``spawn`` context (no inherited descriptors or locks). The
process scenarios with kill -9, exactly-once gets and contention live in tests/reliability
(F1 kill loop, F7 contention).
"""

from __future__ import annotations

import multiprocessing

import pytest

from unidist.backends.file import FileBackend

pytestmark = pytest.mark.multiprocess

CTX = multiprocessing.get_context("spawn")


# ---------------------------------------------------------------------- child entry points
def _incr(url: str, name: str, n: int) -> None:
    from unidist.backends import connect

    b = connect(url)
    for _ in range(n):
        b.counter_add(name, 1, "r")


def _run_all(procs: list) -> None:
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"child {p.pid} exited with {p.exitcode}"


# ---------------------------------------------------------------------- tests
def test_four_processes_increment_exactly(tmp_path):
    """4 processes x 500 counter_add (crossing journal rotations) give exactly 2,000."""
    url = "file://" + str(tmp_path / "d")
    _run_all([CTX.Process(target=_incr, args=(url, "c", 500)) for _ in range(4)])
    b = FileBackend.from_url(url)
    assert b.counter_get("c") == 2000
    b.close()
