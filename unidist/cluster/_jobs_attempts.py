"""Running one attempt of a job (part of :mod:`unidist.cluster.jobs`): copy its files, start
its runner (see :mod:`unidist.cluster._jobs_launch`) or follow one left by a dead manager,
enforce the timeout, and keep its results.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from unidist.cluster import _jobs_launch as launch
from unidist.cluster._jobs_spec import Job

__all__ = ["AttemptRunner", "Run"]

_POLL: Final = 0.1


@dataclass
class Run:
    """An attempt this manager follows."""

    name: str
    host: str
    attempt: int
    directory: Path
    started: float
    job: Job | None
    adopted: bool = False
    pid: int | None = None
    killed: bool = False


class AttemptRunner:
    """The attempt-running half of :class:`unidist.cluster.jobs.JobManager` (a mixin): each
    attempt runs in a thread of its own and reports ``(run, outcome)`` to ``_finished``."""

    batch: str
    timeout: float | None
    connect_timeout: float
    ssh_options: list[str] | None
    results_dir: Path | None
    _stop: threading.Event
    _finished: queue.Queue[tuple[Run, launch.Outcome]]
    _threads: list[threading.Thread]

    def _start_thread(self, run: Run) -> None:
        t = threading.Thread(target=self._attempt, args=(run,), name=f"job-{run.name}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def _attempt(self, run: Run) -> None:
        """Thread body: copy files, start or follow the runner, report the outcome."""
        try:
            outcome = self._follow(run) if run.adopted else self._launch(run)
        except Exception as exc:  # reported as a failed attempt, never lost
            outcome = launch.Outcome(None, "failed", time.time(), f"{type(exc).__name__}: {exc}")
        self._finished.put((run, outcome))

    def _launch(self, run: Run) -> launch.Outcome:
        from unidist.cluster.remote import ssh_argv

        job = run.job
        assert job is not None
        workdir = None
        launch.clear_attempt(run.directory)
        if job.files:
            workdir = f"unidist-jobs/{self.batch}/{job.name}"
            failure = self._copy_files(run, job, workdir)
            if failure is not None:
                return failure
        env = {
            "UNIDIST_JOB": job.name,
            "UNIDIST_JOB_BATCH": self.batch,
            "UNIDIST_JOB_HOST": run.host,
            "UNIDIST_JOB_ATTEMPT": str(run.attempt),
        }
        marker = launch.new_marker(run.directory)
        command = launch.remote_command(job.argv, env=env, marker=marker, workdir=workdir)
        ssh = ssh_argv(
            run.host, command, connect_timeout=self.connect_timeout, ssh_options=self.ssh_options
        )
        if self._stop.is_set():
            return launch.Outcome(None, "stopped", time.time())
        attempt = launch.spawn_runner(run.directory, ssh)
        proc = attempt.proc
        assert proc is not None
        run.pid = proc.pid
        if run.killed:  # stopped while it was being spawned
            launch.stop_runner(proc.pid)
        remaining = None if self.timeout is None else self.timeout - (time.time() - run.started)
        try:
            proc.wait(timeout=None if remaining is None else max(0.0, remaining))
        except subprocess.TimeoutExpired:
            self._kill(run)
            proc.wait()
            return launch.Outcome(None, "timeout", time.time(), f"killed after {self.timeout}s")
        outcome = launch.outcome_of(run.directory)
        if outcome is not None:  # finished (even if a stop came just after)
            return outcome
        if run.killed:
            self._kill_remote(run)
            return launch.Outcome(None, "stopped", time.time())
        return launch.Outcome(None, "lost", time.time(), "runner gone")

    def _kill(self, run: Run) -> None:
        """Kill an attempt: the local runner and ssh, then the remote command."""
        if run.pid is not None:
            launch.stop_runner(run.pid)
        self._kill_remote(run)

    def _kill_remote(self, run: Run) -> None:
        launch.kill_remote(
            run.host,
            run.directory,
            connect_timeout=self.connect_timeout,
            ssh_options=self.ssh_options,
        )

    def _copy_files(self, run: Run, job: Job, workdir: str) -> launch.Outcome | None:
        from unidist.cluster.remote import copy, run_one

        for path in job.files:
            if not os.path.isfile(path):
                return launch.Outcome(None, "failed", time.time(), f"no such file: {path}")
        prep = run_one(
            run.host,
            ["mkdir", "-p", "--", workdir],
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            ssh_options=self.ssh_options,
        )
        result = prep
        if prep.ok:
            result = copy(
                [run.host],
                list(job.files),
                workdir,
                connect_timeout=self.connect_timeout,
                ssh_options=self.ssh_options,
            )[run.host]
        if result.ok:
            return None
        (run.directory / "stderr").write_text(result.stderr)
        error = "unreachable" if result.error == "unreachable" else "failed"
        message = " ".join(result.stderr.strip().splitlines()[-1:]) or result.error
        return launch.Outcome(result.exit_code, error, time.time(), f"copy: {message}")

    def _follow(self, run: Run) -> launch.Outcome:
        while True:
            outcome = launch.outcome_of(run.directory)
            if outcome is not None:
                return outcome
            if not launch.runner_alive(run.directory):
                # It may have written exit between the two reads.
                outcome = launch.outcome_of(run.directory)
                return outcome or launch.Outcome(None, "lost", time.time(), "runner gone")
            if run.killed:
                self._kill_remote(run)
                return launch.Outcome(None, "stopped", time.time())
            if self.timeout is not None and time.time() - run.started > self.timeout:
                self._kill(run)
                return launch.Outcome(None, "timeout", time.time(), f"killed after {self.timeout}s")
            time.sleep(_POLL)

    def _save_results(self, run: Run, rec: dict[str, Any], outcome: launch.Outcome) -> None:
        """``attempt-<n>/`` keeps every attempt; a finished job's output moves up to
        ``<job>/stdout`` and ``<job>/stderr`` next to ``<job>/result.json``."""
        job_dir = run.directory.parent
        with contextlib.suppress(OSError):
            job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if outcome.error in ("unreachable", "lost"):
            return
        with contextlib.suppress(OSError):
            src = run.directory / "stdout"
            if src.exists():
                shutil.copyfile(src, job_dir / "stdout")
            else:
                (job_dir / "stdout").write_bytes(b"")
        with contextlib.suppress(OSError):
            (job_dir / "stderr").write_bytes(launch.job_stderr(run.directory))
        self._write_result(job_dir, rec)

    def _write_result(self, job_dir: Path, rec: dict[str, Any]) -> None:
        """Write ``<job>/result.json`` (atomically replaced)."""
        result = {
            k: rec.get(k)
            for k in (
                "name",
                "argv",
                "files",
                "state",
                "host",
                "hosts",
                "attempts",
                "exit_code",
                "error",
                "message",
                "started",
                "ended",
                "duration",
            )
        }
        result["batch"] = self.batch
        tmp = job_dir / "result.json.tmp"
        with contextlib.suppress(OSError):
            job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, job_dir / "result.json")
