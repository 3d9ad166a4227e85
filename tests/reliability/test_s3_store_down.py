"""S3: the central store (Redis) goes away for a while and comes back.

A writer process keeps logging (one record every 2 ms) while a shipper process ships in
follow mode to a redis-server with ``appendfsync always``. The server is ``kill -9``ed and
stays down ``count(3, 60)`` seconds, then is restarted on the same port and data. During the
outage the shipper's CPU time (``/proc/PID/stat`` utime + stime) is measured: it must back
off, not spin.

Pass: lost = 0 and every record stored exactly once after the outage (the shipper resumes
from its saved offsets); shipper CPU while the store is down ≤ 10% of one core; everything
is delivered within the backoff ceiling (5 s) plus a margin after the store is back.
Figures: records written during the outage (delayed), catch-up time, CPU fraction.
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_s3_store_down.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from backends.redis.server import RedisServer
from tests.reliability._log_common import child, numbers, wait_for
from tests.reliability._report import Result, count, seed

HOST = "s3-host"
PACE_MS = 2
MAX_CPU_FRACTION = 0.10
CATCH_UP_LIMIT = 5.0 + 15.0  # backoff ceiling + a loaded machine's margin


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_s3_store_down_then_back(tmp_path: Path) -> None:
    """Hosts keep logging through a store outage; nothing is lost or doubled, the shipper
    backs off without a busy loop and catches up once the store is back."""
    s = seed()
    outage = float(count(3, 60))
    log_dir = tmp_path / "log"
    server = RedisServer(aof=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = f"{server.url}?prefix=s3:"
        # enough records to keep writing from before the outage until after it
        total = int((outage + 2) * 1000 / PACE_MS)
        writer = child("write", str(log_dir), "svc", HOST, str(total), "off", str(PACE_MS))
        procs.append(writer)
        shipper = child("ship", url, str(log_dir), HOST, "200")
        procs.append(shipper)
        assert wait_for(url, 50, 60) < 60, "nothing shipped before the outage"
        server.kill()
        down_at = time.monotonic()
        cpu_before = _cpu_seconds(shipper.pid)
        time.sleep(outage)
        cpu_used = _cpu_seconds(shipper.pid) - cpu_before
        down_for = time.monotonic() - down_at
        server.start()
        backlog = (log_dir / "svc.log").read_bytes().count(b"\n")  # written until now
        catch_up = wait_for(url, backlog, 120)
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()
        wait_for(url, total, 60)
        seen = numbers(url)
        assert shipper.poll() is None, shipper.communicate()[1].decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        server.stop()
    expected = {(HOST, n) for n in range(total)}
    result = Result("S3", "redis", s, params={"outage_s": outage}, path=str(tmp_path))
    result.attempted = total
    result.ok = len(expected & set(seen))
    result.lost = len(expected - set(seen))
    result.duplicated = sum(c - 1 for c in seen.values())
    result.unexpected = len(set(seen) - expected)
    cpu_fraction = cpu_used / down_for
    result.extra["delayed"] = int(down_for * 1000 / PACE_MS)
    result.extra["shipper_cpu_while_down"] = f"{cpu_fraction:.3%}"
    result.extra["backlog_at_restart"] = backlog
    result.extra["catch_up_s"] = round(catch_up, 2)
    result.emit()
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.unexpected == 0
    assert cpu_fraction <= MAX_CPU_FRACTION, f"shipper used {cpu_fraction:.1%} CPU while down"
    assert catch_up <= CATCH_UP_LIMIT, f"caught up {catch_up:.1f} s after the store came back"
