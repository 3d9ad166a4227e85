"""``unidist run`` and ``unidist runs``: run a command and keep a shared record of its runs.

Each run is stored in the ``runs`` state bucket (one key per run; the oldest runs of a name
beyond ``--keep`` are dropped) as a record with exactly these keys: ``name``, ``host``,
``pid`` (CMD's), ``argv``, ``start``, ``end`` (Unix seconds; ``end`` is null while it runs),
``duration`` (seconds), ``exit_code`` (null while it runs), ``stdout_tail`` and
``stderr_tail`` (the last 4 KiB of each, decoded as UTF-8). The run is also logged to the
``run`` track of :mod:`unidist.log` (events ``run_started``, ``run_finished``, ``run_busy``).
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

import click

import unidist.log
from unidist._facade import HOST
from unidist._names import check_name
from unidist.cli._common import echo_json, fmt_seconds, fmt_time, table
from unidist.cli._proc import SignalForwarder, run_child
from unidist.cli.lock_cmd import acquire_or_report
from unidist.cli.main import EXIT_BUSY, EXIT_OK, Context
from unidist.codec import JSON
from unidist.errors import LockNotOwned, UnidistError
from unidist.lock import SharedLock
from unidist.state import SharedState

RUNS_BUCKET: Final = "runs"
RUN_TRACK: Final = "run"
TAIL_BYTES: Final = 4096
RECORD_KEYS: Final = (
    "name",
    "host",
    "pid",
    "argv",
    "start",
    "end",
    "duration",
    "exit_code",
    "stdout_tail",
    "stderr_tail",
)
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._\-:@]")


def _default_name(argv0: str) -> str:
    base = _UNSAFE.sub("_", os.path.basename(argv0)).lstrip(".")[:200]
    return base or "run"


def _text_tail(data: bytes) -> str:
    """The tail as text; a UTF-8 sequence cut at the start is dropped, not garbled."""
    start = 0
    while start < len(data) and start < 4 and (data[start] & 0xC0) == 0x80:
        start += 1
    return data[start:].decode("utf-8", "replace")


@contextmanager
def _run_logging() -> Iterator[unidist.log.TrackLogger]:
    """The ``run`` track, writing to files only: CMD's stderr stays CMD's (unless the user
    asked for console logging with ``UNIDIST_LOG_CONSOLE``)."""
    console = None if os.environ.get("UNIDIST_LOG_CONSOLE") else "off"
    try:
        unidist.log.setup(console=console, stdlib=False)
    except ValueError as exc:
        click.echo(f"unidist: warning: logging not configured: {exc}", err=True)
    try:
        yield unidist.log.get_logger(track=RUN_TRACK)
    finally:
        unidist.log.reset()


def _warn(what: str, exc: Exception) -> None:
    click.echo(f"unidist: warning: could not {what}: {exc}", err=True)


class _Recorder:
    """Writes the run record at start and at the end; a failing backend only warns (CMD's
    exit code matters more than the record)."""

    def __init__(self, runs: SharedState, name: str, argv: Sequence[str], keep: int) -> None:
        self.runs = runs
        self.keep = keep
        self.start = time.time()
        self.key = f"{name} {self.start:.6f} {HOST} {os.getpid()}"
        self.record: dict[str, JSON] = {
            "name": name,
            "host": HOST,
            "pid": None,
            "argv": list(argv),
            "start": self.start,
            "end": None,
            "duration": None,
            "exit_code": None,
            "stdout_tail": "",
            "stderr_tail": "",
        }

    def started(self, pid: int) -> None:
        self.record["pid"] = pid
        try:
            self.runs[self.key] = self.record
        except (UnidistError, OSError) as exc:
            _warn("record the run start", exc)

    def finished(self, exit_code: int, stdout: bytes, stderr: bytes, pid: int | None) -> None:
        end = time.time()
        self.record.update(
            pid=pid,
            end=end,
            duration=round(end - self.start, 6),
            exit_code=exit_code,
            stdout_tail=_text_tail(stdout),
            stderr_tail=_text_tail(stderr),
        )
        try:
            self.runs[self.key] = self.record
            self._prune()
        except (UnidistError, OSError) as exc:
            _warn("record the run", exc)

    def _prune(self) -> None:
        name = self.record["name"]
        mine = sorted(
            (_num(rec.get("start")), key)
            for key, rec in self.runs.items()
            if isinstance(rec, dict) and rec.get("name") == name
        )
        for _, key in mine[: max(0, len(mine) - self.keep)]:
            self.runs.pop(key, None)


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--name", "-n", help="Name of the job in the records (default: CMD's basename).")
@click.option("--lock", "lock_name", metavar="LOCK", help="Hold shared lock LOCK while CMD runs.")
@click.option(
    "--timeout",
    "-w",
    type=click.FloatRange(min=0),
    default=None,
    help="With --lock: seconds to wait for it (0: skip if busy, exit 75). Default: wait.",
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --lock: lease seconds, renewed while CMD runs.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Records kept per name (older ones are dropped).",
)
@click.argument("cmd", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
@click.pass_obj
def run_cmd(
    obj: Context,
    name: str | None,
    lock_name: str | None,
    timeout: float | None,
    ttl: float | None,
    keep: int,
    cmd: tuple[str, ...],
) -> int:
    """Run CMD (no shell), record the run, and exit with CMD's exit code.

    CMD's output passes through unchanged; the record (see 'unidist runs') keeps host,
    pid, argv, start, end, duration, exit code and the last 4 KiB of stdout and stderr.
    The run is logged to the 'run' log track. With --lock, CMD runs only while holding
    that lock (busy: nothing runs, exit 75). Signals are forwarded to CMD.

    \b
    Examples:
      unidist run --name nightly-backup -- /usr/local/bin/backup --full
      unidist run --lock backup --timeout 0 -- /usr/local/bin/backup   # cron-safe
      unidist runs --name nightly-backup --last 5
    """
    if not cmd:
        raise click.UsageError("missing CMD: give the command after --")
    job = check_name(name, "run name") if name is not None else _default_name(cmd[0])
    be = obj.backend()
    runs = SharedState(RUNS_BUCKET, backend=be)
    lock = None
    if lock_name is not None:
        lock = SharedLock(lock_name, backend=be, ttl=ttl, auto_renew=ttl is not None)
    with _run_logging() as log:
        if lock is not None and not acquire_or_report(obj, lock, "lock", timeout):
            log.warning("run_busy", name=job, lock=lock.name, argv=list(cmd))
            return EXIT_BUSY
        try:
            rec = _Recorder(runs, job, cmd, keep)
            log.info("run_started", name=job, argv=list(cmd))
            with SignalForwarder() as fwd:
                result = run_child(cmd, fwd, tee_tail=TAIL_BYTES, on_start=rec.started)
            stderr_tail = result.stderr_tail
            if result.error is not None:
                stderr_tail = f"unidist: {result.error}\n".encode()
            rec.finished(result.exit_code, result.stdout_tail, stderr_tail, result.pid)
            level = "info" if result.exit_code == 0 else "error"
            log.log(
                level,
                "run_finished",
                name=job,
                argv=list(cmd),
                child_pid=result.pid,
                exit_code=result.exit_code,
                duration=rec.record["duration"],
            )
        finally:
            if lock is not None:
                try:
                    lock.release()
                except LockNotOwned:
                    click.echo(
                        f"unidist: warning: the lease of lock {lock.name!r} ended before "
                        "CMD finished; use a longer --ttl",
                        err=True,
                    )
    return result.exit_code


@click.command("runs")
@click.option("--name", "-n", help="Only runs of this name.")
@click.option(
    "--last", "-l", type=click.IntRange(min=1), default=20, show_default=True, help="How many."
)
@click.pass_obj
def runs_cmd(obj: Context, name: str | None, last: int) -> int:
    """List recorded runs (from 'unidist run'), oldest first, the most recent N.

    --json prints an array of records with the keys name, host, pid, argv, start, end,
    duration, exit_code, stdout_tail, stderr_tail (end and exit_code are null while a
    run is still going).
    """
    snap = SharedState(RUNS_BUCKET, backend=obj.backend()).snapshot()
    records = [
        {k: rec.get(k) for k in RECORD_KEYS}
        for rec in snap.values()
        if isinstance(rec, dict) and (name is None or rec.get("name") == name)
    ]
    records.sort(key=lambda r: (_num(r["start"]), str(r["name"])))
    records = records[-last:]
    if obj.as_json:
        echo_json(records)
        return EXIT_OK
    if not records:
        click.echo("no runs recorded" + (f" for {name!r}" if name else ""))
        return EXIT_OK
    rows = []
    for r in records:
        code = r["exit_code"]
        argv = r["argv"] if isinstance(r["argv"], list) else []
        line = shlex.join(str(a) for a in argv)
        rows.append(
            [
                fmt_time(r["start"]),
                r["name"],
                r["host"],
                r["pid"],
                "running" if code is None else code,
                fmt_seconds(_num(r["duration"]) if r["duration"] is not None else None),
                line if len(line) <= 60 else line[:57] + "...",
            ]
        )
    click.echo(table(["START", "NAME", "HOST", "PID", "EXIT", "DURATION", "COMMAND"], rows))
    return EXIT_OK


def _num(value: JSON) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


__all__ = ["RECORD_KEYS", "RUNS_BUCKET", "run_cmd", "runs_cmd"]
