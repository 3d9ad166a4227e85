"""``unidist dsh`` and ``unidist pcp``: run a command or copy files on cluster hosts.

Both use the system ``ssh``/``scp`` through :mod:`unidist.cluster.remote`. Hosts come from
``-g GROUP`` (a group or lump of the cluster file, ``--file`` or ``$CLUSTER``) and/or
``-w host1,host2``; with neither, every host of the cluster file.

``dsh`` prints each output line as it arrives, prefixed ``host: `` (stdout lines on stdout,
stderr lines on stderr), then one summary line on stderr. ``--json`` prints one JSON list of
results instead (``host``, ``exit_code``, ``stdout``, ``stderr``, ``duration``, ``error``).

Exit codes: 0 every host ok; 4 a command failed (non-zero exit) or timed out on at least one
host; 5 no command failed but at least one host was unreachable; 1 and 2 as for every command.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO, TypeVar, cast

import click

from unidist.cli._common import echo_json
from unidist.cli.main import EXIT_OK, Context
from unidist.cluster import remote
from unidist.cluster.files import Cluster, load
from unidist.cluster.remote import FAILED, OK, TIMEOUT, UNREACHABLE, Result

EXIT_HOSTS_FAILED: Final = 4
EXIT_HOSTS_UNREACHABLE: Final = 5
KINDS: Final = (OK, FAILED, TIMEOUT, UNREACHABLE)
_PROGRESS_AFTER: Final = 1.0  # seconds before a progress line appears
# Targets are resolved here already: a -w name that is also a group stays a host.
_HOSTS_ONLY: Final = Cluster({}, (), (), hostname="")


def _hosts(path: str | None, groups: Sequence[str], lists: Sequence[str]) -> list[str]:
    """The target hosts: the groups' hosts, then the listed ones, without duplicates."""
    chosen: dict[str, None] = {}
    if groups or not lists:
        cluster = load(path)
        if not groups and cluster.path is None:
            raise click.UsageError("no hosts: give -g GROUP or -w HOST,... (or a cluster file)")
        if groups and cluster.path is None:
            raise click.UsageError("-g needs a cluster file: --file PATH or $CLUSTER")
        for name in groups or ("__all__",):
            try:
                members = cluster.group(name)
            except KeyError:
                raise click.UsageError(f"no group {name!r} in the cluster file") from None
            chosen.update(dict.fromkeys(members))
    for item in lists:
        for raw in item.split(","):
            host = raw.strip()
            if not host:
                raise click.UsageError(f"empty host name in -w {item!r}")
            chosen[host] = None
    try:
        for host in chosen:
            remote.check_host(host)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not chosen:
        raise click.UsageError("no hosts selected (the group is empty)")
    return list(chosen)


class _Display:
    """Serializes prefixed output lines and a one-line progress display on a terminal."""

    def __init__(self, total: int, progress: bool, err: TextIO) -> None:
        self.total = total
        self.progress = progress
        self.err = err
        self.counts = dict.fromkeys(KINDS, 0)
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.shown = False
        self.stop = threading.Event()
        self.ticker: threading.Thread | None = None
        if progress:
            self.ticker = threading.Thread(target=self._tick, daemon=True, name="dsh-progress")
            self.ticker.start()

    def _status(self) -> str:
        done = sum(self.counts.values())
        parts = " ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        elapsed = time.monotonic() - self.start
        return f"[{done}/{self.total}] {parts or 'running'} ({elapsed:.0f}s)"

    def _clear(self) -> None:
        if self.shown:
            self.err.write("\r\x1b[K")
            self.shown = False

    def _draw(self) -> None:
        if self.progress and time.monotonic() - self.start >= _PROGRESS_AFTER:
            self.err.write("\r\x1b[K" + self._status())
            self.err.flush()
            self.shown = True

    def _tick(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                self._draw()

    def line(self, host: str, stream: str, text: str) -> None:
        text = text.removesuffix("\r")  # ssh ends its own messages with CRLF
        with self.lock:
            self._clear()
            if stream == "stdout":
                self.err.flush()
                click.echo(f"{host}: {text}")
            else:
                sys.stdout.flush()
                self.err.write(f"{host}: {text}\n")
            self._draw()
            self.err.flush()

    def result(self, res: Result) -> None:
        with self.lock:
            self.counts[res.error] = self.counts.get(res.error, 0) + 1
            self._draw()

    def close(self) -> None:
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            self._clear()
            self.err.flush()


def _summary(what: str, results: dict[str, Result]) -> str:
    """``dsh: 5 hosts: 3 ok, 1 failed (node2), 0 timeout, 1 unreachable (nodedown)``."""
    parts = []
    for kind in KINDS:
        hosts = [h for h, r in results.items() if r.error == kind]
        text = f"{len(hosts)} {kind}"
        if hosts and kind != OK:
            shown = ", ".join(hosts[:10]) + (", ..." if len(hosts) > 10 else "")
            text += f" ({shown})"
        parts.append(text)
    count = f"{len(results)} host{'s' if len(results) != 1 else ''}"
    return f"{what}: {count}: " + ", ".join(parts)


def _exit_code(results: dict[str, Result]) -> int:
    kinds = {r.error for r in results.values()}
    if kinds & {FAILED, TIMEOUT}:
        return EXIT_HOSTS_FAILED
    if UNREACHABLE in kinds:
        return EXIT_HOSTS_UNREACHABLE
    return EXIT_OK


def _positive(value: float | None, name: str) -> None:
    if value is not None and not value > 0:
        raise click.UsageError(f"{name} must be a positive number of seconds, not {value}")


_F = TypeVar("_F", bound=Callable[..., Any])
_TARGET_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--file",
        "path",
        type=click.Path(dir_okay=False),
        envvar="CLUSTER",
        help="Cluster file (GROUP:/LUMP: format). Default: $CLUSTER.",
    ),
    click.option(
        "-g",
        "--group",
        "groups",
        multiple=True,
        metavar="GROUP",
        help="A group or lump of the cluster file (repeatable).",
    ),
    click.option(
        "-w",
        "--hosts",
        "lists",
        multiple=True,
        metavar="HOST,...",
        help="Hosts, comma-separated (repeatable); user@host and ssh config aliases work.",
    ),
    click.option(
        "--parallel",
        type=click.IntRange(min=1),
        metavar="N",
        default=32,
        show_default=True,
        help="Hosts contacted at once.",
    ),
    click.option("--timeout", type=float, metavar="S", help="Per-host time limit in seconds."),
    click.option(
        "--connect-timeout",
        type=float,
        default=10.0,
        show_default=True,
        metavar="S",
        help="ssh ConnectTimeout in seconds.",
    ),
]


