"""``unidist jobs run|status|forget`` through the real command line and a real sshd."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import unidist.log
from tests.cluster._jobs_common import recording_job, runs
from tests.cluster._sshd import Sshd
from unidist.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNIDIST_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.delenv("UNIDIST_LOG_CONSOLE", raising=False)
    monkeypatch.delenv("CLUSTER", raising=False)
    yield
    unidist.log.reset()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def jobs_file(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_table_status_and_resume(
    ssh_env: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shell-line and JSON-lines file runs over -w hosts: exit 0, a table of jobs and
    hosts; status shows the batch; running it again re-runs nothing."""
    logdir = tmp_path / "runs"
    logdir.mkdir()
    lines = ["# nightly checks", "echo plain line", ""]
    lines += [
        json.dumps({"argv": recording_job(logdir, f"rec{i}", 0), "name": f"rec{i}"})
        for i in range(3)
    ]
    path = jobs_file(tmp_path, "nightly.jobs", lines)
    url = f"file://{tmp_path / 'store'}"
    args = ["--url", url, "jobs", "run", str(path), "-w", "node1,node2", "--slots", "2"]
    code, out, err = cli(capsys, *args, "--results", str(tmp_path / "res"))
    assert code == 0, err
    assert err == ""  # no progress bar without a terminal, no log lines
    table = out.splitlines()
    assert table[0].split() == ["JOB", "STATE", "HOST", "EXIT", "TRIES", "TIME", "ERROR"]
    rows = {line.split()[0]: line.split() for line in table[1:5]}
    assert set(rows) == {"0001", "rec0", "rec1", "rec2"}
    assert all(r[1] == "done" and r[2] in {"node1", "node2"} and r[3] == "0" for r in rows.values())
    at = table.index("") + 1
    assert table[at].split() == ["HOST", "STATE", "DONE", "FAILED", "ERROR"]
    hosts = {line.split()[0]: line.split()[1:] for line in table[at + 1 : at + 3]}
    assert hosts.keys() == {"node1", "node2"}
    assert all(h[0] == "done" for h in hosts.values())
    assert sum(int(h[1]) for h in hosts.values()) == 4
    assert "batch nightly: 4 jobs, 4 done, 0 failed, 0 running, 0 pending" in out
    assert (tmp_path / "res" / "0001" / "stdout").read_text() == "plain line\n"
    assert runs(logdir)[0] == {"rec0": 1, "rec1": 1, "rec2": 1}

    code, out, _ = cli(capsys, "--url", url, "jobs", "status")
    assert code == 0
    assert out.splitlines()[0].split()[:6] == [
        "BATCH",
        "JOBS",
        "DONE",
        "FAILED",
        "RUNNING",
        "PENDING",
    ]
    assert out.splitlines()[1].split()[:6] == ["nightly", "4", "4", "0", "0", "0"]
    code, out, _ = cli(capsys, "jobs", "status", "--batch", "nightly", "--url", url, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["counts"]["done"] == 4
    assert doc["results_dir"] == str(tmp_path / "res")
    assert [j["name"] for j in doc["jobs"]] == ["0001", "rec0", "rec1", "rec2"]

    # Same command again: the batch is resumed, nothing runs twice.
    code, out, _ = cli(capsys, *args)
    assert code == 0
    assert runs(logdir)[0] == {"rec0": 1, "rec1": 1, "rec2": 1}
    assert f"results in {tmp_path / 'res'}" in out


def test_failed_job_json_and_group(
    ssh_env: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing job makes the exit code 1; --json gives the records; -g takes a group of the
    cluster file (its unreachable member goes to error, and that job runs elsewhere)."""
    cluster = tmp_path / "cluster"
    cluster.write_text("GROUP:g\nnodedown\nnode1\n")
    path = jobs_file(tmp_path, "mixed.txt", ["true", "exit 7"])
    code, out, _ = cli(
        capsys,
        "--url", f"file://{tmp_path / 'store'}", "--json",
        "jobs", "run", str(path), "-g", "g", "--file", str(cluster), "--batch", "m1",
    )  # fmt: skip
    assert code == 1
    doc = json.loads(out)
    assert doc["batch"] == "m1"
    assert doc["counts"] == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    jobs = {j["name"]: j for j in doc["jobs"]}
    assert jobs["0001"]["hosts"] == ["nodedown", "node1"]
    assert jobs["0001"]["state"] == "done"
    assert (jobs["0002"]["state"], jobs["0002"]["exit_code"]) == ("failed", 7)
    assert doc["hosts"]["nodedown"]["state"] == "error"
    assert doc["hosts"]["node1"]["state"] == "done"


def test_usage_and_errors(
    ssh_env: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors exit 2; a bad job file or unknown batch exits 1 with one line naming it;
    no reachable host leaves the jobs pending (exit 1)."""
    url = f"file://{tmp_path / 'store'}"
    path = jobs_file(tmp_path, "j.txt", ["true"])
    code, _, err = cli(capsys, "--url", url, "jobs", "run", str(path))
    assert code == 2
    assert "no hosts: give -g GROUP or -w HOST" in err
    code, _, err = cli(capsys, "--url", url, "jobs", "run", str(path), "-g", "nosuch")
    assert code == 2
    code, _, err = cli(
        capsys, "--url", url, "jobs", "run", str(path), "-w", "node1", "--slots", "0"
    )
    assert code == 2
    bad = jobs_file(tmp_path, "bad.txt", ["true", '{"argv": ["x"], "nmae": 1}'])
    code, _, err = cli(capsys, "--url", url, "jobs", "run", str(bad), "-w", "node1")
    assert code == 1
    assert f"{bad}, line 2: unknown key 'nmae'" in err
    code, _, err = cli(capsys, "--url", url, "jobs", "run", str(tmp_path / "nope"), "-w", "node1")
    assert code == 1
    assert "cannot read" in err
    code, _, err = cli(capsys, "--url", url, "jobs", "run", str(path), "-w", "-oProxyCommand=x")
    assert code == 2
    assert "'-oProxyCommand=x'" in err
    code, _, err = cli(capsys, "--url", url, "jobs", "status", "--batch", "nosuch")
    assert code == 1
    assert err == "unidist: error: no batch named 'nosuch'\n"
    code, out, _ = cli(capsys, "--url", url, "jobs", "status")
    assert code == 0
    assert out == "no batches\n"
    code, out, _ = cli(capsys, "--url", url, "jobs", "run", str(path), "-w", "nodedown")
    assert code == 1
    assert "batch j: 1 jobs, 0 done, 0 failed, 0 running, 1 pending" in out
    assert "1 job(s) still pending: no usable host was left" in out


def test_forget_and_stdin(
    ssh_env: Sshd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """forget deletes a batch's records, so the same file runs again from scratch; '-'
    reads the jobs from stdin."""
    url = f"file://{tmp_path / 'store'}"
    logdir = tmp_path / "runs"
    logdir.mkdir()
    path = jobs_file(tmp_path, "once.txt", [json.dumps(recording_job(logdir, "f", 0))])
    assert cli(capsys, "--url", url, "jobs", "run", str(path), "-w", "node1")[0] == 0
    code, out, _ = cli(capsys, "--url", url, "jobs", "forget", "once")
    assert code == 0
    assert out == "forgot batch once (1 jobs)\n"
    assert cli(capsys, "--url", url, "jobs", "status", "--batch", "once")[0] == 1
    assert cli(capsys, "--url", url, "jobs", "run", str(path), "-w", "node1")[0] == 0
    assert runs(logdir)[0] == {"f": 2}
    # '-' reads the job list from stdin (batch "stdin" unless --batch is given).
    monkeypatch.setattr("sys.stdin", io.StringIO(path.read_text()))
    code, out, _ = cli(capsys, "--url", url, "--json", "jobs", "run", "-", "-w", "node2")
    assert code == 0
    assert json.loads(out)["batch"] == "stdin"
    assert runs(logdir)[0] == {"f": 3}


def test_progress_bar_on_a_terminal(ssh_env: Sshd, tmp_path: Path) -> None:
    """With stderr on a terminal, `unidist jobs run` draws a progress bar there and clears
    it; stdout keeps the table."""
    path = jobs_file(tmp_path, "tty.txt", ["true", "true"])
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "unidist",
                "--url",
                f"file://{tmp_path / 'store'}",
                "jobs",
                "run",
                str(path),
                "-w",
                "node1,node2",
            ],
            cwd=tmp_path,
            env={**os.environ, **ssh_env.env(), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        err = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    text = err.decode()
    assert "[" + "#" * 30 + "] 2/2  2 done, 0 failed" in text
    assert text.endswith("\r\x1b[K")
    assert "batch tty: 2 jobs, 2 done" in proc.stdout.decode()
