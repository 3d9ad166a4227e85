"""``unidist lock run|list|break`` and ``sem run``: exit codes, cron overlap, signals, JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import unidist
from unidist._facade import HOST
from unidist.cli import main

Start = Callable[..., subprocess.Popen[str]]
Cli = Callable[..., subprocess.CompletedProcess[str]]

# A CMD that records that it ran, then waits until the test lets it finish.
WAIT_FOR_GO = (
    "import pathlib, sys, time\n"
    "d = pathlib.Path(sys.argv[1])\n"
    "with open(d / 'ran', 'a') as f: f.write('x')\n"
    "(d / 'started').touch()\n"
    "while not (d / 'go').exists(): time.sleep(0.02)\n"
)

# A CMD that notes which signal reached it and exits 42.
TRAP = (
    "import pathlib, signal, sys, time\n"
    "d = pathlib.Path(sys.argv[1])\n"
    "def got(n, f):\n"
    "    (d / 'signal').write_text(signal.Signals(n).name); sys.exit(42)\n"
    "signal.signal(signal.SIGTERM, got); signal.signal(signal.SIGINT, got)\n"
    "(d / 'started').touch()\n"
    "time.sleep(30)\n"
)


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.scope("host")
def test_lock_run_exits_with_cmd_code_and_releases(cli: Cli, backend_url: str) -> None:
    """CMD's exit code is unidist's exit code, and the lock is free afterwards."""
    proc = cli(backend_url, "lock", "run", "job", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert proc.returncode == 7, proc.stderr
    assert unidist.connect(backend_url).lock_owners("job") == []


@pytest.mark.scope("host")
def test_cron_overlap_exactly_one_runs(start: Start, backend_url: str, tmp_path: Path) -> None:
    """Two `lock run --timeout 0` at once: exactly one runs CMD, the other exits 75 at once
    and names the holder (as JSON too)."""
    cmd = ["--", sys.executable, "-c", WAIT_FOR_GO, str(tmp_path)]
    a = start(backend_url, "--json", "lock", "run", "cron", "--timeout", "0", *cmd)
    b = start(backend_url, "--json", "lock", "run", "cron", "--timeout", "0", *cmd)
    deadline = time.monotonic() + 30
    while a.poll() is None and b.poll() is None:
        assert time.monotonic() < deadline, "neither run gave up"
        time.sleep(0.02)
    loser, winner = (a, b) if a.poll() is not None else (b, a)
    out, err = loser.communicate()
    assert loser.returncode == 75, err
    assert "'cron' is busy" in err
    assert "held by" in err
    busy = json.loads(out)
    assert busy["busy"] is True
    assert busy["name"] == "cron"
    assert busy["holders"][0]["host"] == HOST
    (tmp_path / "go").touch()
    _, err = winner.communicate(timeout=30)
    assert winner.returncode == 0, err
    assert (tmp_path / "ran").read_text() == "x"


@pytest.mark.scope("host")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_is_forwarded_and_lock_released(
    start: Start,
    cli: Cli,
    backend_url: str,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    """SIGTERM/SIGINT to `lock run` reach CMD; unidist exits with CMD's code and frees the lock."""
    proc = start(backend_url, "lock", "run", "sig", "--", sys.executable, "-c", TRAP, str(tmp_path))
    _wait_for(tmp_path / "started")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    assert (tmp_path / "signal").read_text() == sig.name
    again = cli(backend_url, "lock", "run", "sig", "--timeout", "0", "--", sys.executable, "-c", "")
    assert again.returncode == 0, again.stderr


@pytest.mark.scope("host")
def test_ttl_lock_is_renewed_while_cmd_runs(cli: Cli, backend_url: str) -> None:
    """With --ttl the lease is renewed: a CMD running past the ttl keeps the lock."""
    cmd = "import time; time.sleep(1.6)"
    proc = cli(backend_url, "lock", "run", "lease", "--ttl", "0.5", "--", sys.executable, "-c", cmd)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr


