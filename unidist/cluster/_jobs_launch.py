"""Launching one job attempt on a host (part of :mod:`unidist.cluster.jobs`).

An attempt runs as a small local *runner*: ``sh`` in its own session that writes its pid,
runs ``ssh HOST COMMAND`` with stdout and stderr going straight to files in the attempt
directory, and when ssh returns writes ssh's exit code to ``exit`` (by an atomic rename).
The runner does not depend on the manager: if the manager is killed (even ``kill -9``), the
runner and the remote command carry on and the exit code still lands in the attempt
directory, where a restarted manager on the same machine picks it up (or waits for it). So a
manager crash alone never makes a job run twice.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "Attempt",
    "Outcome",
    "classify",
    "clear_attempt",
    "new_marker",
    "outcome_of",
    "remote_command",
    "runner_alive",
    "spawn_runner",
    "stop_runner",
]

# The runner: $1 is the attempt directory, the rest is the ssh argv. Paths and arguments
# are positional parameters, never part of the script text, so nothing in them is parsed.
_RUNNER: Final = (
    'd=$1; shift; echo $$ >"$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid" || exit 125\n'
    '"$@" >"$d/stdout" 2>"$d/stderr" </dev/null\n'
    'echo $? >"$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"\n'
)
_RUNNER_NAME: Final = "unidist-job"

MARKER_PREFIX: Final = "UNIDIST-JOB-STARTED-"


def new_marker(directory: Path) -> str:
    """A random start marker for an attempt, saved in ``directory/marker`` so that whoever
    reads the attempt's outcome (this manager or a later one) can look for it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    marker = MARKER_PREFIX + secrets.token_hex(8)
    (directory / "marker").write_text(marker + "\n")
    return marker


