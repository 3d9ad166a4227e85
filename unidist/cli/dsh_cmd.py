"""``unidist dsh`` and ``unidist pcp``: run a command or copy files on cluster hosts (stub)."""

from __future__ import annotations

import click


@click.command("dsh", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dsh_cmd(args: tuple[str, ...]) -> None:
    """Run a command on cluster hosts over ssh (not implemented yet)."""
    raise click.ClickException("dsh is not implemented yet")


@click.command("pcp", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def pcp_cmd(args: tuple[str, ...]) -> None:
    """Copy files to cluster hosts over scp (not implemented yet)."""
    raise click.ClickException("pcp is not implemented yet")