def test_lock_list_json_shows_holder(backend_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`lock list --json` (global option after the command) lists each holder with its age."""
    lock = unidist.SharedLock("listed", backend=backend_url)
    assert lock.acquire(timeout=5)
    try:
        assert main(["--url", backend_url, "lock", "list", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["name"] for r in rows] == ["listed"]
        assert rows[0]["pid"] == os.getpid()
        assert rows[0]["host"] == HOST
        assert rows[0]["age"] >= 0
        assert rows[0]["holders"] == 1
        assert main(["--url", backend_url, "lock", "list"]) == 0
        assert "listed" in capsys.readouterr().out
    finally:
        lock.release()
    assert main(["--url", backend_url, "--json", "lock", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_lock_break_refuses_live_local_holder(
    backend_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A holder alive on this host is not broken: exit 1 and a clear message."""
    be = unidist.connect(backend_url)
    grant = be.lock_acquire("live", 1, "h1", {"host": HOST, "pid": os.getpid()}, None)
    assert grant is not None
    assert main(["--url", backend_url, "lock", "break", "live"]) == 1
    err = capsys.readouterr().err
    assert "refusing to break 'live'" in err
    assert "alive on this host" in err
    assert len(be.lock_owners("live")) == 1
    assert be.lock_release("live", "h1")


def test_lock_break_frees_dead_or_remote_holder(
    backend_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A holder on another host (or a dead local pid) is broken; the lock is free again."""
    be = unidist.connect(backend_url)
    assert be.lock_acquire("stuck", 1, "h1", {"host": "elsewhere.example", "pid": 1}, None)
    assert main(["--url", backend_url, "--json", "lock", "break", "stuck"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["broken"] == 1
    assert out["holders"][0]["host"] == "elsewhere.example"
    assert be.lock_owners("stuck") == []
    assert main(["--url", backend_url, "lock", "break", "stuck"]) == 0
    assert "not held" in capsys.readouterr().out


@pytest.mark.scope("host")
def test_lock_break_after_holder_killed(cli: Cli, backend_url: str, tmp_path: Path) -> None:
    """A holder process killed with SIGKILL leaves a lock that `lock break` frees (file://
    frees it by itself; then break has nothing to do)."""
    code = (
        "import os, sys, unidist\n"
        f"l = unidist.SharedLock('orphan', backend={backend_url!r})\n"
        "assert l.acquire(timeout=10)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert child.returncode == -9, child.stderr
    proc = cli(backend_url, "lock", "break", "orphan")
    assert proc.returncode == 0, proc.stderr
    assert unidist.connect(backend_url).lock_owners("orphan") == []


def test_sem_run_busy_when_slots_taken(
    backend_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sem run --limit 2` runs CMD in a free slot and exits 75 when both slots are held."""
    true = [sys.executable, "-c", ""]
    assert main(["--url", backend_url, "sem", "run", "s", "--limit", "2", "--", *true]) == 0
    sem = unidist.SharedSemaphore("s", 2, backend=backend_url)
    assert sem.acquire(timeout=5)
    assert sem.acquire(timeout=5)
    try:
        rc = main(
            ["--url", backend_url, "sem", "run", "s", "-n", "2", "--timeout", "0", "--", *true]
        )
        assert rc == 75
        assert "semaphore 's' is busy" in capsys.readouterr().err
    finally:
        sem.release()
        sem.release()


@pytest.mark.parametrize(
    "args",
    [
        ["lock", "run", "x"],
        ["lock", "run", "x", "--timeout", "-1", "--", "true"],
        ["sem", "run", "x", "--", "true"],
        ["lock", "run", "--timeout", "0"],
    ],
    ids=["no-cmd", "negative-timeout", "no-limit", "no-name"],
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad arguments: a usage message and exit 2, nothing run."""
    assert main(["--url", "memory://usage", *args]) == 2
    assert "Usage:" in capsys.readouterr().err


def test_missing_command_is_127(capsys: pytest.CaptureFixture[str]) -> None:
    """A CMD that does not exist exits 127 with one line, and the lock is released."""
    url = "memory://missing-cmd"
    assert main(["--url", url, "lock", "run", "m", "--", "no-such-command-xyz"]) == 127
    assert "no-such-command-xyz: command not found" in capsys.readouterr().err
    assert unidist.connect(url).lock_owners("m") == []
