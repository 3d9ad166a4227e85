"""The cltab: ``group:level:tag:mode:command`` lines read by the clinit daemon.

See :mod:`unidist.cluster.clinit` and ``docs/clinit.md`` for the format. This module only
parses; it starts nothing.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from unidist.errors import ClusterFileError

__all__ = ["MODES", "Entry", "Table", "check_word", "parse_table", "read_table"]

MODES: Final = ("wait", "once", "respawn", "test", "off")
"""The modes a cltab line may name."""

_WORD: Final = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,63}")


def check_word(value: str, what: str) -> str:
    """Return ``value`` if it is a valid group, level or tag name, else raise ValueError.

    A name is 1-64 letters, digits and ``._-@``, not starting with ``.``.
    """
    if not _WORD.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not valid: use 1-64 letters, digits and '._-@' "
            "(not starting with '.')"
        )
    return value


@dataclass(frozen=True)
class Entry:
    """One cltab line.

    Attributes:
        group: the resource group.
        levels: the levels the entry belongs to (the level field, split at ``,``).
        tag: the entry's name within the group.
        mode: one of :data:`MODES`.
        argv: the command split with :func:`shlex.split` (empty for ``off``).
        line: the line number in the file (1-based); identifies the entry.
    """

    group: str
    levels: tuple[str, ...]
    tag: str
    mode: str
    argv: tuple[str, ...]
    line: int

    @property
    def key(self) -> str:
        """``group/tag@line``: unique within one table."""
        return f"{self.group}/{self.tag}@{self.line}"


@dataclass(frozen=True)
class Table:
    """A parsed cltab: its entries in file order and the file it came from."""

    path: str
    entries: tuple[Entry, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group named in the table, in order of first appearance."""
        return tuple(dict.fromkeys(e.group for e in self.entries))

    def levels_of(self, group: str) -> tuple[str, ...]:
        """The levels ``group``'s entries name, in order of first appearance."""
        return tuple(dict.fromkeys(lv for e in self.entries if e.group == group for lv in e.levels))

    def entries_at(self, group: str, level: str) -> tuple[Entry, ...]:
        """``group``'s entries that belong to ``level``, in file order."""
        return tuple(e for e in self.entries if e.group == group and level in e.levels)


def _error(path: str, line: int, message: str) -> ClusterFileError:
    return ClusterFileError(f"{path}:{line}: {message}", path=path, line=line)


def parse_table(text: str, path: str = "<string>") -> Table:
    """Parse cltab text.

    Raises:
        ClusterFileError: a malformed line, naming ``path`` and the line number: too few
            fields, a bad group, level or tag name, an unknown mode, a missing or unparsable
            command, or two entries of one group with the same tag sharing a level.
    """
    entries: list[Entry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":", 4)
        if len(fields) != 5:
            raise _error(
                path, number, f"expected group:level:tag:mode:command, got {len(fields)} field(s)"
            )
        group, level_field, tag, mode, command = (f.strip() for f in fields)
        try:
            check_word(group, "group")
            levels = tuple(check_word(lv.strip(), "level") for lv in level_field.split(","))
            check_word(tag, "tag")
        except ValueError as exc:
            raise _error(path, number, str(exc)) from None
        if mode not in MODES:
            raise _error(path, number, f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        try:
            argv = tuple(shlex.split(command, comments=False))
        except ValueError as exc:
            raise _error(path, number, f"cannot split the command: {exc}") from None
        if mode == "off":
            if argv:
                raise _error(path, number, "an 'off' entry takes no command")
        elif not argv:
            raise _error(path, number, f"a {mode!r} entry needs a command")
        entry = Entry(group, levels, tag, mode, argv, number)
        for other in entries:
            if (
                mode != "off"
                and other.mode != "off"
                and other.group == group
                and other.tag == tag
                and set(other.levels) & set(levels)
            ):
                raise _error(
                    path,
                    number,
                    f"tag {tag!r} of group {group!r} is already used at level(s) "
                    f"{','.join(sorted(set(other.levels) & set(levels)))} on line {other.line}",
                )
        entries.append(entry)
    return Table(path, tuple(entries))


def read_table(path: str | os.PathLike[str], strict: bool = True) -> Table:
    """Read and parse the cltab file ``path``.

    Args:
        strict: refuse a file that someone other than this user (or root) could change:
            owned by another user, or writable by group or others. Whoever can write the
            cltab runs commands as the daemon's user.

    Raises:
        ClusterFileError: the file is missing, unreadable, unsafe (``strict``), not UTF-8,
            or malformed (naming the file and line).
    """
    name = os.fspath(path)
    try:
        if strict:
            info = os.stat(name)
            if info.st_uid not in (os.geteuid(), 0):
                raise ClusterFileError(
                    f"{name}: the cltab is owned by uid {info.st_uid}; it must belong to "
                    "this user or root",
                    path=name,
                )
            if info.st_mode & 0o022:
                raise ClusterFileError(
                    f"{name}: the cltab is writable by group or others "
                    f"(mode {info.st_mode & 0o777:04o}); chmod go-w it",
                    path=name,
                )
        text = Path(name).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ClusterFileError(
            f"{name}: cannot read the cltab: {exc.strerror or exc}", path=name
        ) from exc
    except UnicodeDecodeError as exc:
        raise ClusterFileError(f"{name}: the cltab is not UTF-8 text", path=name) from exc
    return parse_table(text, name)
