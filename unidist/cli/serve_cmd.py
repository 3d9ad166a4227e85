"""``unidist serve``: run one server of a published service (see :mod:`unidist.cluster.grid`).

``Grid.publish`` starts this command once per server, locally or over ssh, with
``--detach``; it can also run in the foreground (under systemd, for debugging).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

import click

from unidist.cli.main import Context


def _error_report(exc: BaseException) -> dict[str, Any]:
    from unidist.cluster._grid_server import error_fields
    from unidist.errors import RemoteError

    if isinstance(exc, RemoteError):
        return {
            "error": {
                "type": exc.type_name,
                "message": str(exc),
                "traceback": exc.remote_traceback,
            }
        }
    return {"error": error_fields(exc)}


def _serve(
    url: str,
    service_id: str,
    server_id: str,
    ttl: float,
    exit_with: int | None,
    report: Callable[[dict[str, Any]], None],
) -> int:
    """Start the server, ``report`` its ready line (or its error) and serve until stopped."""
    import unidist
    from unidist.cluster._grid_server import Server

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    server: Server | None = None
    try:
        server = Server(unidist.connect(url), service_id, server_id, ttl, exit_with)
        info = server.start()
    except Exception as exc:
        report(_error_report(exc))
        if server is not None:
            server.close()
        return 1
    report({"ready": True, **info})
    try:
        server.run()
    finally:
        server.close()
    return 0


@click.command("serve")
@click.argument("service_id")
@click.argument("server_id")
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Membership heartbeat ttl in seconds.",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="DIR",
    help="Put DIR in front of sys.path before importing the factory (repeatable).",
)
@click.option(
    "--exit-with",
    type=click.IntRange(min=1),
    metavar="PID",
    help="Stop once process PID (on this host) has exited.",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Run in the background; return once the server is registered (exit 0) or failed (1).",
)
@click.option(
    "--log",
    "log_file",
    metavar="FILE",
    help="With --detach: append the server's stdout and stderr to FILE (default /dev/null).",
)
@click.pass_obj
def serve_cmd(
    obj: Context,
    service_id: str,
    server_id: str,
    ttl: float,
    paths: tuple[str, ...],
    exit_with: int | None,
    detach: bool,
    log_file: str | None,
) -> None:
    """Serve SERVER_ID of the published service SERVICE_ID.

    The service's factory and arguments come from the backend (written by
    Grid.publish). The server creates one instance, registers in the cluster membership
    under the service id, and runs the calls of whichever client acquired it, one at a
    time, until it gets a stop request, its service is terminated, the --exit-with
    process exits, or SIGTERM.

    Prints one JSON line once it is registered: {"ready": true, "server", "host", "pid",
    "incarnation"}; or {"error": {"type", "message", "traceback"}} and exits 1.
    """
    for path in reversed(paths):
        sys.path.insert(0, os.path.abspath(path))
    url = obj.url
    if not detach:

        def say(line: dict[str, Any]) -> None:
            click.echo(json.dumps(line), nl=True)
            sys.stdout.flush()

        code = _serve(url, service_id, server_id, ttl, exit_with, say)
        if code:
            raise click.exceptions.Exit(code)
        return

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        chunks = []
        with os.fdopen(read_end, "rb") as pipe:
            while chunk := pipe.read(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", "replace").strip()
        if not text:
            text = json.dumps({"error": {"type": "", "message": "the server exited at start"}})
        click.echo(text)
        raise click.exceptions.Exit(0 if '"ready": true' in text else 1)

    # The detached server: a new session, no terminal, stdio to /dev/null or the log.
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else devnull
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    pipe_open = [True]

    def report(line: dict[str, Any]) -> None:
        os.write(write_end, (json.dumps(line) + "\n").encode())
        os.close(write_end)
        pipe_open[0] = False

    code = 1
    try:
        code = _serve(url, service_id, server_id, ttl, exit_with, report)
    except SystemExit as exc:  # SIGTERM
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        traceback.print_exc()
    finally:
        if pipe_open[0]:
            os.close(write_end)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
