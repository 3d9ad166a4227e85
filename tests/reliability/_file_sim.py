"""Simulated power loss for the file backend (scenario F2).

:class:`Recorder` is an I/O layer for :func:`unidist.backends.file._io.injected`: it performs
every call for real and logs it as an event on inodes (creates, writes with their offsets,
truncates, renames, unlinks, fsyncs of files and directories). :func:`crash_states` replays
the first ``k`` events into a model of a file system that keeps, per inode, what was made
durable by the last fsync and which pages were dirtied since, and per directory, the entries
made durable by the last directory fsync plus the metadata operations since (which a
journaling file system commits in order, so a crash keeps a prefix of them).

From each cut it builds crash states that

* drop every unsynced write, or keep them all (a plain process crash),
* keep the file sizes but zero-fill the unsynced pages (size committed, data never written),
* keep the unsynced pages in order up to some page and garble every page after it
  (a file extended with garbage before its data landed, SQLite's assumption; bytes made
  durable earlier keep their content, the "powersafe overwrite" property SQLite assumes),
* reorder: drop one unsynced page while later ones landed (a zero-filled hole),
* tear the last sector of the last unsynced write,
* and random mixes of the above (page by page, metadata prefix per directory).

Writes land in whole 4 KiB pages (the unit of writeback); the last sector of a write may be
torn at 512 bytes. :func:`materialize` writes a crash state as a real directory tree.
"""

from __future__ import annotations

import os
import random
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 4096
SECTOR = 512


@dataclass
class Event:
    kind: str  # create, write, trunc, rename, unlink, fsync, ack
    ino: int = 0  # the file (write/trunc/fsync) or directory (create/rename/unlink/fsync)
    name: str = ""
    dst: str = ""
    child: int = 0
    is_dir: bool = False
    offset: int = 0
    data: bytes = b""
    tag: Any = None


