"""S4: several simulated hosts ship into one store, which drops duplicate record ids.

``count(3, 12)`` host processes, each with its own log directory and host name, log
``count(500, 20000)`` records each through ``unidist.log`` (with size rotation) at the
same time. Each host is shipped; then duplicates are provoked the ways they happen in the
field: one host's state file is lost (its shipper starts from zero and re-sends
everything), and another host's files are shipped twice from two state files.

Pass: every record of every host is in the store exactly once; "dupes removed" (records sent
that the store already held) equals what was re-sent.
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_s4_hosts_dedupe.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

from backends.redis.server import RedisServer
from tests.reliability._log_common import child, corrupt, fresh_prefix, numbers
from tests.reliability._report import Result, count, seed
from unidist.log import ship


def test_s4_many_hosts_each_record_once(redis_server: RedisServer, tmp_path: Path) -> None:
    """Records of many hosts end in the store exactly once, re-sends dropped by record id."""
    rng = random.Random(s := seed())
    hosts = [f"host-{i:02d}" for i in range(count(3, 12))]
    per = count(500, 20000)
    url = fresh_prefix(redis_server.url)
    dirs = {h: tmp_path / h for h in hosts}
    writers = [child("write", str(dirs[h]), "jobs", h, str(per), "20KB", "0") for h in hosts]
    for proc in writers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    sent = stored = 0
    for h in hosts:
        st = ship(url, dir=dirs[h], host=h, batch=rng.choice([50, 200, 1000]))
        sent, stored = sent + st.records, stored + st.stored
    lost_state, twice = rng.sample(hosts, 2)
    for state in dirs[lost_state].glob(".ship-state-*.json"):
        state.unlink()  # the state file is gone: everything is sent again
    again = ship(url, dir=dirs[lost_state], host=lost_state)
    other = ship(url, dir=dirs[twice], host=twice, state=tmp_path / "second-state.json")
    resent = again.records + other.records
    sent, stored = sent + resent, stored + again.stored + other.stored
    seen = numbers(url)
    expected = {(h, n) for h in hosts for n in range(per)}
    result = Result("S4", "redis", s, params={"hosts": len(hosts), "per_host": per})
    result.attempted = len(expected)
    result.ok = len(expected & set(seen))
    result.lost = len(expected - set(seen))
    result.duplicated = sum(c - 1 for c in seen.values())
    result.unexpected = len(set(seen) - expected)
    result.corrupt = len(corrupt(url))
    result.extra["sent"] = sent
    result.extra["dupes_removed"] = sent - stored
    result.emit()
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.unexpected == 0
    assert result.corrupt == 0
    assert resent == 2 * per  # both re-sends really sent everything again ...
    assert sent - stored == resent  # ... and the store dropped exactly those
    assert stored == len(expected)
