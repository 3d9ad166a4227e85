"""Remote commands over the system ssh/scp (placeholder; being implemented)."""

from __future__ import annotations

from typing import Any


class Result:
    """The outcome of a command on one host (placeholder)."""


def run(*args: Any, **kwargs: Any) -> dict[str, Result]:
    """Run a command on cluster hosts (not implemented yet)."""
    raise NotImplementedError("unidist.cluster.run is not implemented yet")


def copy(*args: Any, **kwargs: Any) -> dict[str, Result]:
    """Copy files to cluster hosts (not implemented yet)."""
    raise NotImplementedError("unidist.cluster.copy is not implemented yet")


def write_remote_file(*args: Any, **kwargs: Any) -> Result:
    """Write a file on a host (not implemented yet)."""
    raise NotImplementedError("unidist.cluster.write_remote_file is not implemented yet")
