"""F5: snapshot damage (RELIABILITY.md 3.1).

A counter, a bucket and a queue are written past two journal rotations (generations 2 and 3
exist, with ``snap.3`` current). Then ``snap.3`` is emptied, truncated, zero-filled, garbled,
deleted, replaced by another object's snapshot or by the previous generation's; stale
temporary files and an orphan ``snap.4`` are planted; and the same damages are repeated with
generation 2 gone.

Pass: rebuilt from the previous generation when it is there (a ``RecoveryWarning``, the exact
values back, the next open quiet); otherwise ``CorruptData`` naming the snapshot; temporary
files ignored and removed; a snapshot is never paired with another object or generation.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.reliability._file_common import open_file_backend, watching_cuts
from tests.reliability._report import Result, count, seed
from unidist.backends.file import FileBackend
from unidist.errors import CorruptData

OBJECTS = (("counters", "c"), ("state", "b"), ("queues", "q"))
DAMAGES = ("empty", "truncated", "zeros", "garbage", "missing", "other-object", "other-gen")


def _write(be: FileBackend, tag: str, n: int) -> None:
    for i in range(n):
        be.counter_add(f"c{tag}", 1, "r")
        be.state_set(f"b{tag}", f"k{i % 7}", str(i))
        be.queue_put(f"q{tag}", f"m{i}", str(i), 0.0, 0)


def _read(be: FileBackend) -> tuple[object, ...]:
    return (
        be.counter_get("c"),
        be.state_items("b"),
        be.queue_stats("q"),
        [d.id for d in be.queue_dead("q")],
    )


def _damage(d: Path, other: Path, how: str, rng: random.Random) -> None:
    snap = d / "snap.3"
    size = snap.stat().st_size
    if how == "empty":
        snap.write_bytes(b"")
    elif how == "truncated":
        snap.write_bytes(snap.read_bytes()[: rng.randrange(1, size)])
    elif how == "zeros":
        snap.write_bytes(b"\0" * size)
    elif how == "garbage":
        snap.write_bytes(rng.randbytes(size))
    elif how == "missing":
        snap.unlink()
    elif how == "other-object":
        shutil.copy(other / "snap.3", snap)
    else:
        shutil.copy(d / "snap.2", snap)


def test_f5_snapshot_damage(tmp_path: Path) -> None:
    s = seed()
    rng = random.Random(s)
    base = tmp_path / "base"
    be = open_file_backend(base, compact=10)
    _write(be, "", 25)
    _write(be, "x", 25)  # "cx", "bx", "qx": the other objects whose snapshots get planted
    want = _read(be)
    be.close()
    result = Result("F5", "file", s, path=str(tmp_path))
    outcomes: dict[str, int] = {}
    i = 0
    every = count(0, 1) == 1  # soak: every object x damage; CI: each damage on one object
    plan = (
        [(o, h) for o in OBJECTS for h in DAMAGES]
        if every
        else [(OBJECTS[n % len(OBJECTS)], h) for n, h in enumerate(DAMAGES)]
    )
    for (family, name), how in plan:
        for prev_gone in (False, True):
            i += 1
            root = tmp_path / f"c{i}"
            shutil.copytree(base, root)
            d = root / family / name
            assert {"snap.2", "journal.2", "snap.3", "journal.3"} <= set(os.listdir(d))
            _damage(d, root / family / f"{name}x", how, rng)
            (d / "snap.4.tmp.1.ab").write_bytes(b"partial")
            (d / "journal.4.tmp.1.cd").write_bytes(b"")
            (d / "snap.4").write_bytes(b"orphan: the rotation died before journal.4")
            if prev_gone:
                (d / "journal.2").unlink()
            result.attempted += 1
            with watching_cuts() as seen:
                try:
                    be = open_file_backend(root)
                    try:
                        got = _read(be)
                    finally:
                        be.close()
                except CorruptData as exc:
                    got = exc
            if isinstance(got, CorruptData):
                assert prev_gone, (family, how, str(got))
                assert got.path == str(d / "snap.3"), (family, how, got.path)
                outcome = "CorruptData(snap)"
            else:
                assert got == want, (family, how, prev_gone)
                rebuilt = any("rebuilt" in m for m in seen.messages)
                assert rebuilt, (family, how, seen.messages)
                outcome = "rebuilt"
                with watching_cuts() as again:
                    assert open_file_backend(root).counter_get("c") == want[0]
                assert again.messages == []
                result.recovered += 1
            names = set(os.listdir(d))
            assert not any(".tmp." in n for n in names)
            assert "snap.4" not in names
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            result.ok += 1
            shutil.rmtree(root)
    result.extra = {"cases": result.attempted, "outcomes": outcomes}
    result.emit()
    assert outcomes.get("rebuilt", 0) == len(plan)


def test_f5_snapshot_without_any_journal_is_corrupt(tmp_path: Path) -> None:
    """Snapshots left without any journal are reported, not silently reset to empty."""
    be = open_file_backend(tmp_path, compact=10)
    _write(be, "", 25)
    be.close()
    for j in (tmp_path / "counters" / "c").glob("journal.*"):
        j.unlink()
    with pytest.raises(CorruptData) as ei:
        open_file_backend(tmp_path).counter_get("c")
    assert "snap." in ei.value.path
