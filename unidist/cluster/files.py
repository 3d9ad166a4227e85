"""Cluster definition files in the clusterit format.

A cluster file lists hosts, one per line, and names groups of them::

    # hosts before the first GROUP:/LUMP: line are the orphans
    foo.baz.com
    bar.baz.com

    GROUP:odd
    one.baz.com
    three.baz.com

    GROUP:prime
    one.baz.com
    two.baz.com

    LUMP:weird          # a lump names groups (or other lumps); its hosts are their union
    odd
    prime

Rules (see also DESIGN.md, "Settled details"):

* Surrounding whitespace is trimmed; blank lines are ignored; ``#`` starts a comment that
  runs to the end of the line (hostnames never contain ``#``).
* ``GROUP:name`` starts a group whose hosts follow, ``LUMP:name`` a lump whose following lines
  name groups or lumps. A lump may name a group or lump defined later in the file, and the
  reserved groups ``__orphans__`` and ``__all__``.
* Hosts listed before the first ``GROUP:``/``LUMP:`` form ``__orphans__``; ``__all__`` holds
  every host of the file. Within every group and lump duplicates are removed, the first
  appearance keeping its place; a lump's hosts follow the order of the names it lists.
* A repeated ``GROUP:name`` (or ``LUMP:name``) continues the earlier section: its lines are
  appended (duplicates dropped) and the group keeps the position of its first definition.
  This lets a file be assembled by concatenating fragments. The same name used for a group
  and a lump is an error.
* Errors are :class:`~unidist.errors.ClusterFileError` naming the file and the line: an
  unknown name in a lump (at the line that names it), lumps that include each other (at the
  line that closes the cycle), a line holding more than one word, a reserved or empty group
  name, a file that is not UTF-8 text.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from unidist.errors import ClusterFileError

__all__ = ["ALL", "ORPHANS", "Cluster", "load", "parse"]

ORPHANS: Final = "__orphans__"
ALL: Final = "__all__"
RESERVED: Final = (ORPHANS, ALL)
ENV_VAR: Final = "CLUSTER"
_GROUP: Final = "GROUP:"
_LUMP: Final = "LUMP:"


def _ordered(items: Iterable[str]) -> tuple[str, ...]:
    """``items`` without duplicates, first appearance kept."""
    return tuple(dict.fromkeys(items))


@dataclass
class _Section:
    """One group or lump while parsing: its kind, first line and entries (name, line)."""

    kind: str  # "group" or "lump"
    line: int
    entries: list[tuple[str, int]] = field(default_factory=list)


class Cluster:
    """The hosts and groups of a cluster file (or just the local host without a file).

    Build one with :func:`load` (or :func:`parse` for text). Immutable.

    Attributes:
        path: the file it was read from, or None.
        hostname: this machine's name (``socket.gethostname()``).
        shortname: ``hostname`` truncated at the first ``.``.
    """

    __slots__ = ("_groups", "_hosts", "_members", "_of", "hostname", "path", "shortname")

    def __init__(
        self,
        groups: dict[str, tuple[str, ...]],
        orphans: tuple[str, ...],
        hosts: tuple[str, ...],
        path: str | None = None,
        hostname: str | None = None,
    ) -> None:
        self.path = path
        self.hostname = socket.gethostname() if hostname is None else hostname
        self.shortname = self.hostname.split(".", 1)[0]
        self._groups = tuple(groups)
        self._hosts = hosts
        self._members: dict[str, tuple[str, ...]] = {ORPHANS: orphans, ALL: hosts, **groups}
        of: dict[str, list[str]] = {}
        for host in orphans:
            of.setdefault(host, []).append(ORPHANS)
        for name, members in groups.items():
            for host in members:
                of.setdefault(host, []).append(name)
        self._of = {host: tuple(names) for host, names in of.items()}

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups and lumps created in the file, in file order (no ``__orphans__`` or
        ``__all__``)."""
        return self._groups

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host (``__all__``), in order of first appearance."""
        return self._hosts

    def group(self, name: str) -> tuple[str, ...]:
        """The hosts of group or lump ``name`` (``__orphans__`` and ``__all__`` included).

        Raises:
            KeyError: no such group.
        """
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise KeyError(name) from None

    def groups_of(self, host: str) -> tuple[str, ...]:
        """The groups and lumps ``host`` belongs to, in file order, ``__orphans__`` first for
        an orphan host, never ``__all__``; ``()`` for a host the file does not list."""
        return self._of.get(host, ())

    def __contains__(self, host: object) -> bool:
        return host in self._of or host in self._hosts

    def properties(self) -> dict[str, str | tuple[str, ...]]:
        """A flat view for scripts.

        Returns:
            ``groups.<name>`` → hosts (every group and lump, plus ``__orphans__`` and
            ``__all__``), ``hosts.<host>`` → that host's groups, ``hostname`` and
            ``shortname`` → str.
        """
        props: dict[str, str | tuple[str, ...]] = {}
        for name in (*self._groups, ORPHANS, ALL):
            props[f"groups.{name}"] = self._members[name]
        for host in self._hosts:
            props[f"hosts.{host}"] = self.groups_of(host)
        props["hostname"] = self.hostname
        props["shortname"] = self.shortname
        return props

    def __repr__(self) -> str:
        where = self.path or "no file"
        return f"<Cluster {where}: {len(self._hosts)} hosts, {len(self._groups)} groups>"


def _error(message: str, path: str, line: int) -> ClusterFileError:
    where = f"{path}:{line}" if line else path
    return ClusterFileError(f"{where}: {message}", path=path, line=line)


def _lines(data: bytes, path: str) -> Iterable[tuple[int, str]]:
    """(line number, stripped text without comment) of every non-blank line."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _error("the line is not UTF-8 text", path, number) from None
        text = text.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isprintable() or any(ch.isspace() for ch in text):
            raise _error(f"a line holds one host or group name, not {text!r}", path, number)
        yield number, text


