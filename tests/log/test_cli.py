"""The ``unidist log`` commands: ship, collect and tail (local and central, filtered, -f)."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import unidist.log
from backends.redis.server import RedisServer
from tests.log.conftest import child_env
from unidist.cli.main import main
from unidist.log._store import RedisStore


@pytest.fixture
def store_url(redis_server: RedisServer) -> str:
    """A fresh key prefix on the session redis-server."""
    return f"{redis_server.url}?prefix=c{uuid.uuid4().hex[:10]}:"


def _populate(log_dir: Path, host: str = "h1") -> None:
    unidist.log.setup(dir=log_dir, console="off", host=host, stdlib=False, level="debug")
    api = unidist.log.get_logger("api")
    db = unidist.log.get_logger("db")
    for n in range(20):
        api.info("request", n=n, path=f"/item/{n}")
        db.debug("query", n=n)
    api.warning("slow request", n=99)
    db.error("deadlock", n=98)
    unidist.log.reset()


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_tail_local_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tail on local files filters by level, track, grep and since, and shows the last N."""
    _populate(tmp_path)
    base = ["log", "tail", "--dir", str(tmp_path), "--json"]
    assert main([*base, "--level", "warning"]) == 0
    assert sorted(r["event"] for r in _json_lines(capsys.readouterr().out)) == [
        "deadlock",
        "slow request",
    ]
    assert main([*base, "--track", "api", "-n", "3"]) == 0
    assert [r["n"] for r in _json_lines(capsys.readouterr().out)] == [18, 19, 99]
    assert main([*base, "--grep", r'"path":"/item/1[0-9]"', "-n", "100"]) == 0
    assert [r["n"] for r in _json_lines(capsys.readouterr().out)] == list(range(10, 20))
    assert main([*base, "--since", "2099-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["log", "tail", "--dir", str(tmp_path), "-n", "1", "--track", "db"]) == 0
    human = capsys.readouterr().out
    assert "deadlock" in human
    assert "error" in human
    assert "test_cli.py:" in human


def test_ship_collect_and_tail_central(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ship from two hosts, tail the store by host and level, collect per host/track/day."""
    for host in ("web1", "web2"):
        _populate(tmp_path / host, host=host)
        code = main(["--url", store_url, "log", "ship", "--dir", str(tmp_path / host),
                     "--host", host, "--json"])  # fmt: skip
        assert code == 0
        assert json.loads(capsys.readouterr().out)["stored"] == 42
    assert main(["--url", store_url, "log", "tail", "--json", "--host", "web2", "-n", "100",
                 "--level", "error"]) == 0  # fmt: skip
    (rec,) = _json_lines(capsys.readouterr().out)
    assert (rec["host"], rec["event"]) == ("web2", "deadlock")
    archive = tmp_path / "archive"
    assert main(["--url", store_url, "log", "collect", "--to", str(archive)]) == 0
    assert "collected 84 records" in capsys.readouterr().out
    day_files = sorted(p.relative_to(archive).parts[:2] for p in archive.glob("*/*/*.log"))
    assert day_files == [("web1", "api"), ("web1", "db"), ("web2", "api"), ("web2", "db")]


def test_ship_needs_a_redis_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ship without a redis:// URL is a usage error (exit 2) that says what to give."""
    assert main(["--url", f"file://{tmp_path}", "log", "ship", "--dir", str(tmp_path)]) == 2
    assert "redis://" in capsys.readouterr().err


def ready(lines: list[str]) -> set[str]:
    """The readiness probes among tail's output lines."""
    return {x for x in lines if '"event":"ready"' in x}


@pytest.mark.timeout(240)
def test_tail_follow_across_rotation(tmp_path: Path) -> None:
    """tail -f prints every new record exactly once while the track rotates underneath."""
    (tmp_path / "f.log").write_bytes(b"")
    cmd = [sys.executable, "-m", "unidist", "log", "tail", "-f", "--json", "-n", "0",
           "--dir", str(tmp_path), "--track", "f"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        unidist.log.setup(dir=tmp_path, console="off", rotate="8KB", keep=100, stdlib=False)
        log = unidist.log.get_logger("f")
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline:  # until it is following
            log.info("ready")
            time.sleep(0.1)
        for n in range(1500):
            log.info("rec", n=n)
            if n % 100 == 0:
                time.sleep(0.02)
        deadline = time.monotonic() + 90  # generous: the child may be starved under -n 2
        while len(lines) < 1500 + len(ready(lines)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    assert len(list(tmp_path.glob("f.log.*"))) >= 5
    counts = collections.Counter(json.loads(x)["n"] for x in lines if x not in ready(lines))
    missing = sorted(set(range(1500)) - set(counts))
    assert not missing, f"{len(missing)} missing: {missing[:5]}..{missing[-5:]}"
    assert counts == collections.Counter(range(1500))


def test_ship_follow_stops_cleanly_on_sigterm(tmp_path: Path, store_url: str) -> None:
    """`unidist log ship -f` ships new records as they come and exits 0 on SIGTERM."""
    _populate(tmp_path)
    cmd = [sys.executable, "-m", "unidist", "--url", store_url, "log", "ship", "-f", "--json",
           "--dir", str(tmp_path), "--interval", "0.05"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        unidist.log.setup(dir=tmp_path, console="off", stdlib=False)
        unidist.log.get_logger("late").info("after start")
        store = RedisStore(store_url)
        deadline = time.monotonic() + 30
        while "late" not in store.tracks() and time.monotonic() < deadline:
            time.sleep(0.05)
        store.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert json.loads(out)["stored"] == 43
