"""``unidist run`` and ``unidist runs``: pass-through, exit code, records, the run log track."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import unidist
from unidist.cli import main
from unidist.cli.run_cmd import RECORD_KEYS

Cli = Callable[..., subprocess.CompletedProcess[str]]

NOISY = (
    "import sys\n"
    "sys.stdout.write('x' * 10000 + 'END\\n')\n"
    "print('oops', file=sys.stderr)\n"
    "sys.exit(3)\n"
)


@pytest.mark.scope("host")
def test_run_passes_output_through_and_records(
    cli: Cli, backend_url: str, cli_env: dict[str, str]
) -> None:
    """CMD's output passes through, unidist exits with its code, and `runs --json` has the
    record with exactly the documented keys and 4 KiB tails; the run is logged."""
    proc = cli(backend_url, "run", "--name", "noisy", "--", sys.executable, "-c", NOISY)
    assert proc.returncode == 3
    assert proc.stdout == "x" * 10000 + "END\n"
    assert proc.stderr == "oops\n"
    listed = cli(backend_url, "runs", "--name", "noisy", "--json")
    assert listed.returncode == 0, listed.stderr
    (rec,) = json.loads(listed.stdout)
    assert tuple(sorted(rec)) == tuple(sorted(RECORD_KEYS))
    assert rec["name"] == "noisy"
    assert rec["exit_code"] == 3
    assert rec["argv"] == [sys.executable, "-c", NOISY]
    assert rec["stdout_tail"].endswith("END\n")
    assert len(rec["stdout_tail"]) == 4096
    assert rec["stderr_tail"] == "oops\n"
    assert rec["end"] >= rec["start"]
    assert rec["duration"] >= 0
    assert isinstance(rec["pid"], int)
    events = [
        json.loads(line)
        for line in (Path(cli_env["UNIDIST_LOG_DIR"]) / "run.log").read_text().splitlines()
    ]
    finished = [e for e in events if e["event"] == "run_finished"]
    assert finished[-1]["exit_code"] == 3
    assert finished[-1]["name"] == "noisy"


def test_runs_last_and_name_filter(
    backend_url: str, capsys: pytest.CaptureFixture[str], cli_env: dict[str, str]
) -> None:
    """`runs --last N` keeps the newest N; the default name is CMD's basename."""
    for code in (0, 1, 2):
        rc = main(
            ["--url", backend_url, "run", "--", sys.executable, "-c", f"raise SystemExit({code})"]
        )
        assert rc == code
    assert main(["--url", backend_url, "run", "-n", "other", "--", sys.executable, "-c", ""]) == 0
    capsys.readouterr()
    name = Path(sys.executable).name
    assert main(["--url", backend_url, "--json", "runs", "--name", name, "--last", "2"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["exit_code"] for r in recs] == [1, 2]
    assert main(["--url", backend_url, "runs"]) == 0
    table = capsys.readouterr().out
    assert "other" in table
    assert "EXIT" in table


def test_run_keep_prunes_old_records(backend_url: str, cli_env: dict[str, str]) -> None:
    """--keep N keeps only the newest N records of a name."""
    for _ in range(3):
        assert (
            main(
                [
                    "--url",
                    backend_url,
                    "run",
                    "-n",
                    "k",
                    "--keep",
                    "2",
                    "--",
                    sys.executable,
                    "-c",
                    "",
                ]
            )
            == 0
        )
    runs = unidist.SharedState("runs", backend=backend_url).snapshot()
    assert len([r for r in runs.values() if isinstance(r, dict) and r["name"] == "k"]) == 2


def test_run_with_busy_lock_runs_nothing(
    backend_url: str, capsys: pytest.CaptureFixture[str], cli_env: dict[str, str]
) -> None:
    """`run --lock L --timeout 0` with L held: exit 75, CMD not run, nothing recorded."""
    lock = unidist.SharedLock("nightly", backend=backend_url)
    assert lock.acquire(timeout=5)
    try:
        argv = ["--url", backend_url, "run", "--lock", "nightly", "--timeout", "0"]
        assert main([*argv, "--", sys.executable, "-c", ""]) == 75
    finally:
        lock.release()
    assert "'nightly' is busy" in capsys.readouterr().err
    assert len(unidist.SharedState("runs", backend=backend_url)) == 0


def test_run_missing_command_is_recorded_127(
    backend_url: str, capsys: pytest.CaptureFixture[str], cli_env: dict[str, str]
) -> None:
    """A CMD that cannot start exits 127 and the record says why."""
    assert main(["--url", backend_url, "run", "--", "no-such-command-xyz"]) == 127
    (rec,) = unidist.SharedState("runs", backend=backend_url).values()
    assert isinstance(rec, dict)
    assert rec["exit_code"] == 127
    assert "command not found" in str(rec["stderr_tail"])
