"""unidist.cluster.remote against a real sshd: fan-out, exit codes, timeouts, copies, hostile
names. The aliases node1..node4 all reach one loopback sshd; nodedown is refused."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.cluster._sshd import Sshd
from unidist.cluster import Result, copy, parse, run, write_remote_file
from unidist.cluster.remote import resolve_targets, run_one, scp_argv, ssh_argv
from unidist.errors import ClusterFileError

CLUSTER = parse("GROUP:web\nnode1\nnode2\nGROUP:db\nnode3\nnode1\nLUMP:all\nweb\ndb\n")


def _procs_with(text: str) -> list[str]:
    """Command lines of running processes (not zombies) whose argv contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline.replace("\0", " "))
    return found


class Canary:
    """A file name that hostile input tries to create with ``touch NAME``; it must never
    appear, neither in the local working directory (a temporary one) nor in the remote home."""

    def __init__(self, workdir: Path) -> None:
        self.name = f"canary-{os.getpid()}-{time.time_ns()}"
        self.places = [workdir / self.name, Path.home() / self.name]

    def touched(self) -> bool:
        return any(p.exists() for p in self.places)


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Canary:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return Canary(work)


# ---------------------------------------------------------------------------- no ssh needed
def test_resolve_targets_groups_lists_and_order() -> None:
    assert resolve_targets("web", CLUSTER) == ["node1", "node2"]
    assert resolve_targets("all", CLUSTER) == ["node1", "node2", "node3"]
    assert resolve_targets("db,web,extra", CLUSTER) == ["node3", "node1", "node2", "extra"]
    assert resolve_targets(["x", "web", " y ", "x"], CLUSTER) == ["x", "node1", "node2", "y"]
    assert resolve_targets(None, CLUSTER) == ["node1", "node2", "node3"]
    assert resolve_targets("ops@db-1.example.com", CLUSTER) == ["ops@db-1.example.com"]
    assert resolve_targets("[::1],10.0.0.2,fe80::1", CLUSTER) == ["[::1]", "10.0.0.2", "fe80::1"]
    assert resolve_targets([], CLUSTER) == []


def test_resolve_targets_loads_cluster_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cluster"
    path.write_text("GROUP:g\nalpha\nbeta\n")
    monkeypatch.setenv("CLUSTER", str(path))
    assert resolve_targets("g") == ["alpha", "beta"]
    assert resolve_targets(None) == ["alpha", "beta"]
    monkeypatch.setenv("CLUSTER", str(tmp_path / "missing"))
    with pytest.raises(ClusterFileError):
        resolve_targets("g")


@pytest.mark.parametrize(
    "bad",
    [
        "-oProxyCommand=touch /tmp/pwned",
        "-p22",
        "-oUser@node1",
        "node1@-oProxyCommand=x",
        "node1;touch x",
        "$(touch x)",
        "`touch x`",
        "node1 node2",
        "node1\nnode2",
        "a|b",
        "",
        "user@",
        "a@b@c",
        "node1:/tmp/x",
        "[node1]",
        "[::1]:22",
    ],
)
def test_hostile_host_names_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"host|user|empty") as info:
        resolve_targets([bad], CLUSTER)
    if bad.strip():
        assert repr(bad.strip()) in str(info.value) or repr(bad) in str(info.value)
    with pytest.raises(ValueError):
        ssh_argv(bad, "true")
    with pytest.raises(ValueError):
        run_one(bad, "true")


def test_hostile_host_in_cluster_file_refused() -> None:
    cluster = parse("GROUP:g\nnode1\n-oProxyCommand=touch\n")
    with pytest.raises(ValueError, match="-oProxyCommand=touch"):
        resolve_targets("g", cluster)
    with pytest.raises(ValueError, match="-oProxyCommand=touch"):
        run(None, "true", cluster=cluster)


def test_ssh_argv_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIDIST_SSH", raising=False)
    monkeypatch.setenv("UNIDIST_SSH_OPTIONS", "-F '/etc/my ssh/config' -o User=ops")
    argv = ssh_argv("node1", ["echo", "a b", "$HOME"], connect_timeout=2.5)
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]
    assert argv[5:9] == ["-F", "/etc/my ssh/config", "-o", "User=ops"]
    assert argv[-3:] == ["--", "node1", "echo 'a b' '$HOME'"]
    assert ssh_argv("n", "uptime; df", ssh_options=[])[-3:] == ["--", "n", "uptime; df"]
    monkeypatch.setenv("UNIDIST_SSH", "/opt/ssh")
    assert ssh_argv("n", "x")[0] == "/opt/ssh"
    with pytest.raises(ValueError, match="empty"):
        ssh_argv("n", [])
    with pytest.raises(ValueError, match="empty"):
        ssh_argv("n", "  ")
    with pytest.raises(ValueError, match="connect_timeout"):
        ssh_argv("n", "x", connect_timeout=0)
    scp = scp_argv("n", ["rel:name", "-oX"], "/srv", ssh_options=[])
    assert scp[-4:] == ["--", os.path.abspath("rel:name"), os.path.abspath("-oX"), "n:/srv/"]
    assert scp_argv("n", ["f"], "/", ssh_options=[])[-1] == "n:/"
    # IPv6: bare for ssh, in brackets for scp (where a bare ":" would split host and path).
    assert ssh_argv("ops@[::1]", "x", ssh_options=[])[-2] == "ops@::1"
    assert scp_argv("ops@::1", ["f"], "/srv", ssh_options=[])[-1] == "ops@[::1]:/srv/"
    assert "BatchMode=yes" in scp


