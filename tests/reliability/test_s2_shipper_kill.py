"""S2: ``kill -9`` the log shipper mid-batch, again and again, while the host keeps logging.

A writer process logs ``count(2000, 20000)`` records through ``unidist.log`` with size
rotation; a shipper process (follow mode, batch 20) is started and ``kill -9``ed
``count(5, 20)`` times, each time just after it saved its offsets (so mostly while the
next batch is in flight) plus a seeded random delay. After every kill the offset file must
parse, and the records a restart will send again (between the saved offset and the offset
the store acknowledged) must be at most one batch. At the end one more shipper run
catches up.

Pass: lost = 0; each record stored exactly once (the store drops re-sent ids); re-sent
records ≤ one batch per kill; the offset file parses after every kill.
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_s2_shipper_kill.py``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import redis

from backends.redis.server import RedisServer
from tests.reliability._log_common import child, fresh_prefix, in_flight_records, numbers
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
    assert parsed >= kills
    assert killed_mid == kills, "a shipper saved nothing before it was killed"
    assert max(resent, default=0) <= BATCH
    assert final.records - final.stored <= BATCH  # the last kill's in-flight batch at most
    assert result.extra["rotated_files"] >= 2  # rotated underneath the kills
    assert not list(log_dir.glob(".*.tmp"))  # a kill's temp file is cleaned up
