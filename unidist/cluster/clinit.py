"""Resource groups started at run levels ("cluster init"): the clinit daemon and its clients.

One daemon per host (``unidist clinit --daemon``) reads a cltab of
``group:level:tag:mode:command`` lines (:mod:`unidist.cluster._clinit_table`) and moves each
group between levels when asked: the processes of entries that do not belong to the new
level are stopped (SIGTERM to the process group, SIGKILL after the grace period), then the
new level's entries run in file order:

=========  ==================================================================================
wait       run, and wait for it to finish before the next line (a non-zero exit is logged
           and shown as the group's reason, but the level goes on)
once       start, do not wait; kept running when the next level lists the same line
respawn    start and keep running: restarted after it exits, with exponential backoff
           (``backoff_min`` doubling to ``backoff_max``; reset after ``stable`` seconds up)
test       run to completion as a check: a non-zero exit marks the group FAILED and stops
           the level there (entries already started keep running)
off        take the tag out of the level: its line is not run there, and its process
           is stopped if one runs (wherever the off line sits in the file)
=========  ==================================================================================

Commands run without a shell: the command field is split with :func:`shlex.split` and run
directly; write ``sh -c '...'`` to get a shell. Each command runs in its own session (and so
its own process group), with stdin from ``/dev/null``, the daemon's stdout/stderr, and the
environment of the daemon plus ``CLINIT_GROUP``, ``CLINIT_LEVEL`` and ``CLINIT_TAG``.

Clients talk to the daemon over a UNIX socket (:mod:`unidist.cluster._clinit_sock`) with one
JSON object per line: :func:`set_level`, :func:`status`. :func:`set_cluster_level` records a
desired level in the ``clinit`` :class:`~unidist.SharedState` bucket instead; every daemon
started with a backend URL whose host is in that cluster group (``Cluster.groups_of``)
converges to it, and publishes its own status there (:func:`cluster_status`).

State is kept where a restarted daemon finds it: the status file (one line per group, for
people and scripts) and a JSON run file beside it (``<status file>.json``: levels and the
pids of the processes started). A daemon that starts after a crash stops the processes the
previous one left behind (checked by pid and start time, so a reused pid is never hit), then
brings every group back to its recorded level, or to the cluster's desired level.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from unidist.cluster._clinit_sock import SOCKET_NAME, DaemonNotRunning, default_dir, request
from unidist.cluster._clinit_table import MODES, Entry, Table, check_word, parse_table, read_table
from unidist.errors import UnidistError
from unidist.log._files import atomic_write_bytes

if TYPE_CHECKING:
    from unidist.backends.base import Backend

__all__ = [
    "BUCKET",
    "MODES",
    "STATES",
    "DaemonConfig",
    "DaemonNotRunning",
    "Entry",
    "Table",
    "cluster_status",
    "default_cltab",
    "default_socket",
    "default_status_file",
    "iso",
    "parse_status",
    "parse_table",
    "read_table",
    "render_status",
    "run_daemon",
    "set_cluster_level",
    "set_level",
    "status",
    "wait_level",
    "write_atomic",
]

BUCKET: Final = "clinit"
"""The SharedState bucket of desired levels (``desired/GROUP``) and host status
(``status/HOST``)."""

STARTING: Final = "STARTING"
RUNNING: Final = "RUNNING"
DONE: Final = "DONE"
FAILED: Final = "FAILED"
STOPPED: Final = "STOPPED"
STATES: Final = (STARTING, RUNNING, DONE, FAILED, STOPPED)
"""STARTING: a level change is under way; RUNNING: done, processes run; DONE: done, nothing
left running; FAILED: a test failed or a command could not be started; STOPPED: no level, a
level without entries, or the daemon stopped."""


def default_socket() -> Path:
    """``<runtime dir>/unidist/clinit.sock`` (see :func:`_clinit_sock.default_dir`)."""
    return default_dir() / SOCKET_NAME


def default_status_file() -> Path:
    """``<runtime dir>/unidist/clinit.status``."""
    return default_dir() / "clinit.status"


def default_cltab() -> Path:
    """``/etc/unidist/cltab`` for root, else ``~/.config/unidist/cltab``."""
    if os.geteuid() == 0:
        return Path("/etc/unidist/cltab")
    return Path.home() / ".config" / "unidist" / "cltab"


# ------------------------------------------------------------------------------- clients
def set_level(group: str, level: str, sock: Path | None = None) -> dict[str, Any]:
    """Ask the local daemon to move ``group`` to ``level``; return its answer
    (``group``, ``level``, ``previous``, ``serial``).

    Returns once the daemon accepted the request; the change runs in the background (see
    :func:`wait_level`).

    Raises:
        ValueError: a bad group or level name.
        DaemonNotRunning: no daemon listens on the socket.
        UnidistError: the daemon refused (unknown group, group managed cluster-wide...).
    """
    check_word(group, "group")
    check_word(level, "level")
    return _checked(
        request(sock or default_socket(), {"op": "level", "group": group, "level": level})
    )


def status(sock: Path | None = None) -> dict[str, Any]:
    """The local daemon's status: ``host``, ``pid``, ``cltab``, ``groups`` (name → ``level``,
    ``state``, ``since``, ``reason``, ``managed``, ``procs``...).

    Raises:
        DaemonNotRunning: no daemon listens on the socket.
    """
    return _checked(request(sock or default_socket(), {"op": "status"}))


def wait_level(
    group: str, serial: int, sock: Path | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Wait until the level change numbered ``serial`` (from :func:`set_level`) of ``group``
    has finished (or was superseded by a later one); return the group's status.

    Raises:
        TimeoutError: not finished within ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = status(sock)["groups"].get(group, {})
        if int(info.get("done_serial", 0)) >= serial:
            return dict(info)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"group {group} did not finish its level change in {timeout}s")
        time.sleep(0.1)


def _checked(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        raise UnidistError(str(answer.get("error") or "the clinit daemon refused the request"))
    return answer


def set_cluster_level(backend: Backend | str, group: str, level: str) -> dict[str, Any]:
    """Record ``level`` as the desired level of ``group`` cluster-wide and return the record.

    Every daemon started with this backend whose host is in cluster group ``group`` moves
    its resource group ``group`` there at its next poll, and again whenever a new record is
    written (writing the same level again re-runs the level everywhere).

    Args:
        backend: a Backend or URL.

    Raises:
        ValueError: a bad group or level name.
        BackendUnavailable: the backend cannot be reached.
    """
    from unidist.state import SharedState

    check_word(group, "group")
    check_word(level, "level")
    record: dict[str, Any] = {
        "level": level,
        "set_at": time.time(),
        "by": f"{socket.gethostname()}:{os.getpid()}",
        "id": uuid.uuid4().hex,
    }
    SharedState(BUCKET, backend=backend)[f"desired/{group}"] = record
    return record


def cluster_status(backend: Backend | str) -> dict[str, Any]:
    """``{"desired": {group: record}, "hosts": {host: status}}`` from the shared bucket.

    Raises:
        BackendUnavailable: the backend cannot be reached.
    """
    from unidist.state import SharedState

    snap = SharedState(BUCKET, backend=backend).snapshot()
    out: dict[str, Any] = {"desired": {}, "hosts": {}}
    for key, value in snap.items():
        kind, _, name = key.partition("/")
        if kind == "desired":
            out["desired"][name] = value
        elif kind == "status":
            out["hosts"][name] = value
    return out


# ------------------------------------------------------------------------------- daemon
@dataclass
class DaemonConfig:
    """What a daemon runs with (``unidist clinit --daemon`` options).

    Attributes:
        cltab: the table file.
        socket: the UNIX socket path (its directory is made 0700).
        status_file: the status file (the run file is ``<status_file>.json``).
        url: backend URL for cluster-wide levels and status, or None for local only.
        cluster_file: the cluster file (else ``$CLUSTER``).
        host: this host's name in the cluster file (default the host name, then the short name).
        levels: initial levels of groups that have no recorded level.
        grace: seconds between SIGTERM and SIGKILL when stopping a process group.
        poll: seconds between reads of the shared desired levels.
        backoff_min, backoff_max, stable: respawn backoff (seconds).
    """

    cltab: Path
    socket: Path
    status_file: Path
    url: str | None = None
    cluster_file: str | None = None
    host: str | None = None
    levels: dict[str, str] = field(default_factory=dict)
    grace: float = 10.0
    poll: float = 2.0
    backoff_min: float = 0.5
    backoff_max: float = 60.0
    stable: float = 10.0


def run_daemon(config: DaemonConfig) -> int:
    """Run a daemon in the foreground until SIGTERM or SIGINT; return the exit status.

    Raises:
        ClusterFileError: the cltab (or cluster file) is malformed.
        UnidistError: another daemon runs on the socket, or its directory is unsafe.
    """
    from unidist.cluster._clinit_daemon import Daemon

    return Daemon(config).run()


def iso(ts: float) -> str:
    """Unix seconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a new temp file (``O_EXCL|O_NOFOLLOW``, mode 0600),
    fsync, rename, fsync of the directory."""
    atomic_write_bytes(path, data)


def render_status(host: str, groups: Iterable[tuple[str, dict[str, Any]]], now: float) -> str:
    """The status file text: a comment line, then ``GROUP LEVEL STATE SINCE [REASON]`` per
    group (``-`` for no level, SINCE in ISO-8601 UTC)."""
    lines = [f"# unidist clinit status of {host}, written {iso(now)}"]
    for name, info in groups:
        line = f"{name} {info.get('level') or '-'} {info['state']} {iso(float(info['since']))}"
        if info.get("reason"):
            line += " " + " ".join(str(info["reason"]).split())
        lines.append(line)
    return "\n".join(lines) + "\n"


def parse_status(text: str) -> dict[str, dict[str, str]]:
    """Read a status file's lines back: group → ``level``, ``state``, ``since``, ``reason``."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(" ", 4)
        out[parts[0]] = {
            "level": parts[1],
            "state": parts[2],
            "since": parts[3],
            "reason": parts[4] if len(parts) > 4 else "",
        }
    return out
