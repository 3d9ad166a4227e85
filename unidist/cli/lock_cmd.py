"""``unidist lock run|list|break`` and ``unidist sem run``: cron-safe critical sections.

``lock run NAME -- CMD`` is ``flock(1)`` across processes or hosts: CMD runs only while the
lock is held, the lock is released when CMD ends (or unidist dies: a ``file://`` lock is freed
with its holder process; give ``--ttl`` so a Redis lock of a dead host expires), and a busy
lock exits 75 naming its holder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import click

from unidist._facade import HOST
from unidist.cli._common import (
    age,
    describe_owner,
    describe_owners,
    echo_json,
    fmt_seconds,
    fmt_time,
    table,
)
from unidist.cli._proc import SignalForwarder, run_child
from unidist.cli.main import EXIT_BUSY, EXIT_ERROR, EXIT_OK, Context
from unidist.codec import JSON
from unidist.errors import LockNotOwned
from unidist.lock import SharedLock, SharedSemaphore, _LockBase

_RUN_SETTINGS = {"help_option_names": ["-h", "--help"]}

_TIMEOUT_HELP = (
    "Seconds to wait for the lock; 0 = do not wait (skip if busy, the cron case). "
    "Default: wait as long as it takes."
)
_TTL_HELP = (
    "Lease seconds, renewed every TTL/3 while CMD runs; if this host or process dies the lock "
    "frees itself after at most TTL. Default: no lease (freed when unidist exits; on "
    "Redis a dead holder then needs 'unidist lock break')."
)


def acquire_or_report(obj: Context, lock: _LockBase, kind: str, timeout: float | None) -> bool:
    """Acquire ``lock`` (``timeout`` 0: one try; None: wait forever); on failure print who
    holds it (stderr, plus a JSON object on stdout with ``--json``) and return False."""
    got = lock.acquire(blocking=False) if timeout == 0 else lock.acquire(timeout=timeout)
    if got:
        return True
    owners = lock.owners()
    waited = "not waiting" if timeout == 0 else f"waited {timeout:g}s"
    click.echo(
        f"unidist: {kind} {lock.name!r} is busy ({waited}): held by {describe_owners(owners)}",
        err=True,
    )
    if obj.as_json:
        echo_json({"name": lock.name, "busy": True, "holders": owners})
    return False


def run_locked(
    obj: Context, lock: _LockBase, kind: str, timeout: float | None, cmd: Sequence[str]
) -> int:
    """Run ``cmd`` while holding ``lock``; return CMD's exit status or 75 when busy."""
    if not acquire_or_report(obj, lock, kind, timeout):
        return EXIT_BUSY
    try:
        with SignalForwarder() as fwd:
            env = {
                "UNIDIST_LOCK_NAME": lock.name,
                "UNIDIST_LOCK_TOKEN": str(lock.token),
            }
            result = run_child(cmd, fwd, env=env)
    finally:
        try:
            lock.release()
        except LockNotOwned:
            click.echo(
                f"unidist: warning: the lease of {kind} {lock.name!r} ended before CMD "
                "finished (another holder may have run meanwhile); use a longer --ttl",
                err=True,
            )
    return result.exit_code


def _lost(lock: _LockBase) -> None:
    click.echo(
        f"unidist: warning: lost the lease of {lock.name!r} while CMD runs "
        "(renewal failed: backend unreachable too long, or the lock was broken)",
        err=True,
    )


def _check_cmd(cmd: tuple[str, ...]) -> None:
    if not cmd:
        raise click.UsageError("missing CMD: give the command after --, e.g. -- /usr/bin/backup")


@click.group("lock")
def lock_group() -> None:
    """Shared locks: run a command under a lock, list holders, break a dead holder's lock."""


