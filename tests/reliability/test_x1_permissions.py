"""X1: permissions of the file backend (RELIABILITY.md 3.8).

* With umask 000, everything the backend creates -- the data directory and its missing
  parents, object directories, journals, snapshots after rotations, the lock files of locks
  and semaphores, group-commit markers, repair quarantine files -- is 0700 (directories) or
  0600 (files).
* An existing data directory that is group- or world-writable (sticky or not) or owned by
  another user is refused with a message saying why.
* A symlink planted at a journal, snapshot, lock, marker or temporary-file path is never
  followed: the operation refuses or replaces the link, and the link's target is untouched.
* There is no default data path at all, let alone under /tmp: the default backend is
  ``memory://``, a ``file://`` URL without a path is refused, and no path under /tmp,
  /var/tmp or /dev/shm is written into the package.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import unidist
from tests.backends.test_file_journal import journal_of, record_offsets
from tests.reliability._file_common import open_file_backend
from tests.reliability._report import Result, seed
from unidist.backends import DEFAULT_URL
from unidist.backends.file import FileBackend, _io
from unidist.errors import BackendUnavailable, CorruptData, InvalidURL

PACKAGE = Path(unidist.__file__).parent


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(root.parent))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def test_x1_modes_under_umask_000(tmp_path: Path) -> None:
    s = seed()
    old = os.umask(0)
    try:
        root = tmp_path / "new-parent" / "deeper" / "data"
        be = open_file_backend(root, compact=3)
        for i in range(8):
            be.counter_add("c", 1, "r")
            be.state_set("b", f"k{i}", str(i))
            be.queue_put("q", f"m{i}", str(i), 0.0, 0)
        be.member_heartbeat("g", "m1", {}, 30.0)
        with unidist.SharedLock("L", backend=be), unidist.SharedSemaphore("S", 2, backend=be):
            pass
        be._cfg.compact_records = 1000
        for i in range(3):
            be.state_set("b", f"after{i}", "1")
        be.close()
        journal = journal_of(root, "state", "b")
        data = bytearray(journal.read_bytes())
        data[record_offsets(journal)[1] + 20] ^= 0x10  # damage in the middle: repair quarantines
        journal.write_bytes(bytes(data))
        be = open_file_backend(root)
        reports = be.repair()
        assert [r.quarantined for r in reports] == [1]
        be.close()
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "new-parent")
    modes["new-parent"] = stat.S_IMODE((tmp_path / "new-parent").stat().st_mode)
    names = {Path(k).name for k in modes}
    assert {"lock", "sync", "snap.2", "data", "deeper"} <= names
    assert any(n.startswith("quarantine.") for n in names)
    bad = {
        k: oct(m)
        for k, m in modes.items()
        if m != (0o700 if (tmp_path / k).is_dir() and not (tmp_path / k).is_symlink() else 0o600)
    }
    result = Result("X1-modes", "file", s, path=str(tmp_path))
    result.attempted = len(modes)
    result.ok = len(modes) - len(bad)
    result.violations = len(bad)
    result.extra = {"entries": len(modes), "wrong_modes": bad or "none"}
    result.emit()
    assert bad == {}


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777, 0o720, 0o702])
def test_x1_group_or_world_writable_data_dir_is_refused(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "d"
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(BackendUnavailable, match=r"writable by group or others.*chmod 700"):
        FileBackend.from_url(f"file://{root}")
    assert list(root.iterdir()) == []


def _connect_as_nobody(url: str, conn: object) -> None:
    try:
        os.setgid(65534)
        os.setuid(65534)
        try:
            FileBackend.from_url(url)
        except BackendUnavailable as exc:
            conn.send(str(exc))  # type: ignore[attr-defined]
        else:
            conn.send("accepted")  # type: ignore[attr-defined]
    finally:
        os._exit(0)


def test_x1_foreign_owned_data_dir_is_refused(tmp_path: Path) -> None:
    """Another user's directory is refused, whoever we are (root included)."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(BackendUnavailable, match="owned by uid 65534"):
        FileBackend.from_url(f"file://{theirs}")
    assert list(theirs.iterdir()) == []
    # and the other way round: an unprivileged process meets a root-owned directory
    # (made where that process can reach it)
    outer = Path(tempfile.mkdtemp(prefix="unidist-x1-"))
    try:
        outer.chmod(0o755)
        mine = outer / "mine"
        mine.mkdir(mode=0o755)
        mine.chmod(0o755)
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_connect_as_nobody, args=(f"file://{mine}", child))
        p.start()
        child.close()
        assert parent.poll(30)
        answer = parent.recv()
        p.join(10)
    finally:
        shutil.rmtree(outer)
    assert "owned by uid 0" in answer


def test_x1_planted_symlinks_are_not_followed(tmp_path: Path) -> None:
    s = seed()
    base = tmp_path / "base"
    be = open_file_backend(base, compact=3)
    for i in range(4):
        be.counter_add("c", 1, "r")
    be.close()
    assert {"journal.2", "snap.2"} <= {p.name for p in (base / "counters" / "c").iterdir()}
    victim = tmp_path / "victim"
    outcomes: dict[str, str] = {}
    for name in ("journal.2", "snap.2", "lock", "sync", "journal.3", "snap.3"):
        root = tmp_path / f"case-{name}"
        shutil.copytree(base, root, symlinks=True)
        d = root / "counters" / "c"
        victim.write_bytes(b"precious")
        target = d / name
        if target.exists():
            target.unlink()
        target.symlink_to(victim)
        be = open_file_backend(root, compact=3)
        try:
            for _ in range(4):
                be.counter_add("c", 1, "r")
            outcomes[name] = "replaced" if not target.is_symlink() else "ignored"
        except BackendUnavailable as exc:
            outcomes[name] = "refused: " + ("symlink" if "symlink" in str(exc) else str(exc))
        except CorruptData:  # a journal of a generation that does not exist yet
            outcomes[name] = "refused: corrupt"
        finally:
            be.close()
        assert victim.read_bytes() == b"precious", name
        assert outcomes[name] in ("replaced", "ignored", "refused: symlink", "refused: corrupt"), (
            outcomes[name]
        )
    d = base / "counters" / "c"
    # a symlink at the (normally random) temporary-file name: O_EXCL|O_NOFOLLOW refuses it
    victim.write_bytes(b"precious")
    fixed = "snap.7.tmp.planted"
    (d / fixed).symlink_to(victim)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    real = _io.tmp_name
    try:
        _io.tmp_name = lambda final: fixed  # type: ignore[assignment]
        with pytest.raises(OSError):  # FileExistsError
            _io.atomic_write(dfd, "snap.7", b"data", durable=True)
    finally:
        _io.tmp_name = real  # type: ignore[assignment]
        os.close(dfd)
    outcomes["tmp"] = "refused"
    assert victim.read_bytes() == b"precious"
    assert not (d / "snap.7").exists()
    result = Result("X1-symlinks", "file", s, path=str(tmp_path))
    result.attempted = result.ok = len(outcomes)
    result.extra = {"outcomes": outcomes}
    result.emit()


def test_x1_no_default_path_under_tmp() -> None:
    assert DEFAULT_URL == "memory://"
    with pytest.raises(InvalidURL):
        FileBackend.from_url("file://")
    with pytest.raises(InvalidURL):
        FileBackend.from_url("file://relative/dir")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and node.value.startswith(("/tmp", "/var/tmp", "/dev/shm"))
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert offenders == []
