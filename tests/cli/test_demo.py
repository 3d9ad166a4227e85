"""The main job: `unidist demo` runs a worker fleet and checks its own results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unidist.cli import main


def test_demo_passes_on_memory(capsys: pytest.CaptureFixture[str]) -> None:
    """On memory:// the demo's workers are threads and every check passes."""
    assert main(["--url", "memory://demo-test", "--json", "demo", "--jobs", "60"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True
    assert result["worker_kind"] == "threads"
    assert sum(result["per_worker"].values()) == 60
    assert result["killed"] is not None
    assert result["checks"]["killed worker's job was redelivered"] is True


@pytest.mark.scope("host")
def test_demo_passes_across_processes(backend_url: str) -> None:
    """On file:// and redis:// the demo runs real worker processes and every check passes."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unidist",
            "--url",
            backend_url,
            "--json",
            "demo",
            "--jobs",
            "40",
            "--workers",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["worker_kind"] == "processes"
    assert all(result["checks"].values()), result["checks"]
    killed = result["killed"]
    assert killed is not None
    assert result["redelivered_to"] not in (None, killed["worker"])
    assert result["redelivery_attempts"] >= 2
    victim = next(r for r in result["fleet"] if r["worker"] == killed["worker"])
    assert victim["status"] == "killed (SIGKILL)"


def test_demo_default_leaves_nothing_behind() -> None:
    """The README's main job (`unidist demo` with no URL) passes, in human output."""
    proc = subprocess.run(
        [sys.executable, "-m", "unidist", "demo", "--jobs", "30", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in __import__("os").environ.items() if k != "UNIDIST_URL"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert "killed" in proc.stdout
    assert "redelivered to" in proc.stdout


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command is a usage error with exit code 2."""
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_bad_url_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad backend URL prints one clear line on stderr and exits 1."""
    assert main(["--url", "bogus://x", "demo", "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unidist: error: unknown backend scheme 'bogus'")
    assert "Traceback" not in err