def remote_command(
    argv: Sequence[str] | str,
    *,
    env: dict[str, str],
    marker: str,
    workdir: str | None = None,
) -> str:
    """The command line the remote (POSIX) login shell runs: print ``marker:PID`` on stderr,
    export ``env``, change to ``workdir`` when given, then run the job: an argv list quoted
    with :func:`shlex.join` (each word arrives exactly), a string as a command line.

    The marker tells "ssh could not connect" (exit 255, no marker) from "the command ran and
    exited 255" (marker present)."""
    parts = [f"echo {marker}:$$ >&2"]
    parts += [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    parts.append("export " + " ".join(env))
    if workdir is not None:
        parts.append(f"cd {shlex.quote(workdir)} || exit 1")
    parts.append(argv if isinstance(argv, str) else "exec " + shlex.join(argv))
    return "; ".join(parts)


@dataclass(frozen=True)
class Attempt:
    """A launched runner: its process (None when adopted from a dead manager)."""

    directory: Path
    proc: subprocess.Popen[bytes] | None


def clear_attempt(directory: Path) -> None:
    """Create ``directory``, or empty it of an older run's files (a batch forgotten and run
    again reuses attempt numbers), so that no stale ``exit`` is ever read."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("exit", "exit.tmp", "pid", "pid.tmp", "marker", "stdout", "stderr"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def spawn_runner(directory: Path, ssh: Sequence[str]) -> Attempt:
    """Start the runner for ``ssh`` (a full ssh argv) with results in ``directory``.

    Raises:
        OSError: ``sh`` cannot be started or the directory cannot be created.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    proc = subprocess.Popen(  # noqa: S603 - fixed runner script; paths and ssh argv are parameters
        ["/bin/sh", "-c", _RUNNER, _RUNNER_NAME, str(directory), *ssh],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives the manager; Ctrl-C on the terminal is ours to pass
        close_fds=True,
    )
    return Attempt(directory, proc)


def stop_runner(pid: int) -> None:
    """Kill a runner's whole process group (the runner sh and its ssh)."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
    except OSError:
        return True


def read_pid(directory: Path) -> int | None:
    """The runner pid recorded in ``directory``, or None."""
    try:
        return int((directory / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


def runner_alive(directory: Path) -> bool:
    """Whether the runner of ``directory`` still runs (its pid is alive and its command line
    names this directory, so a reused pid does not count)."""
    pid = read_pid(directory)
    if pid is None or not _pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the pid
    return os.fsencode(str(directory)) in cmdline


def read_exit(directory: Path) -> int | None:
    """The exit code the runner recorded, or None while it has not finished."""
    try:
        return int((directory / "exit").read_text().strip())
    except (OSError, ValueError):
        return None


def tail(path: Path, limit: int = 4000) -> str:
    """The last ``limit`` bytes of a file as text ("" when missing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def classify(exit_code: int | None, marker_seen: bool) -> str:
    """``ok``, ``failed`` or ``unreachable`` (ssh exited 255 before the command started)."""
    if exit_code == 0:
        return "ok"
    if exit_code == 255 and not marker_seen:
        return "unreachable"
    return "failed"


def _marker_span(directory: Path, data: bytes) -> tuple[int, int, int | None] | None:
    """Where the start marker line ``MARKER:PID`` is in ``data`` (start, end, remote pid)."""
    try:
        marker = (directory / "marker").read_text().strip().encode()
    except OSError:
        return None
    at = data.find(marker + b":") if marker else -1
    if at < 0:
        return None
    end = data.find(b"\n", at)
    end = len(data) if end < 0 else end + 1
    digits = data[at + len(marker) + 1 : end].strip()
    return at, end, int(digits) if digits.isdigit() else None


def _stderr(directory: Path) -> bytes:
    try:
        return (directory / "stderr").read_bytes()
    except OSError:
        return b""


def marker_seen(directory: Path) -> bool:
    """Whether the remote shell printed the attempt's start marker (the command started)."""
    return _marker_span(directory, _stderr(directory)) is not None


def remote_pid(directory: Path) -> int | None:
    """The pid of the job's remote shell (it leads the remote process group), or None."""
    span = _marker_span(directory, _stderr(directory))
    return None if span is None else span[2]


def job_stderr(directory: Path) -> bytes:
    """What the job itself wrote on stderr: the attempt's stderr after the start marker line
    (before it come ssh's own messages and whatever the login shell's start-up files print)."""
    data = _stderr(directory)
    span = _marker_span(directory, data)
    return data if span is None else data[span[1] :]


def kill_remote(
    host: str,
    directory: Path,
    *,
    connect_timeout: float,
    ssh_options: Sequence[str] | None,
) -> None:
    """Best effort: SIGTERM the job's remote process group, SIGKILL 2 s later (sshd leaves a
    command without a terminal running when its connection drops)."""
    from unidist.cluster.remote import run_one

    pid = remote_pid(directory)
    if pid is None or pid <= 1:
        return
    line = (
        f"kill -s TERM -- -{pid} 2>/dev/null; "
        f"(sleep 2; kill -s KILL -- -{pid}) </dev/null >/dev/null 2>&1 &"
    )
    with contextlib.suppress(OSError, ValueError):
        run_one(
            host,
            line,
            timeout=connect_timeout + 5,
            connect_timeout=connect_timeout,
            ssh_options=ssh_options,
            track=False,
        )


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended."""

    exit_code: int | None
    error: str  # ok | failed | unreachable | timeout | lost
    ended: float
    message: str = ""


def outcome_of(directory: Path) -> Outcome | None:
    """The outcome recorded in ``directory`` (None while the runner has not finished)."""
    code = read_exit(directory)
    if code is None:
        return None
    try:
        ended = (directory / "exit").stat().st_mtime
    except OSError:
        ended = time.time()
    error = classify(code, marker_seen(directory))
    message = ""
    if error == "unreachable":
        message = " ".join(tail(directory / "stderr").strip().splitlines()[-1:])
    return Outcome(code, error, ended, message)


def describe(argv: Sequence[str] | str) -> str:
    """A command for display."""
    return argv if isinstance(argv, str) else shlex.join(argv)
