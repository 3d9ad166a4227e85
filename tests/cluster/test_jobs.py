"""JobManager over a real sshd: many jobs on few hosts, a host failing midway, slots, results,
kill -9 of the manager and resume, and the job-list builders."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import unidist
import unidist.log
from tests.cluster._jobs_common import failing_config, max_concurrency, recording_job, runs
from tests.cluster._sshd import Sshd
from unidist.backends.base import Backend
from unidist.cli.main import main
from unidist.cluster.jobs import (
    BatchMismatch,
    JobEvent,
    JobManager,
    JobSpec,
    batch_status,
    expand,
    list_batches,
    parse_jobs,
    product_jobs,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The ``jobs`` track goes to files under ``tmp_path/log`` only; default results
    directories land under ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "log"
    monkeypatch.setenv("UNIDIST_LOG_DIR", str(d))
    monkeypatch.setenv("UNIDIST_LOG_CONSOLE", "off")
    unidist.log.reset()
    yield d
    unidist.log.reset()


def file_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


# ---------------------------------------------------------------------------- builders
def test_jobspec_validation() -> None:
    """Bad specs are refused with a message naming what is wrong."""
    with pytest.raises(ValueError, match="empty"):
        JobSpec([])
    with pytest.raises(ValueError, match="empty"):
        JobSpec("   ")
    with pytest.raises(ValueError, match="repeat"):
        JobSpec(["true"], repeat=0)
    with pytest.raises(ValueError, match="job name"):
        JobSpec(["true"], name="../x")
    with pytest.raises(TypeError, match="str"):
        JobSpec(["echo", 3])  # type: ignore[list-item]
    spec = JobSpec(("echo", "a b"), files=[Path("/etc/hostname")], name="e")
    assert spec.argv == ("echo", "a b")
    assert spec.files == ("/etc/hostname",)
    assert spec.to_json() == {"argv": ["echo", "a b"], "files": ["/etc/hostname"], "name": "e"}


def test_expand_names_repeat_and_duplicates() -> None:
    """Unnamed jobs get their position, repeat makes NAME.1..N, duplicate names are refused."""
    jobs = expand([["a"], JobSpec("b c", name="bee", repeat=3), "d"])
    assert [j.name for j in jobs] == ["0001", "bee.1", "bee.2", "bee.3", "0003"]
    assert jobs[1].argv == "b c"
    assert [j.index for j in jobs] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="'x'"):
        expand([JobSpec("a", name="x"), JobSpec("b", name="x")])


def test_parse_jobs_lines_and_json_lines() -> None:
    """Shell lines, JSON objects and argv lists; comments and blanks skipped; shell lines
    that start with [ or { stay shell lines."""
    text = (
        "# a comment\n"
        "echo hello | wc -c\n"
        "\n"
        '{"argv": ["printf", "%s\\n", "a b"], "name": "pf", "files": ["x.txt"]}\n'
        '["ls", "-l"]\n'
        '{"argv": "uptime", "repeat": 2}\n'
        "[ -f /etc/passwd ] && echo yes\n"
        "{ echo a; echo b; } | wc -l\n"
    )
    specs = parse_jobs(text)
    assert specs == [
        JobSpec("echo hello | wc -c"),
        JobSpec(["printf", "%s\n", "a b"], files=["x.txt"], name="pf"),
        JobSpec(["ls", "-l"]),
        JobSpec("uptime", repeat=2),
        JobSpec("[ -f /etc/passwd ] && echo yes"),
        JobSpec("{ echo a; echo b; } | wc -l"),
    ]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"argv": ["a"], "nmae": "x"}', "unknown key 'nmae'"),
        ('{"argv": ["a"]', "not valid JSON"),
        ('["ls", "-l"', "not valid JSON"),
        ('{"name": "x"}', 'needs "argv"'),
        ('{"argv": 5}', '"argv" must be'),
        ('{"argv": ["a"], "files": "f"}', '"files" must be'),
        ('{"argv": ["a"], "name": "a b"}', "job name"),
        ("[]", "must not be empty"),
    ],
)
def test_parse_jobs_errors_name_the_line(line: str, words: str) -> None:
    """A bad line is a ValueError naming the source and line number."""
    with pytest.raises(ValueError, match=r"jobs\.txt, line 3") as info:
        parse_jobs(f"true\n# c\n{line}\n", source="jobs.txt")
    assert words in str(info.value)


def test_product_jobs() -> None:
    """One job per combination, placeholders filled in argv, name and files."""
    specs = product_jobs(
        ["sim", "--seed={seed}", "--size={size}"],
        name="sim-{size}-{seed}",
        files=["in-{size}.dat"],
        seed=range(2),
        size=["s", "l"],
    )
    assert [s.name for s in specs] == ["sim-s-0", "sim-l-0", "sim-s-1", "sim-l-1"]
    assert specs[1].argv == ("sim", "--seed=0", "--size=l")
    assert specs[1].files == ("in-l.dat",)
    assert product_jobs("echo {x}", x=[1])[0].argv == "echo 1"
    with pytest.raises(ValueError, match="placeholder"):
        product_jobs(["echo", "{y}"], x=[1])
    with pytest.raises(ValueError, match="at least one"):
        product_jobs(["echo"])


def test_manager_validation(tmp_path: Path) -> None:
    """Bad manager arguments are refused before anything runs."""
    url = file_url(tmp_path)
    with pytest.raises(ValueError, match="slots"):
        JobManager(["node1"], backend=url, slots=0)
    with pytest.raises(ValueError, match="max_retries"):
        JobManager(["node1"], backend=url, max_retries=-1)
    with pytest.raises(ValueError, match="at least one"):
        JobManager([], backend=url)
    with pytest.raises(ValueError, match="'-oProxyCommand=x'"):
        JobManager(["-oProxyCommand=x"], backend=url)
    with pytest.raises(unidist.InvalidName):
        JobManager(["node1"], backend=url, batch="a/b")


# ---------------------------------------------------------------------------- running
def test_forty_jobs_four_hosts_one_fails_midway(sshd: Sshd, tmp_path: Path, log_dir: Path) -> None:
    """40 jobs over node1..node4 with 2 slots each; node3 starts refusing connections after
    its third job: every job completes exactly once, node3 ends in error and its job was
    retried elsewhere, at most 2 jobs ran at once per host, and the jobs track has the
    events."""
    logdir = tmp_path / "runs"
    logdir.mkdir()
    flag = tmp_path / "node3-down"
    config = failing_config(sshd.config_path, sshd.down_port, flag, tmp_path / "ssh_config")
    done_on: dict[str, int] = {}
    events: list[JobEvent] = []

    def on_event(ev: JobEvent) -> None:
        events.append(ev)
        if ev.kind == "done" and ev.host is not None:
            done_on[ev.host] = done_on.get(ev.host, 0) + 1
            if ev.host == "node3" and done_on["node3"] == 3:
                flag.touch()

    jobs = [
        JobSpec(recording_job(logdir, f"j{i:02d}", 0.1, peers=2), name=f"j{i:02d}")
        for i in range(40)
    ]
    results = tmp_path / "results"
    manager = JobManager(
        ["node1", "node2", "node3", "node4"],
        backend=file_url(tmp_path),
        batch="forty",
        slots=2,
        results_dir=results,
        ssh_options=["-F", str(config)],
        on_event=on_event,
    )
    status = manager.run(jobs)

    assert status.counts == {"pending": 0, "running": 0, "done": 40, "failed": 0}
    assert status.ok
    assert status.finished
    starts, ends = runs(logdir)
    assert starts == ends
    assert sorted(starts) == [f"j{i:02d}" for i in range(40)]
    assert set(starts.values()) == {1}, "a job ran twice"

    assert manager.host_states == {
        "node1": "done",
        "node2": "done",
        "node3": "error",
        "node4": "done",
    }
    assert status.hosts["node3"]["state"] == "error"
    assert "Connection refused" in status.hosts["node3"]["error"]
    retried = [r for r in status.jobs.values() if r["attempts"] > 1]
    assert retried, "no job was retried after node3 failed"
    for rec in retried:
        assert rec["hosts"][0] == "node3"
        assert rec["host"] != "node3"
        assert rec["state"] == "done"
    assert done_on.get("node3", 0) >= 3
    most = max_concurrency(logdir)
    assert all(n <= 2 for n in most.values()), f"more than 2 jobs at once on a host: {most}"
    assert max(most.values()) == 2, most  # the second slot was used

    first = [e.job for e in events if e.kind == "launch" and e.attempt == 1]
    assert first == [f"j{i:02d}" for i in range(40)], "jobs did not start in batch order"
    kinds = [e.kind for e in events]
    assert kinds.count("done") == 40
    assert kinds.count("retry") == len(retried)
    assert kinds.count("launch") == 40 + len(retried)
    track = [json.loads(line) for line in (log_dir / "jobs.log").read_text().splitlines()]
    names = [r["event"] for r in track]
    assert names.count("job_done") == 40
    assert names.count("job_launch") == 40 + len(retried)
    assert all(r["batch"] == "forty" for r in track)
    err = [r for r in track if r["event"] == "host_state" and r["host_state"] == "error"]
    assert err
    assert err[0]["job_host"] == "node3"
    assert err[0]["level"] == "warning"

    # Per-job results: stdout/stderr of the job (the start marker removed), result.json.
    assert sorted(p.name for p in results.iterdir()) == sorted(starts)
    one = results / retried[0]["name"]
    assert sorted(p.name for p in one.iterdir()) == [
        "attempt-1",
        "attempt-2",
        "result.json",
        "stderr",
        "stdout",
    ]
    name, host = retried[0]["name"], retried[0]["host"]
    assert (one / "stdout").read_text() == f"out {name} {name} {host}\n"
    assert (one / "stderr").read_text() == f"err {name}\n"
    assert "Connection refused" in (one / "attempt-1" / "stderr").read_text()
    result = json.loads((one / "result.json").read_text())
    assert result["state"] == "done"
    assert result["exit_code"] == 0
    assert result["attempts"] == 2
    assert result["hosts"] == ["node3", host]
    assert result["batch"] == "forty"

    assert "forty" in list_batches(file_url(tmp_path))
    assert batch_status("forty", file_url(tmp_path)).counts["done"] == 40


def test_failures_files_and_output(ssh_env: Sshd, tmp_path: Path, log_dir: Path) -> None:
    """Exit codes, a copied input file, argv quoting, a shell command line; the results
    directory keeps what each job wrote."""
    data = tmp_path / "input data.txt"
    data.write_text("payload\n")
    jobs = [
        JobSpec(["printf", "%s|", "a b", "$(x)", ";"], name="quoted"),
        JobSpec("echo to-err >&2; exit 3", name="three"),
        JobSpec(["sh", "-c", "exit 255"], name="twofivefive"),
        JobSpec(["cat", "input data.txt"], files=[data], name="withfile"),
    ]
    results = tmp_path / "results"
    manager = JobManager(
        ["node1", "node2"],
        backend=file_url(tmp_path),
        batch="mixed",
        slots=2,
        results_dir=results,
    )
    status = manager.run(jobs)
    recs = status.jobs
    assert [recs[n]["state"] for n in recs] == ["done", "failed", "failed", "done"], recs
    assert (results / "quoted" / "stdout").read_text() == "a b|$(x)|;|"
    assert recs["three"]["exit_code"] == 3
    assert recs["three"]["error"] == "failed"
    assert (results / "three" / "stderr").read_text() == "to-err\n"
    # The command's own 255 is a failure, not an unreachable host.
    assert recs["twofivefive"]["exit_code"] == 255
    assert recs["twofivefive"]["attempts"] == 1
    assert (results / "withfile" / "stdout").read_text() == "payload\n"
    assert set(manager.host_states.values()) == {"done"}
    assert not status.ok
    assert status.finished


def test_unreachable_hosts_bounded_retries(
    sshd: Sshd, tmp_path: Path, log_dir: Path, backend: Backend
) -> None:
    """On every backend: a job whose hosts all refuse connections fails after max_retries
    retries; with no usable host left the manager returns and the rest stays pending for a
    later manager, which finishes the batch."""
    config = failing_config(sshd.config_path, sshd.down_port, tmp_path / "x", tmp_path / "cfg")
    opts = ["-F", str(config)]
    url = backend
    prefix = f"t{os.getpid()}-{time.monotonic_ns()}-"
    manager = JobManager(
        ["nodedown", "down2", "down3"],
        backend=url,
        batch=prefix + "down",
        max_retries=1,
        ssh_options=opts,
        results_dir=tmp_path / "r",
    )
    status = manager.run([JobSpec(["true"], name="only")])
    rec = status.jobs["only"]
    assert rec["state"] == "failed"
    assert rec["error"] == "unreachable"
    assert rec["attempts"] == 2
    assert len(set(rec["hosts"])) == 2
    result = json.loads((tmp_path / "r" / "only" / "result.json").read_text())
    assert (result["state"], result["error"], result["attempts"]) == ("failed", "unreachable", 2)
    assert "Connection refused" in (tmp_path / "r" / "only" / "attempt-2" / "stderr").read_text()
    assert list(manager.host_states.values()).count("error") == 2

    stuck = JobManager(["nodedown"], backend=url, batch=prefix + "stuck", ssh_options=opts)
    status = stuck.run([JobSpec(["true"], name="a"), JobSpec(["true"], name="b")])
    assert status.counts["pending"] == 2
    assert stuck.host_states == {"nodedown": "error"}
    # A later manager with a working host finishes the batch.
    status = JobManager(["node1"], backend=url, batch=prefix + "stuck", ssh_options=opts).run()
    assert status.ok
    assert status.jobs["a"]["hosts"] == ["nodedown", "node1"]


def test_resubmit_is_idempotent_and_mismatch_refused(ssh_env: Sshd, tmp_path: Path) -> None:
    """Submitting the same list again adds nothing and reruns nothing; a different command
    under an existing name is refused."""
    url = file_url(tmp_path)
    logdir = tmp_path / "runs"
    logdir.mkdir()
    jobs = [JobSpec(recording_job(logdir, "r0", 0), name="r0")]
    mgr = JobManager(["node1"], backend=url, batch="again", results_dir=tmp_path / "res")
    assert mgr.submit(jobs) == 1
    assert mgr.run(jobs).ok
    again = JobManager(["node2"], backend=url, batch="again")
    assert again.submit(jobs) == 0
    assert again.run().ok
    assert again.results_dir == tmp_path / "res"  # the batch remembers its results directory
    assert runs(logdir)[0] == {"r0": 1}
    with pytest.raises(BatchMismatch, match="'r0'"):
        again.submit([JobSpec(["false"], name="r0")])


def test_two_managers_share_a_batch(ssh_env: Sshd, tmp_path: Path, log_dir: Path) -> None:
    """Two managers (threads) on one batch and disjoint hosts: every job runs exactly once
    and both did some of the work."""
    url = file_url(tmp_path)
    logdir = tmp_path / "runs"
    logdir.mkdir()
    jobs = [JobSpec(recording_job(logdir, f"s{i:02d}", 0.2), name=f"s{i:02d}") for i in range(4)]
    a = JobManager(["node1", "node2"], backend=url, batch="shared", results_dir=tmp_path / "r")
    b = JobManager(["node3", "node4"], backend=url, batch="shared", results_dir=tmp_path / "r")
    a.submit(jobs)
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.setdefault("b", b.run()))
    t.start()
    status = a.run()
    t.join(60)
    assert status.ok
    starts, _ = runs(logdir)
    assert starts == {f"s{i:02d}": 1 for i in range(4)}
    hosts = {r["host"] for r in status.jobs.values()}
    assert hosts & {"node1", "node2"}
    assert hosts & {"node3", "node4"}


def test_stop_puts_running_jobs_back(ssh_env: Sshd, tmp_path: Path, log_dir: Path) -> None:
    """stop() from another thread kills the running attempts and leaves their jobs pending;
    a later run finishes them."""
    url = file_url(tmp_path)
    mgr = JobManager(["node1", "node2"], backend=url, batch="stopme")
    started = threading.Event()

    def on_event(ev: JobEvent) -> None:
        if ev.kind == "launch":
            started.set()

    mgr.on_event = on_event
    mgr.submit([JobSpec(["sleep", "20"], name="long"), JobSpec(["true"], name="short")])
    threading.Timer(0.1, lambda: started.wait(20) and mgr.stop()).start()
    t0 = time.monotonic()
    status = mgr.run()
    assert time.monotonic() - t0 < 15
    assert status.jobs["long"]["state"] == "pending"
    assert status.jobs["long"]["error"] == "stopped"
    # A later manager finishes the batch; its timeout kills the long job, remote side too.
    mgr2 = JobManager(["node1"], backend=url, batch="stopme", timeout=3)
    status = mgr2.run()
    assert status.jobs["short"]["state"] == "done"
    long = status.jobs["long"]
    assert long["state"] == "failed"
    assert long["error"] == "timeout"
    assert long["exit_code"] is None
    assert 2.5 < long["duration"] < 20
    deadline = time.monotonic() + 10
    while _remote_sleepers(ssh_env) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _remote_sleepers(ssh_env), "the timed-out remote command is still running"


def _remote_sleepers(sshd: Sshd) -> list[int]:
    """Remote ``sleep 20`` processes of this sshd."""
    found = []
    for pid in sshd.session_pids():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0020\x00":
                found.append(pid)
    return found


def test_manager_on_another_machine_is_waited_for_until_its_lease_ends(
    ssh_env: Sshd, tmp_path: Path
) -> None:
    """A job running under a manager on another machine is left alone while that manager's
    heartbeat is fresh, and runs again here once its lease has passed."""
    url = file_url(tmp_path)
    mgr = JobManager(["node1"], backend=url, batch="remote", heartbeat=0.2, lease=1)
    mgr.submit([JobSpec(["true"], name="elsewhere")])
    state = unidist.SharedState("jobs:remote", url)
    rec = state["job:elsewhere"]
    assert isinstance(rec, dict)
    assert unidist.MessageQueue("jobs:remote", url).get(timeout=1) == "elsewhere"
    state["job:elsewhere"] = {
        **rec,
        "state": "running",
        "attempts": 1,
        "host": "node9",
        "hosts": ["node9"],
        "manager": "other-7",
        "manager_host": "some-other-machine",
        "attempt_dir": str(tmp_path / "not-here"),
        "started": time.time(),
    }
    lease_ends = time.time() + 2
    state["manager:other-7"] = {
        "host": "some-other-machine",
        "pid": 7,
        "heartbeat": lease_ends - 2,
        "lease": 2,
    }
    retried_at: list[float] = []
    mgr.on_event = lambda ev: retried_at.append(time.time()) if ev.kind == "retry" else None
    status = mgr.run()
    assert status.ok
    assert status.jobs["elsewhere"]["hosts"] == ["node9", "node1"]
    assert len(retried_at) == 1
    assert retried_at[0] >= lease_ends


# ---------------------------------------------------------------------------- kill -9
def _start_manager(
    url: str, tmp_path: Path, count: int, sleep: float, env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.cluster._jobs_manager",
            url,
            "crash",
            str(tmp_path / "results"),
            str(tmp_path / "runs"),
            str(count),
            str(sleep),
            "node1,node2,node3,node4",
        ],
        cwd=ROOT,
        env={**os.environ, **env, "UNIDIST_LOG_DIR": str(tmp_path / "log")},
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill_midway(
    proc: subprocess.Popen[str], url: str, min_done: int
) -> tuple[dict[str, dict], set[str]]:
    """Wait until ``min_done`` jobs are done and some run, then kill -9 the manager. Return
    the job records at that moment, and the running jobs whose runner never wrote its pid
    (the manager died between taking the job and starting its runner)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            jobs = batch_status("crash", url).jobs
        except KeyError:
            jobs = {}
        states = [r["state"] for r in jobs.values()]
        running = [r for r in jobs.values() if r["state"] == "running"]
        if (
            states.count("done") >= min_done
            and running
            and all(Path(r["attempt_dir"], "pid").exists() for r in running)
        ):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            at_kill = batch_status("crash", url).jobs
            # A job taken just before the kill: give a runner being started time to appear.
            settle = time.monotonic() + 2
            unspawned = {"?"}
            while unspawned and time.monotonic() < settle:
                unspawned = {
                    n
                    for n, r in at_kill.items()
                    if r["state"] == "running" and not Path(r["attempt_dir"], "pid").exists()
                }
                time.sleep(0.05)
            return at_kill, unspawned
        assert proc.poll() is None, "the manager ended before it could be killed"
        time.sleep(0.02)
    raise AssertionError("the batch did not get going")


@pytest.fixture
def managers() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()


def test_kill9_manager_then_restart_runs_every_job_once(
    sshd: Sshd,
    tmp_path: Path,
    managers: list[subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A manager killed with -9 mid-batch leaves its runners going; the restarted manager
    adopts them, finishes the batch, and every job ran exactly once."""
    url = file_url(tmp_path)
    (tmp_path / "runs").mkdir()
    first = _start_manager(url, tmp_path, 8, 0.5, sshd.env())
    managers.append(first)
    at_kill, unspawned = _kill_midway(first, url, 3)
    in_flight = {n for n, r in at_kill.items() if r["state"] == "running"}
    assert in_flight - unspawned
    # `jobs status` tells that those jobs wait for a manager.
    assert set(batch_status("crash", url).orphaned) == in_flight
    assert main(["--url", url, "jobs", "status", "--batch", "crash"]) == 0
    out = capsys.readouterr().out
    assert f"{len(in_flight)} running job(s) have no live manager" in out
    assert "silent" in out

    second = _start_manager(url, tmp_path, 8, 0.5, sshd.env())
    managers.append(second)
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0, out
    events = [json.loads(line) for line in out.splitlines()]
    adopted = {e["job"] for e in events if e["kind"] == "adopt"}
    assert adopted
    assert adopted <= in_flight
    starts, ends = runs(tmp_path / "runs")
    assert starts == {f"j{i:02d}": 1 for i in range(1, 9)}, "a job ran twice or never"
    assert ends == starts
    # One slot per host, across the restart: adopted jobs kept their hosts busy.
    assert set(max_concurrency(tmp_path / "runs").values()) == {1}
    status = batch_status("crash", url)
    assert status.ok
    # Only a job whose runner never started is taken again (after a grace period).
    assert {n for n, r in status.jobs.items() if r["attempts"] > 1} <= unspawned
    for name in adopted:
        assert (tmp_path / "results" / name / "stdout").read_text().startswith(f"out {name}")


def test_kill9_manager_and_runners_reruns_only_in_flight_jobs(
    sshd: Sshd, tmp_path: Path, managers: list[subprocess.Popen[str]]
) -> None:
    """When the runners die with the manager, the jobs in flight at that moment run again
    (their outcome is unknown) and no other job does: the documented at-most-twice set."""
    url = file_url(tmp_path)
    (tmp_path / "runs").mkdir()
    first = _start_manager(url, tmp_path, 6, 0.5, sshd.env())
    managers.append(first)
    at_kill, unspawned = _kill_midway(first, url, 2)
    for name, rec in at_kill.items():
        if rec["state"] == "running" and name not in unspawned:
            pid = int(Path(rec["attempt_dir"], "pid").read_text())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    # In flight = its runner was killed before recording an exit code (one may just have
    # made it). A runner that never started is retried too, after the spawn grace period.
    in_flight = {
        n
        for n, r in at_kill.items()
        if r["state"] == "running"
        and n not in unspawned
        and not Path(r["attempt_dir"], "exit").exists()
    }
    assert in_flight

    second = _start_manager(url, tmp_path, 6, 0.5, sshd.env())
    managers.append(second)
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0, out
    events = [json.loads(line) for line in out.splitlines()]
    retried = {e["job"] for e in events if e["kind"] == "retry"}
    assert in_flight <= retried <= in_flight | unspawned
    starts, _ = runs(tmp_path / "runs")
    assert set(starts) == {f"j{i:02d}" for i in range(1, 7)}
    twice = {n for n, c in starts.items() if c > 1}
    assert twice <= in_flight
    assert max(starts.values()) <= 2
    status = batch_status("crash", url)
    assert status.ok
    again = {n for n, r in status.jobs.items() if r["attempts"] == 2}
    assert in_flight <= again <= in_flight | unspawned


@pytest.mark.slow
def test_repeated_kill9_soak_every_job_runs_exactly_once(
    sshd: Sshd, tmp_path: Path, managers: list[subprocess.Popen[str]]
) -> None:
    """Kill -9 the manager at random moments, again and again, restarting it each time:
    every job still runs exactly once and the batch completes (the runners are never
    killed). Prints the reliability result block."""
    from tests.reliability._report import Result, count, seed

    rng_seed = seed()
    rng = random.Random(rng_seed)
    jobs, kills = count(24, 120), count(4, 30)
    url = file_url(tmp_path)
    (tmp_path / "runs").mkdir()
    done_kills = 0
    started = time.monotonic()
    while True:
        proc = _start_manager(url, tmp_path, jobs, 0.3, sshd.env())
        managers.append(proc)
        if done_kills < kills:
            try:
                proc.wait(timeout=rng.uniform(0.5, 3.0))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                done_kills += 1
                continue
        out, _ = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        raise AssertionError(f"manager failed:\n{out}")
    starts, ends = runs(tmp_path / "runs")
    names = {f"j{i:02d}" for i in range(1, jobs + 1)}
    status = batch_status("crash", url)
    result = Result(
        "jobs-kill9-restarts",
        "file",
        rng_seed,
        params={"jobs": jobs, "hosts": 4, "slots": 1, "kills": kills},
        attempted=jobs,
        ok=status.counts["done"],
        lost=len(names - set(starts)),
        duplicated=sum(1 for n in starts if starts[n] > 1),
        unexpected=len(set(starts) - names),
        violations=sum(1 for n in names if starts.get(n) != ends.get(n)),
        extra={
            "kills_done": done_kills,
            "jobs_with_attempts_gt_1": sum(1 for r in status.jobs.values() if r["attempts"] > 1),
            "seconds": round(time.monotonic() - started, 1),
        },
        path=str(tmp_path),
    )
    result.emit()
    assert status.ok
    assert starts == dict.fromkeys(names, 1), "a job ran twice or never"
    assert ends == starts