def _header(text: str, path: str, number: int) -> tuple[str, str] | None:
    for prefix, kind in ((_GROUP, "group"), (_LUMP, "lump")):
        if text.startswith(prefix):
            name = text[len(prefix) :]
            if not name:
                raise _error(f"{prefix} needs a name", path, number)
            if name in RESERVED:
                raise _error(f"{name} is reserved and cannot be defined", path, number)
            return kind, name
    return None


def parse(data: bytes | str, path: str = "<string>", hostname: str | None = None) -> Cluster:
    """Parse cluster-file text (see the module docs for the format).

    Args:
        data: the file contents.
        path: the name used in error messages.
        hostname: override the local host name (tests).

    Raises:
        ClusterFileError: the text breaks a rule; names ``path`` and the line.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    orphans: list[str] = []
    every: list[str] = []  # hosts in file order
    sections: dict[str, _Section] = {}
    current: _Section | None = None
    for number, text in _lines(data, path):
        head = _header(text, path, number)
        if head is not None:
            kind, name = head
            current = sections.get(name)
            if current is None:
                current = sections[name] = _Section(kind, number)
            elif current.kind != kind:
                raise _error(
                    f"{name!r} is defined as a {current.kind} at line {current.line} "
                    f"and cannot also be a {kind}",
                    path,
                    number,
                )
            continue
        if current is None:
            orphans.append(text)
            every.append(text)
        else:
            current.entries.append((text, number))
            if current.kind == "group":
                every.append(text)

    hosts = _ordered(every)
    resolved: dict[str, tuple[str, ...]] = {ORPHANS: _ordered(orphans), ALL: hosts}
    for name, sec in sections.items():
        if sec.kind == "group":
            resolved[name] = _ordered(h for h, _ in sec.entries)
    _resolve_lumps(sections, resolved, path)
    groups = {name: resolved[name] for name in sections}
    return Cluster(groups, resolved[ORPHANS], hosts, path=path, hostname=hostname)


def _resolve_lumps(
    sections: dict[str, _Section], resolved: dict[str, tuple[str, ...]], path: str
) -> None:
    """Fill ``resolved`` for every lump, depth first without recursion (cycle → error)."""
    in_progress: set[str] = set()
    for start in sections:
        if start in resolved:
            continue
        # Stack of (lump name, index of the next entry to visit).
        stack: list[tuple[str, int]] = [(start, 0)]
        in_progress.add(start)
        while stack:
            name, index = stack[-1]
            entries = sections[name].entries
            if index == len(entries):
                stack.pop()
                in_progress.discard(name)
                resolved[name] = _ordered(h for ref, _ in entries for h in resolved[ref])
                continue
            stack[-1] = (name, index + 1)
            ref, number = entries[index]
            if ref in resolved:
                continue
            if ref not in sections:
                raise _error(f"lump {name!r} names unknown group {ref!r}", path, number)
            if ref in in_progress:
                raise _error(
                    f"lump {name!r} names {ref!r}, which includes {name!r} (a cycle)",
                    path,
                    number,
                )
            in_progress.add(ref)
            stack.append((ref, 0))


def load(path: str | os.PathLike[str] | None = None) -> Cluster:
    """Read a cluster file.

    Args:
        path: the file; else ``$CLUSTER``; else no file, and the cluster is just the local
            host (in ``__all__``, in no group).

    Raises:
        ClusterFileError: the named file is missing, unreadable or malformed.
    """
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        local = socket.gethostname()
        return Cluster({}, (), (local,), path=None, hostname=local)
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise _error(f"cannot read the cluster file: {exc.strerror or exc}", name, 0) from exc
    return parse(data, name)
