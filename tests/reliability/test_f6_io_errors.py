"""F6: I/O error injection (RELIABILITY.md 3.1; SQLite's I/O-error tests, fsyncgate).

The file backend's system calls go through ``unidist.backends.file._io``; a fault layer
fails the Nth ``write``, ``fsync``/``fdatasync`` or ``rename`` with ``ENOSPC``, ``EIO`` or
``EACCES``, once or from then on (persistent). N is advanced from 1 until the operation
sequence (counter adds, bucket sets, queue puts/gets, rotations every 4 records) completes
without reaching it. A second part injects faults (also ``ftruncate``) while a store with
torn tails is being recovered.

Pass: every failure surfaces as ``BackendUnavailable`` naming the file (no raw ``OSError``);
nothing acknowledged is missing after a fault-free reopen (an operation that raised may or
may not be there: its outcome is unknown); after a failed journal write or fsync the object
refuses further use in that process, even once the disk is healthy again (no
retry-then-success); the reopened store passes the integrity check (opens, every object
reads, accepts a write, and a second reopen cuts nothing).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._file_common import open_file_backend, watching_cuts
from tests.reliability._report import Result, count, seed
from unidist.backends.file import FileBackend, _io
from unidist.errors import BackendUnavailable

KINDS = ("write", "fsync", "rename")
ERRNOS = (errno.ENOSPC, errno.EIO, errno.EACCES)


class Faulty:
    """Fail the ``n``-th call of ``kind`` (and every later one when ``persistent``)."""

    def __init__(self, kind: str, n: int, err: int, persistent: bool) -> None:
        self.kind, self.n, self.err, self.persistent = kind, n, err, persistent
        self.calls = 0
        self.fired = 0

    def _hit(self, kind: str) -> None:
        if kind != self.kind:
            return
        self.calls += 1
        if self.calls == self.n or (self.persistent and self.calls > self.n):
            self.fired += 1
            raise OSError(self.err, os.strerror(self.err))

    def write(self, fd: int, data: Any) -> int:
        self._hit("write")
        return os.write(fd, data)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        self._hit("write")
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._hit("fsync")
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self._hit("fsync")
        os.fdatasync(fd)

    def rename(self, *args: Any, **kwargs: Any) -> None:
        self._hit("rename")
        os.rename(*args, **kwargs)

    def ftruncate(self, fd: int, length: int) -> None:
        self._hit("ftruncate")
        os.ftruncate(fd, length)


def _ops(rng: random.Random, n: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for i in range(n):
        kind = rng.choice("cbq")
        out.append((kind, i))
    return out


def _apply(be: FileBackend, op: tuple[str, Any]) -> None:
    kind, i = op
    if kind == "c":
        be.counter_add("c", 1 + i, "r")
    elif kind == "b":
        be.state_set("b", f"k{i % 3}", str(i))
    else:
        be.queue_put("q", f"m{i}", str(i), 0.0, 0)


def _check(root: Path, acked: list[tuple[str, Any]], unknown: list[tuple[str, Any]]) -> None:
    """Fault-free reopen: integrity, and every acked op present (unknown ones optional)."""
    with watching_cuts():
        be = open_file_backend(root)
        try:
            value = be.counter_get("c")
            bucket = be.state_items("b")
            ids = be._run("queue", "q", lambda h, st: set(st.msgs), create=False, default=set())
            be.counter_add("c", 0, "r")  # accepts a write again
        finally:
            be.close()
    lo = sum(1 + i for k, i in acked if k == "c")
    hi = lo + sum(1 + i for k, i in unknown if k == "c")
    assert lo <= value <= hi, (value, lo, hi)
    must = {f"m{i}" for k, i in acked if k == "q"}
    may = {f"m{i}" for k, i in unknown if k == "q"}
    assert must <= ids <= must | may, (must, ids)
    last: dict[str, set[str]] = {}
    for k, i in acked:
        if k == "b":
            last[f"k{i % 3}"] = {str(i)}
    for k, i in unknown:  # an unknown later set may have replaced an acked value
        if k == "b":
            last.setdefault(f"k{i % 3}", set()).add(str(i))
    for key, values in last.items():
        if key in bucket or any(k == "b" and f"k{i % 3}" == key for k, i in acked):
            assert bucket.get(key) in values, (key, bucket.get(key), values)
    with watching_cuts() as again:
        open_file_backend(root).close()
        be = open_file_backend(root)
        be.counter_get("c")
        be.close()
    assert again.cuts == []


def _run_one(
    root: Path, ops: list[tuple[str, Any]], fault: Faulty, result: Result, errors: dict[str, int]
) -> bool:
    """Run ``ops`` under ``fault``; True when the fault was reached."""
    be = open_file_backend(root, compact=4)
    acked: list[tuple[str, Any]] = []
    unknown: list[tuple[str, Any]] = []
    poisoned: set[str] = set()
    messages: list[str] = []
    try:
        with _io.injected(fault):
            for op in ops:
                result.attempted += 1
                try:
                    _apply(be, op)
                except BackendUnavailable as exc:
                    unknown.append(op)
                    errors[os.strerror(fault.err)] = errors.get(os.strerror(fault.err), 0) + 1
                    messages.append(str(exc))
                    if "refuses further use" in str(exc):
                        poisoned.add(op[0])
                        errors["poisoned"] = errors.get("poisoned", 0) + 1
                else:
                    acked.append(op)
                    result.ok += 1
        # fsyncgate: a poisoned object stays refused with the disk healthy again
        for kind in poisoned:
            with pytest.raises(BackendUnavailable, match="refuses further use"):
                _apply(be, (kind, 10_000))
    finally:
        be.close()
    assert all(str(root) in m for m in messages), messages  # every error names the store
    _check(root, acked, unknown)
    return fault.fired > 0


def test_f6_io_error_injection(tmp_path: Path) -> None:
    s = seed()
    rng = random.Random(s)
    ops = _ops(rng, count(8, 40))
    full = count(0, 1) == 1
    result = Result(
        "F6", "file", s, params={"fsync": "always", "ops": len(ops)}, path=str(tmp_path)
    )
    errors: dict[str, int] = {}
    points = 0
    run = 0
    for kind in KINDS:
        for persistent in (False, True):
            n = 1
            while True:
                errs = ERRNOS if full else (ERRNOS[(n + persistent) % len(ERRNOS)],)
                reached = False
                for err in errs:
                    run += 1
                    root = tmp_path / f"r{run}"
                    reached = _run_one(root, ops, Faulty(kind, n, err, persistent), result, errors)
                    shutil.rmtree(root)
                if not reached:
                    break
                points += 1
                n += 1 if full or n < 4 else rng.randint(2, 6)
    result.extra = {
        "injection_points": points,
        "runs": run,
        "errors_surfaced": errors,
        "integrity_failures": 0,
    }
    result.emit()
    assert points >= 12
    assert sum(errors.values()) > 0


def test_f6_faults_during_recovery(tmp_path: Path) -> None:
    """Compound: I/O errors while recovering torn tails; a clean reopen then recovers."""
    s = seed()
    base = tmp_path / "base"
    be = open_file_backend(base)
    for i in range(5):
        be.counter_add("c", 1, "r")
        be.state_set("b", f"k{i}", str(i))
    be.close()
    for family, name in (("counters", "c"), ("state", "b")):
        with open(base / family / name / "journal.1", "ab") as fh:
            fh.write(b"\xa5U\x00\x00\x01")  # a torn record header
    result = Result("F6-recovery", "file", s, path=str(tmp_path))
    errors: dict[str, int] = {}
    run = 0
    for kind in ("fsync", "ftruncate", "write", "rename"):
        for err in ERRNOS if count(0, 1) else ERRNOS[:2]:
            for persistent in (False, True):
                run += 1
                root = tmp_path / f"r{run}"
                shutil.copytree(base, root)
                result.attempted += 1
                fault = Faulty(kind, 1, err, persistent)
                with watching_cuts(), _io.injected(fault):
                    be = open_file_backend(root)
                    try:
                        got = (be.counter_get("c"), be.state_items("b"))
                    except BackendUnavailable as exc:
                        errors[kind] = errors.get(kind, 0) + 1
                        got = str(exc)
                    finally:
                        be.close()
                assert got[0] == 5 if isinstance(got, tuple) else str(root) in got
                with watching_cuts() as cuts:
                    be = open_file_backend(root)
                    assert be.counter_get("c") == 5
                    assert be.state_items("b") == {f"k{i}": str(i) for i in range(5)}
                    be.close()
                cuts.add_to(result)
                result.ok += 1
                shutil.rmtree(root)
    result.extra = {"runs": run, "errors_surfaced": errors, "integrity_failures": 0}
    result.emit()
    assert errors.get("fsync", 0) > 0
    assert errors.get("ftruncate", 0) > 0
