"""RELIABILITY.md X5: a helper daemon's socket is private to its user.

The clinit daemon's socket must sit in a 0700 directory owned by the daemon's user, be mode
0600 itself, and a second UID must not get through. The test runs as root and forks children
that drop to ``nobody`` before they try to connect; three layers are checked one after the
other by loosening the one in front:

1. as deployed: the 0700 directory stops ``nobody`` (EACCES);
2. directory loosened to 0711: the 0600 socket still stops it (EACCES);
3. socket loosened to 0666 as well: the connection opens, but the daemon checks the peer's
   credentials and answers "permission denied" without acting.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._report import Result, count, seed
from unidist.cluster import clinit
from unidist.cluster._clinit_sock import secure_dir
from unidist.errors import UnidistError


def as_nobody(sock: Path) -> dict[str, Any]:
    """Fork a child that becomes ``nobody`` and asks ``sock`` for the status; return what
    happened: ``{"errno": N}`` when connect failed, else ``{"answer": ...}``."""
    nobody = pwd.getpwnam("nobody")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        result: dict[str, Any]
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(5)
                try:
                    conn.connect(str(sock))
                except OSError as exc:
                    result = {"errno": exc.errno}
                else:
                    # The daemon may answer and close before reading a refused peer.
                    try:
                        conn.sendall(b'{"op": "level", "group": "g", "level": "1"}\n')
                    except BrokenPipeError:
                        pass
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    result = {"answer": json.loads(data or b"null")}
            result["uid"] = os.getuid()
        except BaseException as exc:  # report, never return into pytest in the child
            result = {"error": repr(exc)}
        try:
            os.write(wfd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory ``nobody`` may traverse (0711), so only the daemon's own directory and
    socket can stop it (pytest's tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="unidist-x5-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_x5_socket_private_to_the_daemon_user(base: Path) -> None:
    """The socket dir is 0700 and the socket 0600, owned by the daemon's user; another UID
    gets EACCES, and even through loosened modes the daemon refuses it."""
    rounds = count(ci=3, soak=100)
    result = Result("X5", "none", seed(), params={"rounds": rounds}, path=str(base))
    cltab = base / "cltab"
    cltab.write_text("g:1:t:once:sleep 60\n")
    os.chmod(cltab, 0o644)
    sock = base / "run" / "clinit.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("UNIDIST_URL", "CLUSTER")}
    env["UNIDIST_LOG_DIR"] = str(base / "log")
    argv = [sys.executable, "-m", "unidist", "clinit", "--daemon", "--cltab", str(cltab)]
    with open(base / "daemon.out", "wb") as out:
        daemon = subprocess.Popen(
            [*argv, "--socket", str(sock), "--grace", "1"], stdout=out, stderr=out, env=env
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                clinit.status(sock)
                break
            except (UnidistError, OSError):
                assert daemon.poll() is None, (base / "daemon.out").read_text()
                assert time.monotonic() < deadline, "daemon socket never came up"
                time.sleep(0.05)

        dir_info, sock_info = os.stat(sock.parent), os.lstat(sock)
        assert stat.S_IMODE(dir_info.st_mode) == 0o700
        assert stat.S_ISSOCK(sock_info.st_mode)
        assert stat.S_IMODE(sock_info.st_mode) == 0o600
        assert dir_info.st_uid == sock_info.st_uid == os.geteuid()
        for name in ("clinit.status", "clinit.status.json", "clinit.sock.lock"):
            assert stat.S_IMODE(os.stat(sock.parent / name).st_mode) == 0o600, name
        result.extra.update(dir_mode="0700", socket_mode="0600")

        layers = [
            ("dir", None, None),
            ("socket", 0o711, None),
            ("peercred", 0o711, 0o666),
        ]
        for name, dir_mode, sock_mode in layers:
            if dir_mode is not None:
                os.chmod(sock.parent, dir_mode)
            if sock_mode is not None:
                os.chmod(sock, sock_mode)
            for _ in range(rounds):
                result.attempted += 1
                got = as_nobody(sock)
                assert "error" not in got, got
                assert got.get("uid") == pwd.getpwnam("nobody").pw_uid
                if name in ("dir", "socket"):
                    refused = got.get("errno") == 13  # EACCES
                else:
                    refused = got.get("answer") == {"ok": False, "error": "permission denied"}
                if refused:
                    result.ok += 1
                else:
                    result.unexpected += 1
                    result.violations += 1
                    result.extra[f"{name}_got"] = got
        os.chmod(sock.parent, 0o700)
        os.chmod(sock, 0o600)
        # Nothing a refused peer sent was acted on.
        assert clinit.status(sock)["groups"]["g"]["level"] is None
        result.extra["peer_check"] = "SO_PEERCRED"
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    result.emit()
    assert result.violations == 0, result.block()
    assert result.ok == result.attempted == 3 * rounds


def test_x5_socket_directory_checks(base: Path) -> None:
    """The daemon tightens its own directory to 0700 and refuses one owned by another user."""
    mine = base / "mine"
    mine.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    secure_dir(mine)
    assert stat.S_IMODE(os.stat(mine).st_mode) == 0o700
    theirs = base / "theirs"
    theirs.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(UnidistError, match="owned by uid"):
        secure_dir(theirs)
    target = base / "link"
    target.symlink_to(mine)
    with pytest.raises(UnidistError, match="not a directory"):
        secure_dir(target)
