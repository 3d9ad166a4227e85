"""``unidist dsh`` and ``unidist pcp`` against a real sshd (node1..node4 reach it, nodedown is
refused): prefixed output, JSON, summary line, exit codes, progress on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster._sshd import Sshd
from unidist.cli.main import main

FAIL_ON_NODE2 = "echo out $UNIDIST_TEST_NODE; echo err >&2; [ $UNIDIST_TEST_NODE != node2 ]"


@pytest.fixture
def cluster(ssh_env: Sshd, ssh_cluster_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLUSTER", str(ssh_cluster_file))
    return ssh_cluster_file


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dsh_prefixes_output_and_exits_0(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "dsh", "-g", "nodes", "--", "echo hi $UNIDIST_TEST_NODE")
    assert code == 0
    assert sorted(out.splitlines()) == [f"node{i}: hi node{i}" for i in range(1, 5)]
    assert err == "dsh: 4 hosts: 4 ok, 0 failed, 0 timeout, 0 unreachable\n"
    assert "\r" not in err  # no progress display when stderr is not a terminal


def test_dsh_failed_and_unreachable_hosts(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "dsh", "-g", "mixed", "--parallel", "2", "--", FAIL_ON_NODE2)
    assert code == 4  # a command failed somewhere
    assert sorted(out.splitlines()) == [f"node{i}: out node{i}" for i in range(1, 5)]
    lines = err.splitlines()
    assert sorted(line for line in lines if line.endswith(": err")) == [
        f"node{i}: err" for i in range(1, 5)
    ]
    assert any(line.startswith("nodedown: ssh: connect to host") for line in lines)
    assert lines[-1] == (
        "dsh: 5 hosts: 3 ok, 1 failed (node2), 0 timeout, 1 unreachable (nodedown)"
    )
    code, _, err = cli(capsys, "dsh", "-w", "node1", "-w", "nodedown", "--", "true")
    assert code == 5  # nothing failed, but a host was unreachable
    assert err.splitlines()[-1].endswith("1 ok, 0 failed, 0 timeout, 1 unreachable (nodedown)")


def test_dsh_json(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--json", "dsh", "-w", "node2,node3,nodedown", "--", FAIL_ON_NODE2)
    assert code == 4
    results = json.loads(out)
    assert [r["host"] for r in results] == ["node2", "node3", "nodedown"]
    by_host = {r["host"]: r for r in results}
    assert by_host["node2"] == {**by_host["node2"], "error": "failed", "exit_code": 1}
    assert by_host["node3"]["stdout"] == "out node3\n"
    assert (by_host["node3"]["error"], by_host["node3"]["stderr"]) == ("ok", "err\n")
    assert (by_host["nodedown"]["error"], by_host["nodedown"]["exit_code"]) == ("unreachable", None)
    assert set(by_host["node3"]) == {"host", "exit_code", "stdout", "stderr", "duration", "error"}
    assert err.startswith("dsh: 3 hosts: 1 ok, 1 failed (node2)")


def test_dsh_words_are_exact(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several CMD words arrive as exact words; one CMD word is a shell command line."""
    code, out, _ = cli(
        capsys, "dsh", "-w", "node1", "--", "printf", "%s|", "a  b", "$HOME", "*", "-x", ";"
    )
    assert (code, out) == (0, "node1: a  b|$HOME|*|-x|;|\n")
    code, out, _ = cli(capsys, "dsh", "-w", "node1", "--", "echo $UNIDIST_TEST_NODE | tr n N")
    assert (code, out) == (0, "node1: Node1\n")