@lock_group.command("run", context_settings=_RUN_SETTINGS)
@click.argument("name")
@click.option("--timeout", "-w", type=click.FloatRange(min=0), default=None, help=_TIMEOUT_HELP)
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=None, help=_TTL_HELP)
@click.argument("cmd", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
@click.pass_obj
def lock_run(
    obj: Context, name: str, timeout: float | None, ttl: float | None, cmd: tuple[str, ...]
) -> int:
    """Run CMD while holding lock NAME, then release it; exit with CMD's exit code.

    If the lock is not acquired within --timeout, nothing runs and the exit code is 75,
    with the holder named on stderr. SIGINT, SIGTERM and SIGHUP are forwarded to CMD and
    the lock is released when it ends. CMD runs without a shell and gets
    UNIDIST_LOCK_NAME and UNIDIST_LOCK_TOKEN (the fencing token) in its environment.

    \b
    Examples:
      # cron: skip this run if the previous one is still going
      unidist lock run backup --timeout 0 -- /usr/local/bin/backup --full
      # across hosts, with a lease that outlives no crash by more than a minute
      unidist --url redis://db1:6379/0 lock run deploy --ttl 60 -- ./deploy.sh
    """
    _check_cmd(cmd)
    be = obj.backend()
    lock = SharedLock(name, backend=be, ttl=ttl, auto_renew=ttl is not None, on_lost=_lost)
    return run_locked(obj, lock, "lock", timeout, cmd)


def _owner_rows(locks: dict[str, list[dict[str, JSON]]]) -> list[dict[str, JSON]]:
    rows: list[dict[str, JSON]] = []
    for name in sorted(locks):
        holders = locks[name]
        for owner in holders:
            row: dict[str, JSON] = {"name": name, "holders": len(holders)}
            row.update(owner)
            row["age"] = age(owner.get("acquired_at"))
            rows.append(row)
    return rows


@lock_group.command("list")
@click.option("--name", "only", multiple=True, help="Only this lock name (repeatable).")
@click.pass_obj
def lock_list(obj: Context, only: tuple[str, ...]) -> int:
    """Show held locks and semaphores: one line per holder, with host, pid, age and lease.

    With --json: a JSON array of holder records (name, holders, host, pid, thread,
    acquired_at, expires_at, token, holder, age).
    """
    locks = obj.backend().locks()
    if only:
        locks = {k: v for k, v in locks.items() if k in set(only)}
    rows = _owner_rows(locks)
    if obj.as_json:
        echo_json(rows)
        return EXIT_OK
    if not rows:
        click.echo("no lock or semaphore is held")
        return EXIT_OK
    click.echo(
        table(
            ["NAME", "HOLDERS", "HOST", "PID", "THREAD", "SINCE", "AGE", "LEASE", "TOKEN"],
            [
                [
                    r["name"],
                    r["holders"],
                    r.get("host"),
                    r.get("pid"),
                    r.get("thread"),
                    fmt_time(r.get("acquired_at")),
                    fmt_seconds(r["age"] if isinstance(r["age"], float) else None),
                    _lease(r.get("expires_at")),
                    r.get("token"),
                ]
                for r in rows
            ],
        )
    )
    return EXIT_OK


def _lease(expires_at: JSON) -> str:
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
        return "none"
    return fmt_seconds(max(0.0, float(expires_at) - time.time()))


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host (even if owned by another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_local(owners: list[dict[str, JSON]]) -> list[dict[str, JSON]]:
    live = []
    for owner in owners:
        pid = owner.get("pid")
        if owner.get("host") != HOST or isinstance(pid, bool) or not isinstance(pid, int):
            continue
        if pid == os.getpid() or pid_alive(pid):
            live.append(owner)
    return live


@lock_group.command("break")
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Break it even if a holder is alive on this host (dangerous)."
)
@click.pass_obj
def lock_break(obj: Context, name: str, force: bool) -> int:
    """Free lock (or semaphore) NAME whose holder is known to be dead.

    Refuses, with exit code 1, when a holder runs on this host and its process is alive:
    stop that process instead. A holder on another host cannot be checked from here; make
    sure it is really gone before breaking its lock.
    """
    be = obj.backend()
    SharedLock(name, backend=be)  # validates the name before any I/O
    owners = be.lock_owners(name)
    if not owners:
        if obj.as_json:
            echo_json({"name": name, "broken": 0, "holders": []})
        else:
            click.echo(f"lock {name!r} is not held; nothing to break")
        return EXIT_OK
    live = _live_local(owners)
    if live and not force:
        who = "; ".join(describe_owner(o) for o in live)
        click.echo(
            f"unidist: error: refusing to break {name!r}: its holder is alive on this host "
            f"({who}); stop that process instead (or use --force)",
            err=True,
        )
        return EXIT_ERROR
    freed = be.lock_break(name)
    if obj.as_json:
        echo_json({"name": name, "broken": freed, "holders": owners})
    else:
        click.echo(f"broke {name!r}: freed {freed} slot(s) held by {describe_owners(owners)}")
    return EXIT_OK


@click.group("sem")
def sem_group() -> None:
    """Shared semaphores: run a command in one of N slots."""


@sem_group.command("run", context_settings=_RUN_SETTINGS)
@click.argument("name")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    required=True,
    help="Number of slots; every user of NAME must give the same limit.",
)
@click.option("--timeout", "-w", type=click.FloatRange(min=0), default=None, help=_TIMEOUT_HELP)
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=None, help=_TTL_HELP)
@click.argument("cmd", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
@click.pass_obj
def sem_run(
    obj: Context,
    name: str,
    limit: int,
    timeout: float | None,
    ttl: float | None,
    cmd: tuple[str, ...],
) -> int:
    """Run CMD in one of --limit slots of semaphore NAME; exit with CMD's exit code.

    Like 'lock run': exit 75 naming the holders when no slot frees within --timeout,
    signals forwarded to CMD, the slot released when CMD ends.

    \b
    Example: at most 3 database dumps at once, fleet-wide
      unidist --url redis://db1:6379/0 sem run db-dumps --limit 3 -- pg_dump -f out.sql app
    """
    _check_cmd(cmd)
    be = obj.backend()
    sem = SharedSemaphore(
        name, limit, backend=be, ttl=ttl, auto_renew=ttl is not None, on_lost=_lost
    )
    return run_locked(obj, sem, "semaphore", timeout, cmd)


__all__ = ["acquire_or_report", "lock_group", "pid_alive", "run_locked", "sem_group"]
