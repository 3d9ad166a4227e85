"""Fixtures of the log tests: every test logs into its own temporary directory.

An autouse fixture points ``UNIDIST_LOG_DIR`` at a fresh directory and turns the console
off, so no test ever writes to the real default directories, and resets :mod:`unidist.log`
afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import unidist.log

HERE = Path(__file__).resolve().parent
PROCS = HERE / "_procs.py"
ROOT = HERE.parents[1]


@pytest.fixture(autouse=True)
def _isolated_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point unidist.log at a private directory for the test, and reset it afterwards."""
    for var in list(os.environ):
        if var.startswith("UNIDIST_LOG_"):
            monkeypatch.delenv(var)
    log_dir = tmp_path / "log-env"
    monkeypatch.setenv("UNIDIST_LOG_DIR", str(log_dir))
    monkeypatch.setenv("UNIDIST_LOG_CONSOLE", "off")
    unidist.log.reset()
    yield log_dir
    unidist.log.reset()


@pytest.fixture
def log_dir(_isolated_log: Path) -> Path:
    """The directory ``UNIDIST_LOG_DIR`` names for this test."""
    return _isolated_log


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this checkout importable, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run_proc(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``_procs.py`` with ``args`` in a child process (stdout piped)."""
    return subprocess.Popen(
        [sys.executable, str(PROCS), *args],
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_records(log_dir: Path, track: str) -> list[dict[str, Any]]:
    """Every record of ``track`` in ``log_dir``: current and rotated files, each line parsed."""
    out: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob(f"{track}.log*")):
        for line in path.read_bytes().splitlines():
            out.append(json.loads(line))
    return out
