"""``unidist serve``: run one server of a published service (stub)."""

from __future__ import annotations

import click


@click.command("serve", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve_cmd(args: tuple[str, ...]) -> None:
    """Serve one instance of a published service (not implemented yet)."""
    raise click.ClickException("serve is not implemented yet")
