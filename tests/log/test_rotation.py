"""Rotation of track files: size, time, retention, external rotation, many writer processes."""

from __future__ import annotations

import collections
import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

import unidist.log
from tests.log.conftest import read_records, run_proc


def _check_exactly_once(log_dir: Path, track: str, procs: int, per_proc: int) -> int:
    """Assert every (tag, n) is present exactly once; return the number of files."""
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    files = sorted(log_dir.glob(f"{track}.log*"))
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path} ends with a partial line"
        for line in data.splitlines():
            rec = json.loads(line)
            counts[(rec["tag"], rec["n"])] += 1
    expected = {(f"p{i}", n) for i in range(procs) for n in range(per_proc)}
    missing = expected - set(counts)
    dups = {k: c for k, c in counts.items() if c > 1}
    assert not missing, f"{len(missing)} records lost"
    assert not dups, f"{len(dups)} records duplicated"
    assert set(counts) == expected
    return len(files)


def _many_writers(log_dir: Path, procs: int, per_proc: int, rotate: str) -> None:
    children = [
        run_proc("write", str(log_dir), "t", str(per_proc), f"p{i}", rotate, "100000")
        for i in range(procs)
    ]
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()
    assert _check_exactly_once(log_dir, "t", procs, per_proc) >= 5


@pytest.mark.multiprocess
def test_eight_processes_through_rotations(tmp_path: Path) -> None:
    """8 processes x 5,000 records through many rotations: each record exactly once, whole."""
    _many_writers(tmp_path, 8, 5000, "256KB")


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_eight_processes_soak(tmp_path: Path) -> None:
    """Soak: 8 processes x N records (default 10,000; $UNIDIST_SOAK_RECORDS) through small files."""
    _many_writers(tmp_path, 8, int(os.environ.get("UNIDIST_SOAK_RECORDS", "10000")), "64KB")


def test_size_rotation_keeps_only_keep_files(tmp_path: Path) -> None:
    """Size rotation shifts .1 .. .keep, deletes older files, and never splits a record."""
    unidist.log.setup(dir=tmp_path, rotate=4096, keep=3, console="off")
    log = unidist.log.get_logger("r")
    for n in range(1000):
        log.info("rec", n=n)
    names = sorted(p.name for p in tmp_path.glob("r.log*"))
    assert names == ["r.log", "r.log.1", "r.log.2", "r.log.3"]
    recs = read_records(tmp_path, "r")
    numbers = sorted(r["n"] for r in recs)
    assert numbers == list(range(1000 - len(numbers), 1000))  # the newest, contiguous
    newest_first = [
        [json.loads(x)["n"] for x in (tmp_path / name).read_bytes().splitlines()]
        for name in ["r.log", "r.log.1", "r.log.2", "r.log.3"]
    ]
    assert newest_first[0][0] > newest_first[1][-1] > newest_first[2][-1] > newest_first[3][-1]


def test_time_rotation(tmp_path: Path) -> None:
    """rotate='1s' starts a new file each UTC second; every file holds one second's records."""
    child = run_proc("write_slowly", str(tmp_path), "tm", "2.5", "p0", "1s")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    written = json.loads(out)["written"]
    files = sorted(tmp_path.glob("tm.log*"))
    assert len(files) >= 2
    total = 0
    for path in files:
        seconds = {
            int(datetime.fromisoformat(json.loads(x)["timestamp"][:-1] + "+00:00").timestamp())
            for x in path.read_bytes().splitlines()
        }
        total += len(path.read_bytes().splitlines())
        assert len(seconds) <= 1, f"{path.name} spans {sorted(seconds)}"
    assert total == written


def test_time_rotation_goes_by_the_record_time_and_only_forward(tmp_path: Path) -> None:
    """A record made before a period boundary but written after it does not open a new file,
    and a late record of an earlier period never rotates back: it joins the current file."""
    from unidist.log._writer import TrackWriter

    base = (time.time() // 10) * 10 - 100  # a whole period boundary in the past
    warnings: list[str] = []
    w = TrackWriter(tmp_path / "t.log", None, 10, 5, False, warnings.append)
    assert w.write(b"a\n", when=base + 1)
    assert w.write(b"b\n", when=base + 9.999)  # same period: same file
    assert w.write(b"c\n", when=base + 10.001)  # next period: rotates
    assert w.write(b"d\n", when=base + 9.998)  # a late record: no rotation back
    w.close()
    files = {p.name: p.read_bytes() for p in tmp_path.glob("t.log*")}
    assert sorted(files.values()) == [b"a\nb\n", b"c\nd\n"], files
    assert not warnings


def test_external_rename_is_followed(tmp_path: Path) -> None:
    """After logrotate-style rename the writer reopens the path within about a second."""
    unidist.log.setup(dir=tmp_path, rotate="off", console="off")
    log = unidist.log.get_logger("x")
    log.info("before")
    os.rename(tmp_path / "x.log", tmp_path / "x.log.old")
    deadline = time.monotonic() + 5
    n = 0
    while not (tmp_path / "x.log").exists() and time.monotonic() < deadline:
        log.info("after", n=n)
        n += 1
        time.sleep(0.05)
    assert (tmp_path / "x.log").exists()
    old = [json.loads(x) for x in (tmp_path / "x.log.old").read_bytes().splitlines()]
    new = [json.loads(x) for x in (tmp_path / "x.log").read_bytes().splitlines()]
    assert len(old) + len(new) == n + 1
    assert old[0]["event"] == "before"


def test_fork_child_keeps_logging(tmp_path: Path) -> None:
    """A forked child writes its own records (own pid) into the same track."""
    unidist.log.setup(dir=tmp_path, console="off", fsync=True)
    log = unidist.log.get_logger("f")
    log.info("parent")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            log.info("child")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    recs = read_records(tmp_path, "f")
    assert [(r["event"], r["pid"]) for r in recs] == [("parent", os.getpid()), ("child", pid)]
