"""The clinit daemon's bookkeeping: one child process, one group, and /proc helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from unidist.cluster._clinit_table import Entry
from unidist.cluster.clinit import STOPPED

__all__ = ["Group", "Proc", "describe_exit", "killpg", "start_ticks"]


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), or
    None when it does not exist or is a zombie (dead, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def describe_exit(code: int) -> str:
    """``exited 3`` or ``was killed by SIGKILL`` for a ``Popen.returncode``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited {code}"


def killpg(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid``; a group that is gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass(eq=False)
class Proc:
    """A child process started for a cltab line."""

    entry: Entry
    popen: subprocess.Popen[bytes]
    level: str
    started: float
    started_mono: float
    ticks: int | None
    stopping: bool = False
    code: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass(eq=False)
class Group:
    """A resource group's level, state and running processes."""

    name: str
    since: float
    level: str | None = None
    state: str = STOPPED
    reason: str = ""
    serial: int = 0
    desired: str | None = None
    applied: int = 0
    done_serial: int = 0
    managed: bool = False
    cluster_id: str | None = None
    procs: dict[Entry, Proc] = field(default_factory=dict)
    quick_deaths: dict[tuple[str, str], int] = field(default_factory=dict)
    thread: threading.Thread | None = None