class Recorder:
    """An ``_io`` layer that performs each call and records it (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def _ino(self, fd: int) -> tuple[int, bool]:
        st = os.fstat(fd)
        return st.st_ino, stat.S_ISDIR(st.st_mode)

    def ack(self, tag: Any) -> None:
        """Mark that the operation ``tag`` returned (was acknowledged) at this point."""
        with self.lock:
            self.events.append(Event("ack", tag=tag))

    # ------------------------------------------------------------------ the layer
    def os_open(
        self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        with self.lock:
            fd = os.open(path, flags, mode, dir_fd=dir_fd)
            if flags & os.O_CREAT and flags & os.O_EXCL and dir_fd is not None:
                self.events.append(
                    Event(
                        "create", ino=self._ino(dir_fd)[0], name=str(path), child=self._ino(fd)[0]
                    )
                )
            if flags & os.O_TRUNC:
                self.events.append(Event("trunc", ino=self._ino(fd)[0], offset=0))
            return fd

    def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        with self.lock:
            os.mkdir(path, mode, dir_fd=dir_fd)
            if dir_fd is not None:
                child = os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_ino
                self.events.append(
                    Event(
                        "create", ino=self._ino(dir_fd)[0], name=str(path), child=child, is_dir=True
                    )
                )

    def write(self, fd: int, data: Any) -> int:
        with self.lock:
            import fcntl

            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
                pos = os.fstat(fd).st_size
            else:
                pos = os.lseek(fd, 0, os.SEEK_CUR)
            n = os.write(fd, data)
            self.events.append(
                Event("write", ino=self._ino(fd)[0], offset=pos, data=bytes(data[:n]))
            )
            return n

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        with self.lock:
            n = os.pwrite(fd, data, offset)
            self.events.append(
                Event("write", ino=self._ino(fd)[0], offset=offset, data=bytes(data[:n]))
            )
            return n

    def ftruncate(self, fd: int, length: int) -> None:
        with self.lock:
            os.ftruncate(fd, length)
            self.events.append(Event("trunc", ino=self._ino(fd)[0], offset=length))

    def fsync(self, fd: int) -> None:
        with self.lock:
            os.fsync(fd)
            ino, is_dir = self._ino(fd)
            self.events.append(Event("fsync", ino=ino, is_dir=is_dir))

    fdatasync = fsync

    def rename(self, src: Any, dst: Any, *, src_dir_fd: int, dst_dir_fd: int) -> None:
        with self.lock:
            assert os.path.samestat(os.fstat(src_dir_fd), os.fstat(dst_dir_fd))
            child = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False).st_ino
            os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            self.events.append(
                Event(
                    "rename", ino=self._ino(src_dir_fd)[0], name=str(src), dst=str(dst), child=child
                )
            )

    def unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        with self.lock:
            os.unlink(path, dir_fd=dir_fd)
            if dir_fd is not None:
                self.events.append(Event("unlink", ino=self._ino(dir_fd)[0], name=str(path)))


# ---------------------------------------------------------------------- the model
@dataclass
class FileM:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    dirty: set[int] = field(default_factory=set)  # page numbers written since the last fsync
    last_write: tuple[int, int] | None = None  # (offset, end) of the last unsynced write


@dataclass
class DirM:
    entries: dict[str, tuple[int, bool]] = field(default_factory=dict)
    durable: dict[str, tuple[int, bool]] = field(default_factory=dict)
    pending: list[list[tuple[str, tuple[int, bool] | None]]] = field(default_factory=list)


@dataclass
class Model:
    files: dict[int, FileM] = field(default_factory=dict)
    dirs: dict[int, DirM] = field(default_factory=dict)
    acked: list[Any] = field(default_factory=list)

    def file(self, ino: int) -> FileM:
        return self.files.setdefault(ino, FileM())

    def dir(self, ino: int) -> DirM:
        return self.dirs.setdefault(ino, DirM())

    def apply(self, ev: Event) -> None:
        if ev.kind == "ack":
            self.acked.append(ev.tag)
        elif ev.kind == "write":
            f = self.file(ev.ino)
            end = ev.offset + len(ev.data)
            if len(f.data) < end:
                f.data.extend(b"\0" * (end - len(f.data)))
            f.data[ev.offset : end] = ev.data
            f.dirty.update(range(ev.offset // PAGE, (end - 1) // PAGE + 1))
            f.last_write = (ev.offset, end)
        elif ev.kind == "trunc":
            f = self.file(ev.ino)
            del f.data[ev.offset :]
            f.dirty.add(ev.offset // PAGE)
        elif ev.kind == "fsync":
            if ev.is_dir:
                d = self.dir(ev.ino)
                d.durable = dict(d.entries)
                d.pending.clear()
            else:
                f = self.file(ev.ino)
                f.durable = bytes(f.data)
                f.dirty.clear()
                f.last_write = None
        else:
            d = self.dir(ev.ino)
            if ev.kind == "create":
                change: list[tuple[str, tuple[int, bool] | None]] = [
                    (ev.name, (ev.child, ev.is_dir))
                ]
                # a new file or directory: an inode number freed by an earlier unlink may be
                # reused, so forget whatever the model held under it
                if ev.is_dir:
                    self.dirs[ev.child] = DirM()
                else:
                    self.files[ev.child] = FileM()
            elif ev.kind == "unlink":
                change = [(ev.name, None)]
            else:  # rename
                entry = d.entries.get(ev.name, (ev.child, False))
                change = [(ev.name, None), (ev.dst, entry)]
            for name, entry in change:
                if entry is None:
                    d.entries.pop(name, None)
                else:
                    d.entries[name] = entry
            d.pending.append(change)


@dataclass
class Plan:
    """How one crash state treats unsynced data (see :func:`crash_states`)."""

    name: str
    meta: str = "all"  # all | none | random: metadata ops kept per directory
    pages: str = "keep"  # keep | drop | zero | garble_after | hole | torn | random
    rng: random.Random | None = None


def _file_content(f: FileM, plan: Plan, rng: random.Random) -> bytes:
    if not f.dirty:
        return f.durable
    new = bytes(f.data)
    old = f.durable
    if plan.pages == "keep":
        return new
    if plan.pages == "drop":
        return old
    size = rng.choice([len(new), len(old)]) if plan.pages == "random" else len(new)
    out = bytearray(old[:size].ljust(size, b"\0"))
    pages = sorted(f.dirty)
    choice: dict[int, str] = {}
    if plan.pages == "zero":
        choice = dict.fromkeys(pages, "zero")
    elif plan.pages == "garble_after":
        cut = rng.randrange(len(pages) + 1)
        choice = {p: ("new" if i < cut else "garble") for i, p in enumerate(pages)}
    elif plan.pages == "hole":
        hole = rng.choice(pages)
        choice = {p: ("zero" if p == hole else "new") for p in pages}
    elif plan.pages == "torn":
        choice = dict.fromkeys(pages, "new")
    else:
        kinds = ["new", "new", "old", "zero"]
        choice = {p: rng.choice(kinds) for p in pages}
        # garbage only past the last page that landed (a file grown with garbage)
        landed = [p for p in pages if choice[p] == "new"]
        last = max(landed) if landed else -1
        for p in pages:
            if p > last and rng.random() < 0.3:
                choice[p] = "garble"
    for p, how in choice.items():
        lo, hi = p * PAGE, min((p + 1) * PAGE, size)
        if lo >= size:
            continue
        if how == "new":
            out[lo:hi] = new[lo:hi].ljust(hi - lo, b"\0")
        elif how == "zero":
            out[lo:hi] = b"\0" * (hi - lo) if lo >= len(old) else old[lo:hi].ljust(hi - lo, b"\0")
        elif how == "garble":
            # powersafe overwrite: bytes made durable earlier keep their content
            lo = max(lo, len(old))
            if lo < hi:
                out[lo:hi] = rng.randbytes(hi - lo)
    if plan.pages == "torn" and f.last_write is not None:
        start, end = f.last_write
        sec = max(start, (end - 1) // SECTOR * SECTOR)
        tear = rng.randrange(sec, max(sec + 1, min(end, size)))
        out[tear : min(size, sec + SECTOR)] = b"\0" * (min(size, sec + SECTOR) - tear)
    return bytes(out)


def _dir_entries(d: DirM, plan: Plan, rng: random.Random) -> dict[str, tuple[int, bool]]:
    keep = {"all": len(d.pending), "none": 0}.get(plan.meta)
    if keep is None:
        keep = rng.randrange(len(d.pending) + 1)
    entries = dict(d.durable)
    for change in d.pending[:keep]:
        for name, entry in change:
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry
    return entries


@dataclass
class CrashState:
    cut: int
    plan: str
    tree: dict[str, bytes | None]  # relative path -> content (None: a directory)
    acked: list[Any]


def build(model: Model, root_ino: int, plan: Plan, rng: random.Random) -> dict[str, bytes | None]:
    """The directory tree below ``root_ino`` as a crash under ``plan`` leaves it."""
    tree: dict[str, bytes | None] = {}

    def walk(ino: int, prefix: str) -> None:
        for name, (child, is_dir) in sorted(_dir_entries(model.dir(ino), plan, rng).items()):
            rel = f"{prefix}{name}"
            if is_dir:
                tree[rel] = None
                walk(child, rel + "/")
            else:
                tree[rel] = _file_content(model.file(child), plan, rng)

    walk(root_ino, "")
    return tree


PLANS = (
    ("drop", "none", "drop"),
    ("keep", "all", "keep"),
    ("zero", "all", "zero"),
    ("garble", "all", "garble_after"),
    ("hole", "all", "hole"),
    ("torn", "all", "torn"),
    ("meta-lost", "none", "keep"),
)


def crash_states(
    events: list[Event], root_ino: int, seed: int, randoms: int, initial: Model | None = None
) -> Iterator[CrashState]:
    """Every cut point (after each event) times the fixed plans plus ``randoms`` random ones.

    Identical trees at one cut are yielded once.
    """
    model = initial if initial is not None else Model()
    rng = random.Random(seed)
    for k, ev in enumerate(events):
        model.apply(ev)
        if ev.kind == "ack":
            continue
        seen: set[int] = set()
        plans = [Plan(n, m, p) for n, m, p in PLANS]
        plans += [Plan("random", "random", "random") for _ in range(randoms)]
        for plan in plans:
            tree = build(model, root_ino, plan, rng)
            key = hash(tuple(sorted(tree.items(), key=lambda kv: kv[0])))
            if key in seen:
                continue
            seen.add(key)
            yield CrashState(k + 1, plan.name, tree, list(model.acked))


def snapshot_model(root: Path) -> tuple[Model, int]:
    """A model of an existing, fully durable tree (the state before recording starts)."""
    model = Model()

    def walk(path: Path) -> int:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            d = model.dir(st.st_ino)
            for child in path.iterdir():
                ino = walk(child)
                d.entries[child.name] = (ino, child.is_dir() and not child.is_symlink())
            d.durable = dict(d.entries)
        else:
            f = model.file(st.st_ino)
            f.data = bytearray(path.read_bytes())
            f.durable = bytes(f.data)
        return st.st_ino

    return model, walk(root)


def materialize(tree: dict[str, bytes | None], root: Path) -> None:
    """Write ``tree`` below ``root`` (0700 directories, 0600 files)."""
    root.mkdir(mode=0o700, parents=True)
    for rel, content in sorted(tree.items()):
        p = root / rel
        if content is None:
            p.mkdir(mode=0o700)
        else:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
