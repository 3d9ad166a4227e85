"""``unidist jobs run|status``: a batch of jobs over cluster hosts (stub)."""

from __future__ import annotations

import click


@click.group("jobs")
def jobs_group() -> None:
    """Run a batch of jobs over cluster hosts (not implemented yet)."""
