"""The ``unidist`` command line: global options, exit codes, error rendering.

Exit codes: 0 ok, 1 error (message on stderr), 2 usage error, 75 lock/semaphore busy
(EX_TEMPFAIL, as ``flock -E 75`` scripts expect).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Final

import click
import platformdirs

from unidist import __version__
from unidist.errors import UnidistError

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_BUSY: Final = 75


def default_cli_url() -> str:
    """``$UNIDIST_URL``, else a ``file://`` directory: ``/var/lib/unidist`` for root, else the
    user's state directory (``~/.local/state/unidist``)."""
    env = os.environ.get("UNIDIST_URL")
    if env:
        return env
    if os.geteuid() == 0:
        return "file:///var/lib/unidist"
    return "file://" + platformdirs.user_state_dir("unidist", appauthor=False)


class Context:
    """What every command receives: the chosen backend URL and the output mode."""

    def __init__(self, url: str | None, as_json: bool, debug: bool) -> None:
        self.url = url or default_cli_url()
        self.url_given = url is not None
        self.as_json = as_json
        self.debug = debug


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="UNIDIST_URL",
    metavar="URL",
    help="Backend URL (memory://, file:///dir, redis://host:6379/0). "
    "Default: $UNIDIST_URL, else a file:// directory under your state directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="unidist")
@click.pass_context
def cli(ctx: click.Context, url: str | None, as_json: bool, debug: bool) -> None:
    """unidist: shared locks, counters, state buckets and queues for scripts and fleets.

    \b
    Exit codes: 0 ok, 1 error, 2 usage error, 75 lock busy.
    """
    ctx.obj = Context(url, as_json, debug)


def _register_commands() -> None:
    from unidist.cli.demo import demo

    cli.add_command(demo)
    from unidist.cli.log_cmd import log_group

    cli.add_command(log_group)


_register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``unidist`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="unidist", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except UnidistError as exc:
        if debug:
            raise
        click.echo(f"unidist: error: {exc}", err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return int(result or 0)
