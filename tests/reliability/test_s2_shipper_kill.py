"""S2: ``kill -9`` the log shipper mid-batch, again and again, while the host keeps logging.

A writer process logs ``count(2000, 20000)`` records through ``unidist.log`` with size
rotation; a shipper process (follow mode, batch 20) is started and ``kill -9``ed
``count(5, 20)`` times, each time just after it saved its offsets (so mostly while the
next batch is in flight) plus a seeded random delay. After every kill the offset file must
parse, and the records a restart will send again (between the saved offset and the offset
the store acknowledged) must be at most one batch. At the end one more shipper run
catches up.

Pass: lost = 0; each record stored exactly once (the store drops re-sent ids); re-sent
records ≤ one batch per kill; the offset file parses after every kill, and in every state
a simulated power loss can leave it in (unsynced data dropped, zero-filled or kept, the
rename done or not).
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_s2_shipper_kill.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from backends.redis.server import RedisServer
from tests.reliability._log_common import child, corrupt, fresh_prefix, in_flight_records, numbers
from tests.reliability._report import Result, count, seed
from unidist.log import ship

HOST = "s2-host"
BATCH = 20


def _stamp(directory: Path) -> tuple[int, ...]:
    return tuple(p.stat().st_mtime_ns for p in directory.glob(".ship-state-*.json"))


def test_s2_kill9_shipper_mid_batch(redis_server: RedisServer, tmp_path: Path) -> None:
    """No record lost or stored twice through repeated kill -9 of the shipper; a restart
    re-sends at most the batch that was in flight; the offset file always parses."""
    rng = random.Random(s := seed())
    total, kills = count(2000, 20000), count(5, 20)
    url = fresh_prefix(redis_server.url)
    prefix = url.split("prefix=")[1]
    r = redis.Redis.from_url(redis_server.url)
    log_dir = tmp_path / "log"
    writer = child("write", str(log_dir), "jobs", HOST, str(total), "16KB", "1")
    resent: list[int] = []
    parsed = killed_mid = 0
    shipper: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(kills):
            before = _stamp(log_dir)
            shipper = child("ship", url, str(log_dir), HOST, str(BATCH))
            deadline = time.monotonic() + 30
            while _stamp(log_dir) == before and time.monotonic() < deadline:
                time.sleep(0.001)
            killed_mid += time.monotonic() < deadline
            time.sleep(rng.uniform(0, 0.005))
            shipper.send_signal(signal.SIGKILL)
            shipper.wait()
            shipper = None
            for state_file in log_dir.glob(".ship-state-*.json"):
                state = json.loads(state_file.read_text())  # must parse after any kill
                parsed += 1
                acked = {
                    fp: int(r.get(f"{prefix}{{log:jobs}}:o:{HOST}:{fp}") or 0)
                    for fp in state["files"]
                }
                resent.append(in_flight_records(log_dir, state, acked))
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()
    finally:
        for proc in (writer, shipper):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    stale = len(list(log_dir.glob(".*.tmp")))
    for state_file in log_dir.glob(".ship-state-*.json"):  # as a kill before rename leaves it
        (log_dir / f".{state_file.name}.0badc0ffee00.tmp").write_text('{"version": 1, "fi')
    final = ship(url, dir=log_dir, host=HOST, batch=500)
    seen = numbers(url)
    written = {(HOST, n) for n in range(total)}
    result = Result("S2", "redis", s, params={"kills": kills, "batch": BATCH}, path=str(tmp_path))
    result.attempted = total
    result.ok = len(written & set(seen))
    result.lost = len(written - set(seen))
    result.duplicated = sum(c - 1 for c in seen.values())
    result.unexpected = len(set(seen) - written)
    result.corrupt = len(corrupt(url))
    result.extra["resent_per_kill_max"] = max(resent, default=0)
    result.extra["resent_total"] = sum(resent)
    result.extra["kills_with_batch_in_flight"] = sum(1 for x in resent if x)
    result.extra["final_pass_resent"] = final.records - final.stored
    result.extra["rotated_files"] = len(list(log_dir.glob("jobs.log.*")))
    result.extra["stale_temp_files"] = stale
    result.emit()
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.unexpected == 0
    assert result.corrupt == 0
    assert parsed >= kills
    assert killed_mid == kills, "a shipper saved nothing before it was killed"
    assert max(resent, default=0) <= BATCH
    assert final.records - final.stored <= BATCH  # the last kill's in-flight batch at most
    assert result.extra["rotated_files"] >= 2  # rotated underneath the kills
    assert not list(log_dir.glob(".*.tmp"))  # a kill's temp file is cleaned up


class _Recorder:
    """Stands in for ``os`` inside ``unidist.log._files`` and records the calls that matter
    for durability (open, write, fsync, rename) while doing them for real."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, Any, Any]] = []
        self.paths: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        fd = os.open(path, flags, mode)
        self.paths[fd] = os.fspath(path)
        if not flags & os.O_DIRECTORY:
            self.ops.append(("create", os.path.basename(os.fspath(path)), None))
        return fd

    def write(self, fd: int, data: Any) -> int:
        n = os.write(fd, data)
        self.ops.append(("write", os.path.basename(self.paths[fd]), bytes(data[:n])))
        return n

    def fsync(self, fd: int) -> None:
        os.fsync(fd)
        path = self.paths[fd]
        self.ops.append(("fsync", os.path.basename(path), os.path.isdir(path)))

    def rename(self, src: Any, dst: Any) -> None:
        os.rename(src, dst)
        self.ops.append(
            ("rename", os.path.basename(os.fspath(src)), os.path.basename(os.fspath(dst)))
        )