def test_dsh_timeout(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    code, _, err = cli(capsys, "dsh", "-w", "node1", "--timeout", "1", "--", "sleep 30")
    assert code == 4
    assert err.splitlines()[-1] == "dsh: 1 host: 0 ok, 0 failed, 1 timeout (node1), 0 unreachable"
    assert time.monotonic() - start < 15


@pytest.mark.parametrize(
    "argv",
    [
        ["dsh", "-w", "-oProxyCommand=touch CANARY", "--", "true"],
        ["dsh", "-w", "node1;touch CANARY", "--", "true"],
        ["dsh", "-w", "$(touch CANARY)", "--", "true"],
        ["dsh", "-w", "node1,,node2", "--", "true"],
        ["dsh", "-g", "no-such-group", "--", "true"],
        ["dsh", "--timeout", "0", "-w", "node1", "--", "true"],
        ["dsh", "-w", "node1"],
        ["pcp", "-w", "node1", "FILE", "/tmp/$(touch CANARY)"],
        ["pcp", "-w", "node1", "FILE", "-oProxyCommand=touch CANARY"],
        ["pcp", "-w", "-oProxyCommand=touch CANARY", "FILE", "/tmp"],
    ],
)
def test_usage_errors_run_nothing(
    ssh_env: Sshd,
    ssh_cluster_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLUSTER", str(ssh_cluster_file))
    (tmp_path / "FILE").write_text("x")
    code, out, err = cli(capsys, *argv)
    assert code == 2, err
    assert out == ""
    assert not (tmp_path / "CANARY").exists()
    assert not (Path.home() / "CANARY").exists()


def test_dsh_needs_hosts_without_cluster_file(
    ssh_env: Sshd, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLUSTER", raising=False)
    code, _, err = cli(capsys, "dsh", "--", "true")
    assert code == 2
    assert "-g GROUP or -w" in err


def test_pcp(cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "app.conf"
    src.write_bytes(b"key = value\n\x00\xff")
    src.chmod(0o751)
    dest = tmp_path / "dest"
    dest.mkdir()
    code, out, err = cli(capsys, "pcp", "-w", "node1,nodedown", str(src), str(dest))
    assert code == 5
    assert out == ""
    assert (dest / "app.conf").read_bytes() == src.read_bytes()
    assert oct((dest / "app.conf").stat().st_mode & 0o7777) == oct(0o751)
    assert any(line.startswith("nodedown: ssh: connect to host") for line in err.splitlines())
    assert err.splitlines()[-1] == (
        "pcp: 2 hosts: 1 ok, 0 failed, 0 timeout, 1 unreachable (nodedown)"
    )
    code, out, _ = cli(capsys, "pcp", "--json", "-w", "node2", str(src), str(tmp_path / "nope"))
    assert code == 4
    [result] = json.loads(out)
    assert (result["host"], result["error"]) == ("node2", "failed")
    assert result["stderr"]


def test_progress_on_a_terminal(cluster: Path) -> None:
    """With stderr on a terminal, a status line shows how many hosts finished."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unidist", "dsh", "-g", "pair", "--", "sleep 2; echo done"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert sorted(out.decode().splitlines()) == ["node1: done", "node2: done"]
    assert "[0/2] running" in shown
    assert "\r\x1b[K" in shown
    assert shown.rstrip().endswith("dsh: 2 hosts: 2 ok, 0 failed, 0 timeout, 0 unreachable")


def test_interrupt_kills_every_ssh(cluster: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops dsh with 130 and leaves no ssh behind."""
    tag = f"{time.time_ns() % 10**6}.{os.getpid()}"  # a unique sleep argument to look for
    proc = subprocess.Popen(
        [sys.executable, "-m", "unidist", "dsh", "-g", "pair", "--", "sleep", tag],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while len(_ssh_with(tag)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_ssh_with(tag)) == 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert _ssh_with(tag) == []


def _ssh_with(text: str) -> list[int]:
    """Local ssh processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"ssh" and text.encode() in b" ".join(argv):
            found.append(int(entry))
    return found


def test_w_names_hosts_even_when_a_group_has_that_name(
    ssh_env: Sshd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "cluster"
    path.write_text("GROUP:node3\nnode1\nnode2\n")
    monkeypatch.setenv("CLUSTER", str(path))
    code, out, _ = cli(capsys, "dsh", "-w", "node3", "--", "echo $UNIDIST_TEST_NODE")
    assert (code, out) == (0, "node3: node3\n")
    code, out, _ = cli(capsys, "dsh", "-g", "node3", "--", "echo $UNIDIST_TEST_NODE")
    assert (code, sorted(out.splitlines())) == (0, ["node1: node1", "node2: node2"])
    monkeypatch.delenv("CLUSTER")
    code, _, err = cli(capsys, "dsh", "-g", "node3", "--", "true")
    assert code == 2
    assert "-g needs a cluster file" in err
