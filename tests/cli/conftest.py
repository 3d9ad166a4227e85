"""CLI test helpers: run ``python -m unidist`` as a user would; reset handles after each test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import unidist

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a ``unidist`` child: no inherited URL, logs under ``tmp_path``.

    The same log directory is set for in-process ``main()`` calls of the test.
    """
    log_dir = str(tmp_path / "log")
    monkeypatch.setenv("UNIDIST_LOG_DIR", log_dir)
    monkeypatch.delenv("UNIDIST_URL", raising=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIDIST_")}
    env["UNIDIST_LOG_DIR"] = log_dir
    return env


@pytest.fixture
def cli(cli_env: dict[str, str]) -> CliRunner:
    """``cli(url, *args, input=None, timeout=60)`` runs ``python -m unidist --url URL ARGS``."""

    def run(
        url: str | None, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "unidist"]
        if url is not None:
            argv += ["--url", url]
        return subprocess.run(
            argv + list(args),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=cli_env,
            check=False,
        )

    return run


@pytest.fixture(autouse=True)
def _fresh_handles() -> Iterator[None]:
    """In-process ``main()`` calls cache backend handles; drop them after each test."""
    yield
    unidist.backends.reset()


@pytest.fixture
def start(cli_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``start(url, *args)`` starts ``python -m unidist --url URL ARGS`` without waiting."""
    procs: list[subprocess.Popen[str]] = []

    def run(url: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unidist", "--url", url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env,
        )
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
