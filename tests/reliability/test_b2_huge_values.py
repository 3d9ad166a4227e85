"""B2: huge values on every backend (RELIABILITY.md 3.7).

A 1 MB and a 64 MB value (and, in the soak run only, 512 MB; the default run keeps 64 MB for
file:// buckets only, to stay within its time budget) are stored in a bucket and put on a queue,
then read back. Pass: equal after the round trip, or an error naming the size
limit (file://: one journal record holds at most 256 MiB); the block reports the peak RSS
growth of the test process.
"""

from __future__ import annotations

import gc
import resource
from pathlib import Path

import pytest

import unidist
from tests.reliability._report import Result, count, seed
from unidist.backends import Backend

MB = 1024 * 1024


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_b2_huge_values_round_trip_or_name_the_limit(backend: Backend, backend_kind: str) -> None:
    s = seed()
    soak = count(0, 1) == 1
    # 64 MB on every backend at soak, on file:// (the one writing journals) in the default run
    sizes = [1 * MB] + ([64 * MB] if soak or backend_kind == "file" else [])
    sizes += [512 * MB] if soak else []
    state = unidist.SharedState("b2", backend=backend)
    queue = unidist.MessageQueue("b2", backend=backend)
    result = Result("B2", backend_kind, s, params={"sizes_mb": [n // MB for n in sizes]})
    start = _rss_mb()
    outcomes: dict[str, str] = {}
    for n in sizes:
        value = "x" * n
        # default run: the 64 MB value through the bucket only (time budget)
        for where in ("state", "queue") if soak or n <= MB else ("state",):
            result.attempted += 1
            try:
                if where == "state":
                    state["v"] = value
                    ok = state["v"] == value
                    del state["v"]
                else:
                    queue.put(value)
                    ok = queue.get(timeout=30) == value
            except (ValueError, unidist.UnidistError) as exc:
                text = str(exc)
                assert "limit" in text, text
                assert any(str(x) in text for x in (256 * MB, "256 MiB")), text
                outcomes[f"{where}-{n // MB}MB"] = "size-error"
                result.ok += 1
                continue
            assert ok, (where, n)
            outcomes[f"{where}-{n // MB}MB"] = "round-trip"
            result.ok += 1
        del value
        gc.collect()
    result.extra = {"outcomes": outcomes, "peak_rss_growth_mb": round(_rss_mb() - start)}
    result.emit()
    assert result.ok == result.attempted
    if not soak:
        assert set(outcomes.values()) == {"round-trip"}


def test_b2_file_record_limit_is_named(tmp_path: Path) -> None:
    """Over the file backend's record limit: an error naming the limit before any copy or
    I/O, nothing written (the soak run also meets it through SharedState with 512 MB)."""
    from unidist.backends.file import FileBackend

    root = tmp_path / "d"
    be = FileBackend.from_url(f"file://{root}")
    be.state_set("b", "small", "1")
    before = sorted(p.name for p in (root / "state" / "b").iterdir())
    journal = (root / "state" / "b" / "journal.1").read_bytes()
    big = "y" * (256 * MB + 1)
    for call in (
        lambda: be.state_set("b", "big", big),
        lambda: be.state_update("b", {"big": big}),
        lambda: be.queue_put("q", "m", big, 0.0, 0),
    ):
        with pytest.raises(ValueError, match="record limit of 268435456 bytes"):
            call()
    assert be.state_items("b") == {"small": "1"}
    assert sorted(p.name for p in (root / "state" / "b").iterdir()) == before
    assert (root / "state" / "b" / "journal.1").read_bytes() == journal
    assert not (root / "queues" / "q").exists()
    be.close()
