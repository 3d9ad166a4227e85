"""The ``unidist`` command. ``main(argv)`` is the entry point (testable in-process)."""

from unidist.cli.main import main

__all__ = ["main"]
