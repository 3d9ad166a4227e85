"""S3: the central store (Redis) goes away for a while and comes back.

A writer process keeps logging (one record every 2 ms) while a shipper process ships in
follow mode to a redis-server with ``appendfsync always``. The server is ``kill -9``ed and
stays down ``count(3, 60)`` seconds, then is restarted on the same port and data. Halfway
through the outage the shipper is ``kill -9``ed and a new one starts from its state file
while the store is still down. The shippers' CPU time during the outage (``/proc/PID/stat``
utime + stime, then the new shipper thread's CPU clock) must show backoff, not a busy loop.

Pass: lost = 0 and every record stored exactly once after the outage; the restarted shipper
resumes from the saved offsets (it re-sends at most one batch); shipper CPU while the store
is down ≤ 10% of one core; the backlog is delivered within the backoff ceiling (5 s) plus a
margin after the store is back.
Figures: records written during the outage (delayed), catch-up time, CPU fraction.
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_s3_store_down.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from backends.redis.server import RedisServer
from tests.reliability._log_common import child, corrupt, numbers, wait_for
from tests.reliability._report import Result, count, seed
from unidist.log._store import RedisStore
from unidist.log.shipper import Shipper

HOST = "s3-host"
BATCH = 200
PACE_MS = 2
MAX_CPU_FRACTION = 0.10
CATCH_UP_LIMIT = 5.0 + 15.0  # backoff ceiling + a loaded machine's margin


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_s3_store_down_then_back(tmp_path: Path) -> None:
    """Hosts keep logging through a store outage; nothing is lost or doubled, the shipper
    backs off without a busy loop, a shipper restarted during the outage resumes from the
    saved offsets, and everything is caught up once the store is back."""
    s = seed()
    outage = float(count(3, 60))
    log_dir = tmp_path / "log"
    server = RedisServer(aof=True)
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    thread: threading.Thread | None = None
    restarted: Shipper | None = None
    errors: list[BaseException] = []
    try:
        url = f"{server.url}?prefix=s3:"
        # enough records to keep writing from before the outage until after it
        total = int((outage + 2) * 1000 / PACE_MS)
        writer = child("write", str(log_dir), "svc", HOST, str(total), "off", str(PACE_MS))
        procs.append(writer)
        shipper = child("ship", url, str(log_dir), HOST, str(BATCH))
        procs.append(shipper)
        assert wait_for(url, 50, 60) < 60, "nothing shipped before the outage"
        server.kill()
        down_at = time.monotonic()
        # first half of the outage: the shipper process, retrying
        cpu_before = _cpu_seconds(shipper.pid)
        time.sleep(outage / 2)
        cpu_used = _cpu_seconds(shipper.pid) - cpu_before
        shipper.send_signal(signal.SIGKILL)  # and it dies while the store is down
        shipper.wait()
        # second half: a new shipper from the same state file, starting with the store down
        (state_path,) = log_dir.glob(".ship-state-*.json")
        store = RedisStore(url)
        restarted = Shipper(
            store, log_dir, state_path, HOST, batch=BATCH, retry_for=None, stop=stop
        )
        run = restarted.run

        def ship_on() -> None:
            try:
                run(follow=True, interval=0.05)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=ship_on)
        thread.start()
        clock = time.pthread_getcpuclockid(thread.ident or 0)
        time.sleep(outage / 2)
        cpu_used += time.clock_gettime(clock)
        down_for = time.monotonic() - down_at
        server.start()
        backlog = (log_dir / "svc.log").read_bytes().count(b"\n")  # written until now
        catch_up = wait_for(url, backlog, 120)
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()
        wait_for(url, total, 60)
        seen = numbers(url)
        bad = corrupt(url)
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
        if restarted is not None:
            restarted.close()
            restarted.store.close()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        server.stop()
    assert not errors, errors
    resent = restarted.stats.records - restarted.stats.stored
    expected = {(HOST, n) for n in range(total)}
    result = Result("S3", "redis", s, params={"outage_s": outage}, path=str(tmp_path))
    result.attempted = total
    result.ok = len(expected & set(seen))
    result.lost = len(expected - set(seen))
    result.duplicated = sum(c - 1 for c in seen.values())
    result.unexpected = len(set(seen) - expected)
    result.corrupt = len(bad)
    cpu_fraction = cpu_used / down_for
    result.extra["delayed"] = int(down_for * 1000 / PACE_MS)
    result.extra["shipper_cpu_while_down"] = f"{cpu_fraction:.3%}"
    result.extra["backlog_at_restart"] = backlog
    result.extra["catch_up_s"] = round(catch_up, 2)
    result.extra["resent_after_restart"] = resent
    result.emit()
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.unexpected == 0
    assert result.corrupt == 0
    assert cpu_fraction <= MAX_CPU_FRACTION, f"shipper used {cpu_fraction:.1%} CPU while down"
    assert resent <= BATCH, "the restarted shipper did not resume from its saved offsets"
    assert restarted.stats.stored > 0  # it did ship the backlog
    assert catch_up <= CATCH_UP_LIMIT, f"caught up {catch_up:.1f} s after the store came back"