def test_bad_arguments_fail_before_any_ssh(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parallel"):
        run(["node1"], "true", parallel=0)
    with pytest.raises(ValueError, match="timeout"):
        run(["node1"], "true", timeout=-1)
    with pytest.raises(FileNotFoundError, match="nope"):
        copy(["node1"], [tmp_path / "nope"], "/tmp")
    (tmp_path / "f").write_text("x")
    for remote_dir in ["/tmp/$(touch x)", "-oProxyCommand=x", "/tmp/a b", "/tmp/`x`", "a;b", ""]:
        with pytest.raises(ValueError, match="remote directory"):
            copy(["node1"], [tmp_path / "f"], remote_dir)
    with pytest.raises(ValueError, match="path"):
        write_remote_file("node1", "", b"x")


# ---------------------------------------------------------------------------- real ssh
FAN_OUT = (
    "echo out $UNIDIST_TEST_NODE; echo err $UNIDIST_TEST_NODE >&2; "
    "case $UNIDIST_TEST_NODE in node2) exit 3;; node3) exit 255;; esac"
)


def test_fan_out_output_and_exit_codes(ssh_env: Sshd) -> None:
    cluster = parse("GROUP:nodes\nnode1\nnode2\nnode3\nnode4\nGROUP:all\nnodes\nnodedown\n")
    seen: list[Result] = []
    results = run(["nodes", "nodedown"], FAN_OUT, cluster=cluster, on_result=seen.append)
    assert list(results) == ["node1", "node2", "node3", "node4", "nodedown"]
    assert sorted(r.host for r in seen) == sorted(results)
    for host in ("node1", "node4"):
        r = results[host]
        assert (r.error, r.exit_code, r.ok) == ("ok", 0, True)
        assert (r.stdout, r.stderr) == (f"out {host}\n", f"err {host}\n")
    assert (results["node2"].error, results["node2"].exit_code) == ("failed", 3)
    assert results["node2"].stdout == "out node2\n"
    # A remote exit 255 is the command's, not an ssh failure (the start marker says it ran).
    assert (results["node3"].error, results["node3"].exit_code) == ("failed", 255)
    assert results["node3"].stderr == "err node3\n"  # the marker line is not shown
    down = results["nodedown"]
    assert (down.error, down.exit_code, down.ok, down.stdout) == ("unreachable", None, False, "")
    assert "Connection refused" in down.stderr
    assert all(r.duration > 0 for r in results.values())


def test_untracked_255_uses_ssh_message(ssh_env: Sshd) -> None:
    results = run(["node1", "nodedown"], "exit 255", track=False, parallel=2)
    assert (results["node1"].error, results["node1"].exit_code) == ("failed", 255)
    assert (results["nodedown"].error, results["nodedown"].exit_code) == ("unreachable", None)


def test_unknown_host_key_is_unreachable(ssh_env: Sshd, tmp_path: Path) -> None:
    """Host key checking stays on: a server whose key is not trusted is never logged into."""
    config = tmp_path / "ssh_config"
    config.write_text(
        Path(ssh_env.config_path).read_text().replace(str(ssh_env.dir / "known_hosts"), "/dev/null")
    )
    res = run_one("node1", "echo ran", ssh_options=["-F", str(config)])
    assert (res.error, res.exit_code, res.stdout) == ("unreachable", None, "")
    assert "Host key verification failed" in res.stderr


def test_timeout_kills_local_ssh_and_remote_command(ssh_env: Sshd) -> None:
    tag = f"{time.time_ns() % 10**6}.{os.getpid()}"  # a unique sleep argument to look for
    start = time.monotonic()
    results = run(["node1", "node2", "nodedown"], ["sleep", tag], timeout=1.5)
    elapsed = time.monotonic() - start
    for host in ("node1", "node2"):
        assert (results[host].error, results[host].exit_code) == ("timeout", None)
        assert 1.4 <= results[host].duration < 6
    assert results["nodedown"].error == "unreachable"
    assert elapsed < 20
    # The local ssh processes are gone at once (their process group was killed) ...
    assert not [c for c in _procs_with(tag) if c.startswith("ssh ")]
    # ... and the remote commands were sent SIGTERM through a second connection.
    deadline = time.monotonic() + 5
    while _procs_with(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _procs_with(tag) == []


def test_stdin_and_streamed_lines(ssh_env: Sshd) -> None:
    lines: list[tuple[str, str, str]] = []
    data = bytes(range(256)) * 1024  # every byte value
    res = run_one(
        "node2",
        "sha256sum; printf 'partial' >&2",
        stdin=data,
        on_output=lambda *item: lines.append(item),
    )
    assert res.ok, res
    assert res.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert lines == [("node2", "stdout", res.stdout.rstrip("\n")), ("node2", "stderr", "partial")]
    res = run_one("node1", "head -c 3", stdin=b"x" * 1_000_000)  # stops reading early
    assert (res.ok, res.stdout) == (True, "xxx")


def test_write_remote_file_exact_bytes_mode_and_hostile_name(
    ssh_env: Sshd, tmp_path: Path, canary: Canary
) -> None:
    name = f"we ird;$(touch {canary.name})`touch {canary.name}`'\"\n-x*.conf"
    path = tmp_path / name
    content = bytes(range(256)) + b"\xff\xfe not utf-8 \r\n"
    res = write_remote_file("node1", str(path), content, mode=0o640)
    assert res.ok, res
    assert path.read_bytes() == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # Replacing keeps the path, takes the new mode and leaves no temporary file behind.
    res = write_remote_file("node3", str(path), "héllo\n", mode=0o755)
    assert res.ok, res
    assert path.read_text() == "héllo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", name]
    assert not canary.touched()
    res = write_remote_file("node1", str(tmp_path / "no-dir" / "f"), b"x")
    assert (res.error, res.ok) == ("failed", False)
    assert write_remote_file("nodedown", str(tmp_path / "f"), b"x").error == "unreachable"


def test_copy_files_and_directories(ssh_env: Sshd, tmp_path: Path, canary: Canary) -> None:
    src = tmp_path / "src"
    src.mkdir()
    hostile = [
        "-oProxyCommand=touch " + canary.name,
        "host:path",
        f"x;$(touch {canary.name}) `touch {canary.name}`",
    ]
    files = []
    for i, name in enumerate(["plain.bin", *hostile]):
        f = src / name
        f.write_bytes(bytes([i]) * 10 + bytes(range(256)))
        f.chmod(0o750)
        files.append(f)
    tree = src / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "leaf").write_text("leaf\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    results = copy(["node1", "nodedown"], [*files, tree], str(dest))
    assert results["node1"].ok, results["node1"]
    assert (results["nodedown"].error, results["nodedown"].exit_code) == ("unreachable", None)
    for f in files:
        copied = dest / f.name
        assert copied.read_bytes() == f.read_bytes()
        assert stat.S_IMODE(copied.stat().st_mode) == 0o750
    assert (dest / "tree" / "sub" / "leaf").read_text() == "leaf\n"
    # Relative names (run from the source directory) are never read as options or hosts.
    os.chdir(src)
    results = copy(["node2"], ["host:path", "-oProxyCommand=touch " + canary.name], str(dest))
    assert results["node2"].ok, results["node2"]
    assert not canary.touched()
    missing = copy(["node2"], files[0], str(tmp_path / "no-such-dir"))  # never a file
    assert (missing["node2"].error, missing["node2"].ok) == ("failed", False)
    assert missing["node2"].exit_code not in (0, None)
    assert not (tmp_path / "no-such-dir").exists()


def test_hostile_remote_words_run_nothing(ssh_env: Sshd, canary: Canary) -> None:
    c = canary.name
    words = [f"$(touch {c})", f"`touch {c}`", f";touch {c}", f"|touch {c}", f"&&touch {c}"]
    res = run_one("node4", ["echo", *words])
    assert (res.ok, res.stdout) == (True, " ".join(words) + "\n")
    assert not canary.touched()


def test_control_master_connections_are_reused(ssh_env: Sshd) -> None:
    """With ControlMaster/ControlPersist (recommended in docs/remote.md) the background master
    may keep ssh's stderr open; results still come back as soon as each command ends."""
    sockets = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))  # socket paths must be short
    options = [
        *ssh_env.ssh_options,
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={sockets}/%C",
        "-o",
        "ControlPersist=60",
    ]
    try:
        first = run_one("node1", "echo one", ssh_options=options, timeout=30)
        assert (first.ok, first.stdout) == (True, "one\n"), first
        assert first.duration < 20  # not held until the master's ControlPersist (60 s) ends
        check = subprocess.run(
            ["ssh", *options, "-O", "check", "node1"], capture_output=True, timeout=30
        )
        assert check.returncode == 0, check.stderr  # a master is running
        results = run(["node1"], "echo two", ssh_options=options)
        assert (results["node1"].ok, results["node1"].stdout) == (True, "two\n")
    finally:
        subprocess.run(["ssh", *options, "-O", "exit", "node1"], capture_output=True, timeout=30)
        shutil.rmtree(sockets, ignore_errors=True)
