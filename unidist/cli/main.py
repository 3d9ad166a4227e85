"""The ``unidist`` command line: global options, exit codes, error rendering.

Exit codes (documented in the README and in ``unidist --help``):

=====  ==============================================================================
0      success
1      error (one line on stderr), e.g. a missing state key
2      usage error: bad arguments or options
3      ``queue get``: no message became ready before the timeout (nothing on stdout)
4      ``dsh``, ``pcp``: the command or copy failed or timed out on at least one host
5      ``dsh``, ``pcp``: no host failed, but at least one host was unreachable
69     the backend is unreachable or unusable (EX_UNAVAILABLE)
75     lock or semaphore busy: not acquired in time (EX_TEMPFAIL, like ``flock -E 75``)
130    interrupted (Ctrl-C)
N      ``lock run``, ``sem run`` and ``run`` exit with CMD's own code (128+N if CMD was
       killed by signal N, 127 if it was not found, 126 if it could not be executed)
=====  ==============================================================================

``--url`` and ``--json`` are global options: they go before the command and are accepted after
it too (``unidist counter get jobs --json``). Arguments after ``--`` are never read as options.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import click
import platformdirs

from unidist import __version__
from unidist.errors import BackendUnavailable, LockTimeout, UnidistError

if TYPE_CHECKING:
    from unidist.backends.base import Backend

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_EMPTY: Final = 3
EXIT_UNAVAILABLE: Final = 69
EXIT_BUSY: Final = 75
EXIT_INTERRUPTED: Final = 130

_PASSWORD_IN_URL: Final = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def default_cli_url() -> str:
    """``$UNIDIST_URL``, else a ``file://`` directory: ``/var/lib/unidist`` for root, else the
    user's state directory (``~/.local/state/unidist``)."""
    env = os.environ.get("UNIDIST_URL")
    if env:
        return env
    if os.geteuid() == 0:
        return "file:///var/lib/unidist"
    return "file://" + platformdirs.user_state_dir("unidist", appauthor=False)


def scrub(message: str) -> str:
    """``message`` with any ``scheme://user:password@`` password replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", message)


class Context:
    """What every command receives: the chosen backend URL and the output mode."""

    def __init__(self, url: str | None, as_json: bool, debug: bool) -> None:
        self.url = url or default_cli_url()
        self.url_given = url is not None
        self.as_json = as_json
        self.debug = debug

    def backend(self) -> Backend:
        """The backend handle for :attr:`url` (connected once per process).

        Raises:
            InvalidURL: a bad URL.
            BackendUnavailable: the backend cannot be used.
        """
        import unidist

        return unidist.connect(self.url)


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

    --url and --json may also be given after the command. Put -- before a command
    line that unidist should run (lock run, sem run, run, queue work).

    \b
    Exit codes:
      0    ok
      1    error (one line on stderr)
      2    usage error
      3    queue get: no message before the timeout
      4    dsh, pcp: failed or timed out on a host
      5    dsh, pcp: a host unreachable
      69   backend unreachable
      75   lock or semaphore busy (not acquired in time)
      130  interrupted
      lock run, sem run and run exit with CMD's code.
    """
    ctx.obj = Context(url, as_json, debug)


def _register_commands() -> None:
    from unidist.cli.demo import demo

    cli.add_command(demo)
    from unidist.cli.log_cmd import log_group

    cli.add_command(log_group)
    from unidist.cli.lock_cmd import lock_group, sem_group

    cli.add_command(lock_group)
    cli.add_command(sem_group)
    from unidist.cli.counter_cmd import counter_group

    cli.add_command(counter_group)
    from unidist.cli.state_cmd import state_group

    cli.add_command(state_group)
    from unidist.cli.queue_cmd import queue_group

    cli.add_command(queue_group)
    from unidist.cli.run_cmd import run_cmd, runs_cmd

    cli.add_command(run_cmd)
    cli.add_command(runs_cmd)
    from unidist.cli.backend_cmd import backend_group

    cli.add_command(backend_group)
    from unidist.cli.cluster_cmd import cluster_group

    cli.add_command(cluster_group)
    from unidist.cli.dsh_cmd import dsh_cmd, pcp_cmd

    cli.add_command(dsh_cmd)
    cli.add_command(pcp_cmd)
    from unidist.cli.jobs_cmd import jobs_group

    cli.add_command(jobs_group)
    from unidist.cli.serve_cmd import serve_cmd

    cli.add_command(serve_cmd)
    from unidist.cli.clinit_cmd import clinit_cmd

    cli.add_command(clinit_cmd)


_register_commands()


# ---------------------------------------------------------------------- global options after
def _late_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    obj = ctx.find_object(Context)
    if value is not None and obj is not None:
        obj.url = value
        obj.url_given = True


def _late_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(Context)
    if value and obj is not None:
        obj.as_json = True


def _accept_global_options(command: click.Command) -> None:
    """Give ``command`` and every subcommand ``--url``/``--json`` options that set the global
    ones, unless a command already defines an option of that name. Idempotent."""
    names = {opt for p in command.params for opt in getattr(p, "opts", ())}
    if "--url" not in names:
        command.params.append(
            click.Option(
                ["--url"],
                metavar="URL",
                expose_value=False,
                is_eager=True,
                callback=_late_url,
                help="Backend URL (same as the global --url).",
            )
        )
    if "--json" not in names:
        command.params.append(
            click.Option(
                ["--json"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_late_json,
                help="Machine-readable JSON output (same as the global --json).",
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_global_options(sub)


_globals_added: set[str] = set()


def _add_global_options() -> None:
    for name, command in cli.commands.items():
        if name not in _globals_added:
            _accept_global_options(command)
            _globals_added.add(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``unidist`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:cut]
    _add_global_options()
    try:
        result = cli.main(args=args, prog_name="unidist", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("unidist: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output closed early (``unidist runs | head``): not an error worth a message.
        _silence_stdout()
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            raise
        return _report_error(exc)
    return int(result or 0)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _report_error(exc: Exception) -> int:
    """Print one line for ``exc`` on stderr (no traceback, no password); return the exit code."""
    text = str(exc) if isinstance(exc, UnidistError) else f"{type(exc).__name__}: {exc}"
    text = scrub(" ".join(text.split()))
    click.echo(f"unidist: error: {text}", err=True)
    if isinstance(exc, BackendUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, LockTimeout):
        return EXIT_BUSY
    return EXIT_ERROR
