"""``unidist backend check``: which backend is in use, and is it healthy and fast."""

from __future__ import annotations

import os
import statistics
import time
import uuid

import click

from unidist import __version__
from unidist._facade import HOST
from unidist.cli._common import echo_json
from unidist.cli.main import EXIT_ERROR, EXIT_OK, Context
from unidist.state import SharedState

CHECK_BUCKET = "unidist-check"


@click.group("backend")
def backend_group() -> None:
    """Inspect the backend chosen by --url / $UNIDIST_URL."""


@backend_group.command("check")
@click.option(
    "--rounds",
    type=click.IntRange(min=1, max=1000),
    default=5,
    show_default=True,
    help="Round trips to time.",
)
@click.pass_obj
def backend_check(obj: Context, rounds: int) -> int:
    """Check that the backend works: connect, ping, then write, read back and delete a
    key in the 'unidist-check' bucket; print the backend, its URL (password hidden), the
    unidist version and the median round-trip latencies.

    Exit 0 when healthy, 69 when the backend is unreachable, 1 on any other failure.
    """
    be = obj.backend()
    t0 = time.perf_counter()
    be.ping()
    connect_ms = (time.perf_counter() - t0) * 1000
    pings = []
    for _ in range(rounds):
        t = time.perf_counter()
        be.ping()
        pings.append((time.perf_counter() - t) * 1000)
    bucket = SharedState(CHECK_BUCKET, backend=be)
    key = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    trips = []
    try:
        for i in range(rounds):
            t = time.perf_counter()
            bucket[key] = i
            got = bucket[key]
            trips.append((time.perf_counter() - t) * 1000)
            if got != i:
                raise click.ClickException(f"read back {got!r} after writing {i!r}")
    finally:
        bucket.pop(key, None)
    info = {
        "backend": type(be).__name__,
        "scheme": be.url.partition("://")[0],
        "url": be.url,
        "scope": be.scope,
        "version": __version__,
        "first_ping_ms": round(connect_ms, 3),
        "ping_ms": round(statistics.median(pings), 3),
        "roundtrip_ms": round(statistics.median(trips), 3),
        "ok": True,
    }
    if obj.as_json:
        echo_json(info)
    else:
        click.echo(f"backend    {info['backend']} ({info['scheme']}://, shared by one {be.scope})")
        click.echo(f"url        {be.url}")
        click.echo(f"version    unidist {__version__}")
        click.echo(
            f"ping       {info['ping_ms']} ms (median of {rounds}; "
            f"first {info['first_ping_ms']} ms)"
        )
        click.echo(f"roundtrip  {info['roundtrip_ms']} ms (write + read of one state key)")
        click.echo("ok")
    return EXIT_OK


@backend_group.command("repair")
@click.option("--dry-run", is_flag=True, help="Only report what would be quarantined.")
@click.pass_obj
def backend_repair(obj: Context, dry_run: bool) -> int:
    """Quarantine damaged records of a file:// store and keep the rest.

    Bad journal records of every object go to a quarantine.*.jsonl file in the object's
    directory; the journal keeps the remaining records. Exit 0 when nothing is left
    unrepairable, 1 otherwise.
    """
    from unidist.backends.file import FileBackend

    be = obj.backend()
    if not isinstance(be, FileBackend):
        raise click.ClickException(f"repair works on file:// stores; {be.url} is not one")
    reports = be.repair(dry_run=dry_run)
    if obj.as_json:
        echo_json({"dry_run": dry_run, "objects": [r.as_dict() for r in reports]})
    else:
        for r in reports:
            if r.error:
                click.echo(f"{r.path}: cannot repair: {r.error}")
            else:
                verb = "would quarantine" if dry_run else "quarantined"
                where = f" -> {r.quarantine_file}" if r.quarantine_file else ""
                click.echo(
                    f"{r.path}: {verb} {r.quarantined} item(s), {r.bytes_quarantined} bytes; "
                    f"kept {r.kept} record(s){where}"
                )
        if not reports:
            click.echo("nothing to repair")
    return EXIT_ERROR if any(r.error for r in reports) else EXIT_OK


__all__ = ["backend_group"]
