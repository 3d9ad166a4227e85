"""The ``file://`` backend: a directory shared by the processes of one host."""

from unidist.backends.file.backend import FileBackend

__all__ = ["FileBackend"]
