"""F2: simulated power loss of the journal/snapshot protocol (RELIABILITY.md 3.1).

An operation sequence (counter adds, bucket sets with values of up to a few pages, queue puts
and gets, small compaction threshold so snapshots and journal rotations happen) runs with
the I/O layer of the file backend replaced by a recorder (``_io.injected``). After every
recorded event the scenario builds the crash states a power loss could leave
(``_file_sim.crash_states``: unsynced writes dropped, kept, zero-filled, garbled past the last
landed page, a hole from reordering, a torn last sector, lost directory entries, random
mixes), writes each one as a real directory and opens it with a fresh backend.

Pass: every state opens without exception and each object holds the state after some prefix
of its own operations (never a mix, never garbage); under ``fsync=always`` that prefix
includes every acknowledged operation (lost = 0). ``batch``/``never`` may lose the unsynced
window, which the block reports as ``window_lost`` (documented), never as corruption.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._file_common import watching_cuts
from tests.reliability._file_sim import Recorder, crash_states, materialize, snapshot_model
from tests.reliability._report import Result, count, seed
from unidist.backends.file import FileBackend, _io
from unidist.errors import CorruptData

Obj = str


def _read(be: FileBackend) -> dict[Obj, Any]:
    return {
        "c": be.counter_get("c"),
        "b": be.state_items("b"),
        "q": be._run("queue", "q", lambda h, st: set(st.msgs), create=False, default=set()),
    }


def _run_sequence(
    root: Path, fsync: str, rng: random.Random, n_ops: int
) -> tuple[Recorder, dict[Obj, list[Any]], Any, int]:
    """Run the operations under a recorder; return it, each object's state history, the
    model of the tree before recording and the root's inode."""
    be = FileBackend.from_url(f"file://{root}?fsync={fsync}&fsync_interval=0.002")
    be._cfg.compact_records = 4
    model, root_ino = snapshot_model(root)
    rec = Recorder()
    hist: dict[Obj, list[Any]] = {"c": [0], "b": [{}], "q": [set()]}
    counter, bucket, queue = 0, {}, []
    with _io.injected(rec):
        for i in range(n_ops):
            kind = rng.choice("cbbqqg")
            if kind == "c":
                counter += rng.randint(1, 9)
                be.counter_add("c", counter - hist["c"][-1], "r")
                hist["c"].append(counter)
                rec.ack(("c", len(hist["c"]) - 1))
            elif kind == "b":
                value = f'"{i}:' + "x" * rng.choice([10, 300, 2500, 5000]) + '"'
                bucket = {**bucket, f"k{rng.randrange(3)}": value}
                be.state_set("b", next(k for k, v in bucket.items() if v == value), value)
                hist["b"].append(bucket)
                rec.ack(("b", len(hist["b"]) - 1))
            elif kind == "q":
                mid = f"m{i}"
                be.queue_put("q", mid, '"' + "y" * rng.choice([5, 900]) + '"', 0.0, 0)
                queue.append(mid)
                hist["q"].append(set(queue))
                rec.ack(("q", len(hist["q"]) - 1))
            elif queue:
                got = be.queue_get("q", 5)
                assert got is not None
                queue.remove(got.id)
                hist["q"].append(set(queue))
                rec.ack(("q", len(hist["q"]) - 1))
        if fsync == "batch":
            time.sleep(0.01)  # let the flusher's fsyncs land in the record too
    be.close()
    return rec, hist, model, root_ino


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_f2_power_loss_states(tmp_path: Path, fsync: str) -> None:
    s = seed()
    rng = random.Random(s)
    # default run: the full fixed plan set, random mixes only for fsync=always (time budget)
    n_ops = count(8 if fsync == "always" else 6, 400)
    randoms = count(1 if fsync == "always" else 0, 6)
    root = tmp_path / "live"
    rec, hist, model, root_ino = _run_sequence(root, fsync, rng, n_ops)
    result = Result("F2", "file", s, params={"fsync": fsync, "ops": n_ops}, path=str(tmp_path))
    by_type: dict[str, int] = {}
    failures: list[str] = []
    window_lost = 0
    for i, st in enumerate(crash_states(rec.events, root_ino, s, randoms, initial=model)):
        result.attempted += 1
        acked: dict[Obj, int] = {"c": 0, "b": 0, "q": 0}
        for obj, j in st.acked:
            acked[obj] = max(acked[obj], j)
        where = tmp_path / f"s{i}"
        materialize(st.tree, where)
        t0 = time.perf_counter()
        try:
            with watching_cuts() as cuts:
                be = FileBackend.from_url(f"file://{where}?fsync={fsync}")
                try:
                    got = _read(be)
                    # the reopened store accepts writes again
                    be.counter_add("c", 1, "r")
                finally:
                    be.close()
        except (CorruptData, Exception) as exc:
            result.corrupt += 1
            by_type[type(exc).__name__] = by_type.get(type(exc).__name__, 0) + 1
            failures.append(f"cut={st.cut} plan={st.plan}: {exc!r}")
            shutil.rmtree(where)
            continue
        result.timing("open", (time.perf_counter() - t0) * 1000)
        cuts.add_to(result)
        shutil.rmtree(where)
        ok = True
        for obj, states in hist.items():
            matches = [j for j, state in enumerate(states) if state == got[obj]]
            if not matches:
                result.corrupt += 1
                by_type["not-a-prefix"] = by_type.get("not-a-prefix", 0) + 1
                failures.append(f"cut={st.cut} plan={st.plan}: {obj}={got[obj]!r} is no prefix")
                ok = False
            elif max(matches) < acked[obj]:
                if fsync == "always":
                    result.lost += acked[obj] - max(matches)
                    by_type["acked-lost"] = by_type.get("acked-lost", 0) + 1
                    failures.append(
                        f"cut={st.cut} plan={st.plan}: {obj} at op {max(matches)}, "
                        f"acked {acked[obj]}"
                    )
                    ok = False
                else:
                    window_lost += acked[obj] - max(matches)
        result.ok += ok
    result.violations = result.lost + result.corrupt
    result.extra = {
        "events": len(rec.events),
        "window_lost": window_lost,
        "violations_by_type": by_type or "none",
    }
    result.emit()
    assert not failures, "\n".join(failures[:10])
    assert result.attempted > 50


