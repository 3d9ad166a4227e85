"""``file:///path/to/dir`` — shared by every process of one host that can open the directory.

Layout (all below the data directory, created 0700; files 0600):

* ``locks/`` — lock and semaphore slots (flock, see :mod:`.locks`)
* ``counters/``, ``state/``, ``queues/``, ``members/`` — one directory per object holding its
  journal of CRC-checked records and atomically written snapshots (see :mod:`.store`); one
  operation's record may carry at most 256 MiB

Options (query string):

* ``fsync=always|batch|never`` (default ``always``): ``always`` — an operation that returned is
  on disk (fsync of the record, and of the directory after a rename); ``batch`` — fsync at most
  every ``fsync_interval`` seconds (default 0.05), a crash may lose that window; ``never`` —
  the kernel decides (a power loss may lose about 30 s; a process crash loses nothing).
* ``allow_network_fs=true``: use a directory on NFS/SMB/FUSE anyway (refused by default,
  because flock there is not reliable across hosts).

Security: the data directory and everything created below it are 0700 (directories) and
0600 (files) whatever the umask; an existing data directory that is writable by group or
others (sticky or not) or owned by another user (root included) is refused; nothing below it
is opened through a symlink (``O_NOFOLLOW``), temporary files are created ``O_EXCL``; values
are JSON, never pickle. There is no default data directory (the default backend is
``memory://``).

Guarantees: every operation is atomic across threads and processes of this host; a process
killed at any instant (``kill -9``) loses nothing acknowledged and leaves nothing half-applied;
a torn journal tail is cut at open with a warning, damage in the middle is
:class:`~unidist.errors.CorruptData` naming file and offset.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

from unidist.backends._url import OptionParser, ParsedURL, opt_bool, opt_choice, opt_float
from unidist.backends.base import Backend, Scope
from unidist.backends.file.locks import FileLocksMixin
from unidist.backends.file.store import FileStoreMixin
from unidist.errors import BackendUnavailable, InvalidURL


def _fs_type(path: Path) -> str | None:
    """Name of the network filesystem ``path`` lives on, or None for a local one."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    best: tuple[int, str] = (-1, "")
    target = str(path.resolve())
    for fields in mounts:
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fstype = fields[sep + 1]
        if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) and len(
            mount_point
        ) > best[0]:
            best = (len(mount_point), fstype)
    fstype = best[1]
    if fstype.startswith(("nfs", "cifs", "smb", "fuse", "9p", "ceph", "glusterfs", "lustre")):
        return fstype
    if fstype in {"afs", "ncpfs", "gpfs", "beegfs", "sshfs"}:
        return fstype
    return None


class FileBackend(FileLocksMixin, FileStoreMixin, Backend):
    """Processes of one host sharing a directory. See the module docs for options."""

    schemes: ClassVar[tuple[str, ...]] = ("file",)
    options: ClassVar[dict[str, OptionParser]] = {
        "fsync": opt_choice("always", "batch", "never"),
        "fsync_interval": opt_float,
        "allow_network_fs": opt_bool,
    }
    scope: ClassVar[Scope] = "host"

    def __init__(self, parsed: ParsedURL) -> None:
        super().__init__(parsed)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidURL(
                f"file:// URLs name a local directory; got host {parsed.netloc!r} in {parsed.url!r}"
                " (use file:///absolute/path)"
            )
        raw = unquote(parsed.path)
        if not raw or not raw.startswith("/"):
            raise InvalidURL(f"file:// URL needs an absolute directory path, got {parsed.url!r}")
        self.root = Path(raw)
        self.fsync_mode: str = parsed.options.get("fsync", "always")
        self.fsync_interval: float = parsed.options.get("fsync_interval", 0.05)
        self._prepare_root(allow_network_fs=parsed.options.get("allow_network_fs", False))
        self._init_locks()
        self._init_store()

    def _prepare_root(self, *, allow_network_fs: bool) -> None:
        root = self.root
        try:
            if root.exists() and not root.is_dir():
                raise BackendUnavailable(f"{root} exists and is not a directory", url=self.url)
            # every directory we create, the missing parents included, is 0700 whatever
            # the umask (Path.mkdir would give parents the umask's default mode)
            for missing in [*reversed([p for p in root.parents if not p.exists()]), root]:
                try:
                    missing.mkdir(mode=0o700)
                except FileExistsError:
                    continue
                fd = os.open(missing, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    os.fchmod(fd, 0o700)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot create data directory {root}: {exc.strerror}", url=self.url
            ) from exc
        try:
            st = root.stat()
        except OSError as exc:
            raise BackendUnavailable(f"cannot stat {root}: {exc.strerror}", url=self.url) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise BackendUnavailable(f"{root} exists and is not a directory", url=self.url)
        if st.st_uid != os.geteuid():
            raise BackendUnavailable(
                f"data directory {root} is owned by uid {st.st_uid}, not by this user "
                f"(uid {os.geteuid()}); refusing to use it",
                url=self.url,
            )
        # no exception for sticky directories like /tmp: others could plant entries there
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise BackendUnavailable(
                f"data directory {root} is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 700 {root}",
                url=self.url,
            )
        if not os.access(root, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"data directory {root} is not writable", url=self.url)
        fstype = _fs_type(root)
        if fstype is not None and not allow_network_fs:
            raise BackendUnavailable(
                f"data directory {root} is on a {fstype} filesystem, where file locks are not "
                "reliable; use a local directory, or add ?allow_network_fs=true to accept the risk",
                url=self.url,
            )

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"data directory {self.root} is not writable", url=self.url)

    def close(self) -> None:
        self._close_locks()
        self._close_store()
