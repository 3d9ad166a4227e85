"""``unidist clinit``: resource groups started at run levels (stub)."""

from __future__ import annotations

import click


@click.command("clinit", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def clinit_cmd(args: tuple[str, ...]) -> None:
    """Move resource groups between run levels (not implemented yet)."""
    raise click.ClickException("clinit is not implemented yet")
