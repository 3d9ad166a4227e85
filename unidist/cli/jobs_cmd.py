"""``unidist jobs run|status|forget``: a batch of jobs over cluster hosts.

``jobs run FILE`` reads one job per line (a shell command line, or a JSON object
``{"argv": [...], "name": ..., "files": [...]}``), runs them over the hosts of ``-g GROUP``,
``-w host1,host2`` or the whole cluster file, at most ``--slots`` at a time per host, and
prints a table of the jobs and hosts. The batch lives on the backend (``--url``): running
the same command again resumes it without re-running finished jobs. Exit code 0 when every
job exited 0, 1 otherwise.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from unidist.cli._common import age, echo_json, fmt_seconds, fmt_time, table
from unidist.cli.main import EXIT_ERROR, EXIT_OK, Context

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._\-:@]+")


def _batch_from_file(path: str) -> str:
    stem = Path(path).stem if path != "-" else "stdin"
    name = _NOT_IN_NAME.sub("-", stem).lstrip(".-") or "jobs"
    return name[:190]


class _Progress:
    """A one-line progress bar on a terminal (stderr), redrawn on every event."""

    def __init__(self, stream: TextIO, total: int, done: int, failed: int) -> None:
        self.stream = stream
        self.total = total
        self.done = done
        self.failed = failed
        self.running: set[str] = set()
        self.hosts: dict[str, str] = {}
        self.start = time.monotonic()

    def event(self, ev: Any) -> None:
        if ev.kind in {"launch", "adopt"}:
            self.running.add(ev.job)
        elif ev.kind in ("done", "failed"):
            self.running.discard(ev.job)
            if ev.kind == "done":
                self.done += 1
            else:
                self.failed += 1
        elif ev.kind == "retry":
            self.running.discard(ev.job)
        elif ev.kind == "host" and ev.host is not None and ev.host_state is not None:
            self.hosts[ev.host] = ev.host_state
        self.draw()

    def draw(self) -> None:
        width = 30
        finished = self.done + self.failed
        filled = width * finished // max(1, self.total)
        bar = "#" * filled + "-" * (width - filled)
        errors = sum(1 for s in self.hosts.values() if s == "error")
        text = (
            f"[{bar}] {finished}/{self.total}  {self.done} done, {self.failed} failed, "
            f"{len(self.running)} running"
            + (f", {errors} host(s) in error" if errors else "")
            + f"  {fmt_seconds(time.monotonic() - self.start)}"
        )
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def _show(obj: Context, status: Any, out_json: bool) -> None:
    if out_json:
        echo_json(status.to_json())
        return
    rows = []
    for rec in status.jobs.values():
        exit_code = rec.get("exit_code")
        rows.append(
            [
                rec.get("name"),
                rec.get("state"),
                rec.get("host") or "-",
                "-" if exit_code is None else exit_code,
                rec.get("attempts", 0),
                fmt_seconds(rec.get("duration")),
                rec.get("error") or "",
            ]
        )
    click.echo(table(["JOB", "STATE", "HOST", "EXIT", "TRIES", "TIME", "ERROR"], rows))
    if status.hosts:
        click.echo("")
        hrows = [
            [h, r.get("state"), r.get("done", 0), r.get("failed", 0), r.get("error") or ""]
            for h, r in sorted(status.hosts.items())
        ]
        click.echo(table(["HOST", "STATE", "DONE", "FAILED", "ERROR"], hrows))
    if status.managers:
        click.echo("")
        mrows = [
            [mid, "alive" if m.get("alive") else "silent", fmt_seconds(age(m.get("heartbeat")))]
            for mid, m in sorted(status.managers.items())
        ]
        click.echo(table(["MANAGER", "STATE", "LAST HEARTBEAT"], mrows))
    c = status.counts
    click.echo(
        f"\nbatch {status.batch}: {len(status.jobs)} jobs, {c['done']} done, "
        f"{c['failed']} failed, {c['running']} running, {c['pending']} pending"
        + (f"; results in {status.results_dir}" if status.results_dir else "")
    )
    if c["pending"] and not c["running"] and not status.managers:
        click.echo(
            f"{c['pending']} job(s) still pending: no usable host was left; run the batch "
            "again to resume it"
        )
    orphaned = status.orphaned
    if orphaned:
        click.echo(
            f"{len(orphaned)} running job(s) have no live manager; run the batch again "
            "(unidist jobs run ... with the same --batch) to resume it"
        )


@click.group("jobs")
def jobs_group() -> None:
    """Run a batch of jobs over cluster hosts, resumably.

    \b
    Examples:
      unidist jobs run sims.txt -g compute --slots 2 --results /srv/results/sims
      unidist jobs run jobs.jsonl -w node1,node2 --batch nightly --json
      unidist jobs status                  # every batch
      unidist jobs status --batch sims     # one batch: jobs and hosts
      unidist jobs forget sims             # delete a batch's records (results stay)
    """


@jobs_group.command("run")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-g",
    "--group",
    "groups",
    multiple=True,
    metavar="GROUP",
    help="A group or lump of the cluster file (repeatable).",
)
@click.option(
    "-w",
    "--hosts",
    "lists",
    multiple=True,
    metavar="HOST,...",
    help="Hosts, comma-separated (repeatable); user@host and ssh config aliases work.",
)
@click.option(
    "--file",
    "--cluster",
    "cluster_file",
    type=click.Path(dir_okay=False),
    envvar="CLUSTER",
    help="Cluster file (GROUP:/LUMP: format). Default: $CLUSTER.",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs at the same time per host.",
)
@click.option(
    "--results",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Results directory (default: the batch's, else ./unidist-results/BATCH).",
)
@click.option("--batch", metavar="NAME", help="Batch name (default: FILE's name without suffix).")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries of a job whose host could not be reached.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Kill a job after S seconds (it fails with 'timeout').",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10,
    show_default=True,
    metavar="S",
    help="ssh ConnectTimeout.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@click.pass_obj
def run_cmd(
    obj: Context,
    file: str,
    groups: tuple[str, ...],
    lists: tuple[str, ...],
    cluster_file: str | None,
    slots: int,
    results: str | None,
    batch: str | None,
    retries: int,
    timeout: float | None,
    connect_timeout: float,
    progress: bool | None,
) -> int:
    """Run the jobs of FILE (one per line; '-' reads stdin) over hosts.

    Hosts: -g GROUP and -w HOST,... (both repeatable); neither means every host of the
    cluster file. At most --slots jobs run at once on a host.

    A line is a shell command line, or JSON: {"argv": [...], "name": "...", "files": [...],
    "repeat": N}. Blank lines and '#' comments are skipped. Running the same batch again
    resumes it: finished jobs are not run again. Exit code 0 when every job exited 0.
    """
    import os

    import unidist.log
    from unidist.cli.dsh_cmd import _hosts
    from unidist.cluster.jobs import JobManager, parse_jobs

    targets = _hosts(cluster_file, groups, lists)
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    try:
        specs = parse_jobs(text, source="<stdin>" if file == "-" else file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not specs:
        raise click.ClickException(f"{file}: no jobs")
    show = (not obj.as_json and sys.stderr.isatty()) if progress is None else progress
    bar: _Progress | None = None
    console = None if os.environ.get("UNIDIST_LOG_CONSOLE") else "off"
    try:
        unidist.log.setup(console=console, stdlib=False)
    except ValueError as exc:
        click.echo(f"unidist: warning: logging not configured: {exc}", err=True)
    try:
        manager = JobManager(
            targets,
            backend=obj.backend(),
            batch=batch or _batch_from_file(file),
            slots=slots,
            results_dir=results,
            max_retries=retries,
            timeout=timeout,
            connect_timeout=connect_timeout,
            on_event=lambda ev: bar.event(ev) if bar is not None else None,
        )
        manager.submit(specs)
        if show:
            counts = manager.status().counts
            total = sum(counts.values())
            bar = _Progress(sys.stderr, total, counts["done"], counts["failed"])
            bar.draw()
        try:
            status = manager.run()
        finally:
            if bar is not None:
                bar.close()
    finally:
        unidist.log.reset()
    _show(obj, status, obj.as_json)
    return EXIT_OK if status.ok else EXIT_ERROR


@jobs_group.command("status")
@click.option("--batch", metavar="NAME", help="Show this batch's jobs and hosts.")
@click.pass_obj
def status_cmd(obj: Context, batch: str | None) -> int:
    """Show every batch (jobs per state), or one batch's jobs and hosts."""
    from unidist.cluster.jobs import batch_status, list_batches

    be = obj.backend()
    if batch is not None:
        try:
            status = batch_status(batch, be)
        except KeyError:
            click.echo(f"unidist: error: no batch named {batch!r}", err=True)
            return EXIT_ERROR
        _show(obj, status, obj.as_json)
        return EXIT_OK
    found = []
    for name in list_batches(be):
        try:
            st = batch_status(name, be)
        except KeyError:
            continue
        found.append((st, st.created))
    if obj.as_json:
        echo_json(
            [
                {
                    "batch": st.batch,
                    "jobs": len(st.jobs),
                    "counts": st.counts,
                    "results_dir": st.results_dir,
                    "finished": st.finished,
                }
                for st, _ in found
            ]
        )
        return EXIT_OK
    if not found:
        click.echo("no batches")
        return EXIT_OK
    rows = []
    for st, created in found:
        c = st.counts
        rows.append(
            [
                st.batch,
                len(st.jobs),
                c["done"],
                c["failed"],
                c["running"],
                c["pending"],
                fmt_time(created),
            ]
        )
    click.echo(table(["BATCH", "JOBS", "DONE", "FAILED", "RUNNING", "PENDING", "CREATED"], rows))
    return EXIT_OK


@jobs_group.command("forget")
@click.argument("batch")
@click.option("--force", is_flag=True, help="Also when jobs are recorded as running.")
@click.pass_obj
def forget_cmd(obj: Context, batch: str, force: bool) -> int:
    """Delete BATCH's records from the backend (its results directory stays)."""
    from unidist.cluster.jobs import batch_status, forget_batch

    be = obj.backend()
    try:
        st = batch_status(batch, be)
    except KeyError:
        click.echo(f"unidist: error: no batch named {batch!r}", err=True)
        return EXIT_ERROR
    if st.counts["running"] and not force:
        click.echo(
            f"unidist: error: batch {batch!r} has running jobs (--force to forget it)", err=True
        )
        return EXIT_ERROR
    forget_batch(batch, be)
    if obj.as_json:
        echo_json({"batch": batch, "forgotten": True})
    else:
        click.echo(f"forgot batch {batch} ({len(st.jobs)} jobs)")
    return EXIT_OK
