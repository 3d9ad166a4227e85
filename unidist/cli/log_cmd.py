"""``unidist log``: ship track files to the central store, collect them, tail them.

* ``unidist --url redis://… log ship [--follow]`` sends this host's track files to Redis
  streams (at least once; the store drops duplicates), resuming from its state file.
* ``unidist --url redis://… log collect --to DIR [--follow]`` files central records per
  host/track/day.
* ``unidist log tail [-f] [--track T] [--host H] [--level L] [--since T] [--grep RE] [--json]``
  reads local track files, or the central store when the URL is ``redis://`` (``--local``
  and ``--central`` choose explicitly).
"""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from unidist.cli.main import EXIT_OK, Context

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(obj: Context) -> str:
    if not obj.url.startswith(_REDIS_SCHEMES):
        raise click.UsageError(
            "the central log store is Redis: give --url redis://host:6379/0 (or set UNIDIST_URL)"
        )
    return obj.url


@contextmanager
def _stoppable() -> Iterator[threading.Event]:
    """An event set by SIGTERM or Ctrl-C, so follow loops end cleanly (state saved)."""
    stop = threading.Event()

    def _handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {
        sig: signal.signal(sig, _handler)
        for sig in (signal.SIGTERM, signal.SIGINT)
        if threading.current_thread() is threading.main_thread()
    }
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _report(obj: Context, as_json: bool, data: dict[str, Any], text: str) -> None:
    if obj.as_json or as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        click.echo(text)


@click.group("log")
def log_group() -> None:
    """Structured logs: ship track files to Redis, collect them, tail them."""


@log_group.command("ship")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="Log directory.")
@click.option("--state", type=click.Path(path_type=Path), help="State file.")
@click.option("--host", help="Host name in record ids (default: this host).")
@click.option("--track", "tracks", multiple=True, help="Only this track (repeatable).")
@click.option("--follow", "-f", is_flag=True, help="Keep shipping new records.")
@click.option("--batch", default=5000, show_default=True, help="Records per batch.")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between polls.")
@click.option("--maxlen", default=1_000_000, show_default=True, help="Stream length cap.")
@click.option("--max-age", type=float, default=None, help="Trim entries older than S seconds.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def ship_cmd(
    obj: Context,
    directory: Path | None,
    state: Path | None,
    host: str | None,
    tracks: tuple[str, ...],
    follow: bool,
    batch: int,
    interval: float,
    maxlen: int,
    max_age: float | None,
    as_json: bool,
) -> int:
    """Send this host's track files to the central store (once, or --follow)."""
    from unidist.log.shipper import ship

    url = _redis_url(obj)
    with _stoppable() as stop:
        try:
            stats = ship(
                url,
                dir=directory,
                state=state,
                host=host,
                tracks=list(tracks) or None,
                follow=follow,
                batch=batch,
                interval=interval,
                maxlen=maxlen,
                max_age=max_age,
                stop=stop,
            )
        except OSError as exc:
            raise click.ClickException(str(exc)) from exc
    _report(
        obj,
        as_json,
        asdict(stats),
        f"shipped {stats.records} records ({stats.stored} new) from {stats.files} files "
        f"in {stats.batches} batches",
    )
    return EXIT_OK


@log_group.command("collect")
@click.option("--to", "to", required=True, type=click.Path(path_type=Path), help="Directory.")
@click.option("--track", "tracks", multiple=True, help="Only this track (repeatable).")
@click.option("--follow", "-f", is_flag=True, help="Keep collecting new records.")
@click.option("--batch", default=5000, show_default=True, help="Records per batch (about).")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between polls.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def collect_cmd(
    obj: Context,
    to: Path,
    tracks: tuple[str, ...],
    follow: bool,
    batch: int,
    interval: float,
    as_json: bool,
) -> int:
    """File central records under DIR/<host>/<track>/<YYYY-MM-DD>.log."""
    from unidist.log.collect import collect

    url = _redis_url(obj)
    with _stoppable() as stop:
        try:
            stats = collect(
                url,
                to,
                tracks=list(tracks) or None,
                follow=follow,
                batch=batch,
                interval=interval,
                stop=stop,
            )
        except OSError as exc:
            raise click.ClickException(str(exc)) from exc
    _report(
        obj,
        as_json,
        asdict(stats),
        f"collected {stats.records} records into {stats.files} files",
    )
    return EXIT_OK


@log_group.command("tail")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records.")
@click.option("--track", "-t", "tracks", multiple=True, help="Only this track (repeatable).")
@click.option("--host", "hosts", multiple=True, help="Only this host (repeatable).")
@click.option("--level", "-l", help="Minimum level (debug, info, warning, error, critical).")
@click.option("--since", help="Only records since: 10m, 2h, 1d, or an ISO-8601 time.")
@click.option("--grep", help="Only records whose JSON line matches this regular expression.")
@click.option("--lines", "-n", default=10, show_default=True, help="Records shown first.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="Local log directory.")
@click.option("--local", "source", flag_value="local", help="Read local track files.")
@click.option("--central", "source", flag_value="central", help="Read the central store.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON records.")
@click.pass_obj
def tail_cmd(
    obj: Context,
    follow: bool,
    tracks: tuple[str, ...],
    hosts: tuple[str, ...],
    level: str | None,
    since: str | None,
    grep: str | None,
    lines: int,
    directory: Path | None,
    source: str | None,
    as_json: bool,
) -> int:
    """Show recent records, locally or from the central store (default: central when the
    URL is redis://, else local files)."""
    from unidist.log._config import build_config, parse_level
    from unidist.log.tail import Filter, format_human, parse_since, tail_central, tail_local

    try:
        flt = Filter(
            tracks=set(tracks) or None,
            hosts=set(hosts) or None,
            level=parse_level(level) if level else None,
            since=parse_since(since) if since else None,
            grep=re.compile(grep.encode()) if grep else None,
        )
    except (ValueError, re.error) as exc:
        raise click.BadParameter(str(exc)) from exc
    raw_out = obj.as_json or as_json

    def emit(rec: dict[str, Any], raw: bytes) -> None:
        click.echo(raw.decode("utf-8", "replace") if raw_out else format_human(rec))

    if source is None:
        central = directory is None and obj.url.startswith(_REDIS_SCHEMES)
    else:
        central = source == "central"
    with _stoppable() as stop:
        try:
            if central:
                from unidist.log._store import RedisStore

                store = RedisStore(_redis_url(obj))
                try:
                    tail_central(store, flt, lines, emit, follow, stop)
                finally:
                    store.close()
            else:
                log_dir = directory if directory is not None else build_config().dir
                tail_local(log_dir, flt, lines, emit, follow, stop)
        except BrokenPipeError:
            return EXIT_OK
        except OSError as exc:
            raise click.ClickException(str(exc)) from exc
    return EXIT_OK


__all__ = ["log_group"]