def _with_target_options(func: _F) -> _F:
    for option in reversed(_TARGET_OPTIONS):
        func = cast(_F, option(func))
    return func


@click.command(
    "dsh",
    context_settings={"allow_interspersed_args": False},
)
@_with_target_options
@click.option(
    "--no-track",
    is_flag=True,
    help="The remote login shell is not POSIX (csh, fish): send CMD unchanged (exit 255 "
    "is then read from ssh's message, and a timeout cannot stop the remote command).",
)
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def dsh_cmd(
    ctx: click.Context,
    path: str | None,
    groups: tuple[str, ...],
    lists: tuple[str, ...],
    parallel: int,
    timeout: float | None,
    connect_timeout: float,
    no_track: bool,
    cmd: tuple[str, ...],
) -> int:
    """Run CMD on cluster hosts over ssh, in parallel; print output prefixed by host.

    One CMD argument is a remote shell command line ('df -h / | tail -1'); several are
    passed as exact words (no remote globbing or $expansion). Put -- before CMD.
    ssh options: ~/.ssh/config, or $UNIDIST_SSH_OPTIONS (e.g. "-F ./ssh_config").

    \b
    Examples:
      unidist dsh -g web -- uptime
      unidist dsh -w db1,db2 --timeout 30 -- 'systemctl is-active postgresql'
      unidist dsh -g web --json -- cat /etc/debian_version | jq -r '.[].stdout'

    \b
    Exit codes:
      0  every host ok
      4  CMD failed (non-zero exit) or timed out on at least one host
      5  no CMD failed, but at least one host was unreachable
    """
    obj: Context = ctx.obj
    _positive(timeout, "--timeout")
    _positive(connect_timeout, "--connect-timeout")
    hosts = _hosts(path, groups, lists)
    command: str | list[str] = cmd[0] if len(cmd) == 1 else list(cmd)
    err = sys.stderr
    display = None if obj.as_json else _Display(len(hosts), err.isatty(), err)
    try:
        results = remote.run(
            hosts,
            command,
            parallel=parallel,
            timeout=timeout,
            connect_timeout=connect_timeout,
            track=not no_track,
            cluster=_HOSTS_ONLY,
            on_output=display.line if display else None,
            on_result=display.result if display else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        if display is not None:
            display.close()
    if obj.as_json:
        echo_json([r.to_dict() for r in results.values()])
    click.echo(_summary("dsh", results), err=True)
    return _exit_code(results)


@click.command("pcp")
@_with_target_options
@click.option("--no-preserve", is_flag=True, help="Do not keep modes and times (scp without -p).")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.argument("remote_dir")
@click.pass_context
def pcp_cmd(
    ctx: click.Context,
    path: str | None,
    groups: tuple[str, ...],
    lists: tuple[str, ...],
    parallel: int,
    timeout: float | None,
    connect_timeout: float,
    no_preserve: bool,
    files: tuple[str, ...],
    remote_dir: str,
) -> int:
    """Copy FILES into REMOTE_DIR on cluster hosts with scp, in parallel.

    Directories are copied recursively; modes and times are kept. REMOTE_DIR must exist
    (relative to the remote home unless absolute) and hold no whitespace or shell
    metacharacters. Use -- before FILES whose names start with -.

    \b
    Examples:
      unidist pcp -g web app.conf /etc/app/
      unidist pcp -w db1,db2 --timeout 60 dump.sql backup/ /srv/restore

    \b
    Exit codes:
      0  copied to every host
      4  the copy failed or timed out on at least one host
      5  no copy failed, but at least one host was unreachable
    """
    obj: Context = ctx.obj
    _positive(timeout, "--timeout")
    _positive(connect_timeout, "--connect-timeout")
    hosts = _hosts(path, groups, lists)
    err = sys.stderr
    display = None if obj.as_json else _Display(len(hosts), err.isatty(), err)

    def report(res: Result) -> None:
        if display is None:
            return
        if not res.ok:
            for text in res.stderr.splitlines():
                display.line(res.host, "stderr", text)
        display.result(res)

    try:
        results = remote.copy(
            hosts,
            list(files),
            remote_dir,
            parallel=parallel,
            timeout=timeout,
            connect_timeout=connect_timeout,
            preserve=not no_preserve,
            cluster=_HOSTS_ONLY,
            on_result=report,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        if display is not None:
            display.close()
    if obj.as_json:
        echo_json([r.to_dict() for r in results.values()])
    click.echo(_summary("pcp", results), err=True)
    return _exit_code(results)