def test_f2_power_loss_group_commit_threads(tmp_path: Path) -> None:
    """fsync=always with concurrent writers: records of several threads share fsyncs (group
    commit), so unsynced records of others sit between synced ones. No crash state may lose
    an acknowledged increment or be unopenable."""
    import threading

    s = seed()
    per = count(3, 60)
    root = tmp_path / "live"
    be = FileBackend.from_url(f"file://{root}?fsync=always")
    be._cfg.compact_records = 6
    model, root_ino = snapshot_model(root)
    rec = Recorder()
    threads = [
        threading.Thread(
            target=lambda: [(be.counter_add("c", 1, "r"), rec.ack(("c", 1))) for _ in range(per)]
        )
        for _ in range(3)
    ]
    with _io.injected(rec):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    be.close()
    result = Result("F2", "file", s, params={"fsync": "always", "writers": 3}, path=str(tmp_path))
    failures: list[str] = []
    for i, st in enumerate(crash_states(rec.events, root_ino, s, count(0, 4), initial=model)):
        result.attempted += 1
        acked = len(st.acked)
        where = tmp_path / f"s{i}"
        materialize(st.tree, where)
        try:
            with watching_cuts() as cuts:
                b = FileBackend.from_url(f"file://{where}?fsync=always")
                try:
                    value = b.counter_get("c")
                finally:
                    b.close()
        except Exception as exc:
            result.corrupt += 1
            failures.append(f"cut={st.cut} plan={st.plan}: {exc!r}")
            continue
        finally:
            shutil.rmtree(where)
        cuts.add_to(result)
        if value < acked:
            result.lost += acked - value
            failures.append(f"cut={st.cut} plan={st.plan}: value {value} < acked {acked}")
        elif value > 3 * per:
            result.unexpected += 1
            failures.append(f"cut={st.cut} plan={st.plan}: value {value} > attempted")
        else:
            result.ok += 1
    result.violations = result.lost + result.corrupt + result.unexpected
    result.extra = {"events": len(rec.events), "increments": 3 * per}
    result.emit()
    assert not failures, "\n".join(failures[:10])