def _crash_states(
    ops: list[tuple[str, Any, Any]], before: dict[str, bytes]
) -> list[dict[str, bytes]]:
    """Every directory a power loss after each prefix of ``ops`` can leave: unsynced file
    data dropped, zero-filled or kept; an unsynced rename done or not."""
    states = []
    for k in range(len(ops) + 1):
        durable = {name: bytearray(data) for name, data in before.items()}
        volatile = {name: bytearray(data) for name, data in before.items()}
        synced: dict[str, int] = {name: len(data) for name, data in before.items()}
        inode: dict[str, str] = {name: name for name in before}  # entry -> file
        inode_durable = dict(inode)
        for op, a, b in ops[:k]:
            if op == "create":
                volatile[a], synced[a] = bytearray(), 0
                inode[a] = a
            elif op == "write":
                volatile[inode[a]] += b
            elif op == "fsync" and b:  # the directory: entries become durable
                inode_durable = dict(inode)
            elif op == "fsync":
                durable[inode[a]] = bytearray(volatile[inode[a]])
                synced[inode[a]] = len(volatile[inode[a]])
            elif op == "rename":
                inode[b] = inode.pop(a)
        for entries in (inode_durable, inode):
            for damage in ("drop", "zero", "keep"):
                state = {}
                for name, file in entries.items():
                    data = bytes(durable.get(file, b""))[: synced.get(file, 0)]
                    extra = bytes(volatile[file][len(data) :]) if file in volatile else b""
                    if damage == "zero":
                        extra = b"\0" * len(extra)
                    elif damage == "drop":
                        extra = b""
                    state[name] = data + extra
                states.append(state)
    return states


def test_s2_offset_file_parses_in_every_power_loss_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offset (state) file is replaced by temp file -> fsync -> rename -> fsync dir: in
    every state a power loss can leave (unsynced data dropped, zero-filled or kept, the
    rename done or not), the state file is there and parses as the old or the new state."""
    from unidist.log import _files

    path = tmp_path / ".ship-state-x.json"
    old = {"version": 1, "host": HOST, "files": {"a" * 16: {"offset": 100}}}
    new = {"version": 1, "host": HOST, "files": {"a" * 16: {"offset": 5000}}}
    _files.atomic_write_json(path, old)
    before = {path.name: path.read_bytes()}
    recorder = _Recorder()
    monkeypatch.setattr(_files, "os", recorder)
    _files.atomic_write_json(path, new)
    monkeypatch.undo()
    kinds = [op for op, _, _ in recorder.ops]
    assert kinds.count("rename") == 1
    states = _crash_states(recorder.ops, before)
    outcomes = set()
    for state in states:
        assert path.name in state, "the state file vanished"
        content = json.loads(state[path.name])  # never torn, never zero-filled
        assert content in (old, new)
        outcomes.add(content["files"]["a" * 16]["offset"])
    result = Result("S2", "file", seed(), params={"case": "offset-file-power-loss"})
    result.path = str(tmp_path)
    result.attempted = result.ok = len(states)
    result.extra["ops"] = ",".join(kinds)
    result.emit()
    assert outcomes == {100, 5000}  # both old and new are reachable: the model is not vacuous
    # and the unsafe order (rename before the data is synced) is caught by the same model
    unsafe = [op for op in recorder.ops if op[0] != "fsync" or op[2]]
    assert any(
        path.name in st and st[path.name].strip(b"\0") != st[path.name]
        for st in _crash_states(unsafe, before)
    )
