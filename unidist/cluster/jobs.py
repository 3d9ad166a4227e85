"""Jobs over hosts: farm a batch of N jobs out over M hosts with ``ssh``, resumably.

::

    from unidist.cluster.jobs import JobManager, JobSpec, product_jobs

    jobs = product_jobs(["./simulate", "--seed={seed}"], name="sim-{seed}", seed=range(40))
    mgr = JobManager("compute", backend="redis://queue-host/0", batch="sims", slots=2,
                     results_dir="/srv/results/sims")
    status = mgr.run(jobs)          # returns when every job is done or failed
    print(status.counts)            # {"done": 40, "failed": 0, "pending": 0, "running": 0}

The job list and every job's state live on the backend (see
:mod:`unidist.cluster._jobs_store`), so a manager that is restarted, or a second manager
given the same batch name, carries on where the batch stands: finished jobs never run
again. Each attempt runs through a small local runner that outlives the manager (see
:mod:`unidist.cluster._jobs_launch`), so a job still running when its manager is killed
keeps running and is adopted by the next manager on the same machine. What can run twice is
therefore only a job whose *runner* died too while the job was in flight (the machine
rebooted, or the runner was killed), or one whose manager ran on another machine and
stopped sending heartbeats; see ``docs/jobs.md``.
"""

from __future__ import annotations

import contextlib
import os
import queue as _queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from unidist._facade import HOST, resolve_backend
from unidist.backends.base import Backend
from unidist.cluster import _jobs_launch as launch
from unidist.cluster._jobs_attempts import AttemptRunner, Run
from unidist.cluster._jobs_spec import Job, JobSpec, expand, load_jobs, parse_jobs, product_jobs
from unidist.cluster._jobs_status import (
    HOST_STATES,
    JOB_STATES,
    LIVE_MANAGERS,
    BatchStatus,
    JobEvent,
    batch_status,
    check_batch,
    forget_batch,
    list_batches,
    manager_alive,
    status_of,
)
from unidist.cluster._jobs_store import (
    RETRY_PRIORITY,
    TERMINAL,
    BatchMismatch,
    BatchStore,
    order_priority,
)
from unidist.cluster.files import Cluster

__all__ = [
    "HOST_STATES",
    "JOB_STATES",
    "BatchMismatch",
    "BatchStatus",
    "JobEvent",
    "JobManager",
    "JobSpec",
    "batch_status",
    "expand",
    "forget_batch",
    "list_batches",
    "load_jobs",
    "manager_alive",
    "parse_jobs",
    "product_jobs",
]

_SPAWN_GRACE: Final = 10.0
"""Seconds a dead manager's attempt without a runner pid is left alone before it is run
again: the manager may have died between starting the runner and the runner's first line."""


class JobManager(AttemptRunner):
    """Runs a batch of jobs over hosts, at most ``slots`` at a time per host.

    A job goes to a host with a free slot as soon as one frees up. A host whose connection
    fails (ssh never reached the command) goes to ``error`` and its job is retried on
    another host, up to ``max_retries`` times. Each attempt's stdout and stderr are written
    under ``results_dir``; events are logged to the ``jobs`` track and passed to
    ``on_event``.

    Args:
        targets: hosts, a group or lump name of the cluster file, or a list of those (see
            :func:`unidist.cluster.remote.resolve_targets`).
        backend: where the batch lives (Backend, URL or None for the default). Use
            ``file://`` or ``redis://`` to resume after a crash or share a batch between
            managers; ``memory://`` only lives as long as this process.
        batch: the batch name (letters, digits, ``._-:@``). Two managers with the same batch
            name on the same backend work on the same jobs.
        slots: jobs run at the same time on one host (>= 1).
        results_dir: where results go (default: the batch's earlier results directory, else
            ``./unidist-results/<batch>``). Per job: ``<dir>/<job>/stdout``, ``stderr``,
            ``result.json``, and ``attempt-<n>/`` per attempt.
        max_retries: how many times a job is put back after an attempt that never reached
            its host (or whose runner was lost), before it fails.
        timeout: seconds a job may run before it is killed and fails with ``timeout``.
        connect_timeout: ssh ``ConnectTimeout`` seconds.
        ssh_options: extra ssh arguments (default: ``$UNIDIST_SSH_OPTIONS``).
        cluster: the cluster used to resolve group names (default: the cluster file).
        on_event: called with each :class:`JobEvent`, in the manager's thread (an exception
            stops the manager like Ctrl-C does, then propagates).
        heartbeat: seconds between this manager's heartbeats on the backend.
        lease: seconds without a heartbeat after which a manager on *another* machine counts
            as dead and its running jobs are run again elsewhere.

    Raises:
        ValueError: no targets, ``slots`` < 1, negative retries or timeouts.
        InvalidName: a bad batch name.
    """

    def __init__(
        self,
        targets: str | Sequence[str],
        *,
        backend: Backend | str | None = None,
        batch: str = "default",
        slots: int = 1,
        results_dir: str | os.PathLike[str] | None = None,
        max_retries: int = 3,
        timeout: float | None = None,
        connect_timeout: float = 10,
        ssh_options: Sequence[str] | None = None,
        cluster: Cluster | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        heartbeat: float = 2.0,
        lease: float = 30.0,
    ) -> None:
        from unidist.cluster.remote import resolve_targets

        self.batch = check_batch(batch)
        self.hosts: tuple[str, ...] = tuple(dict.fromkeys(resolve_targets(targets, cluster)))
        if not self.hosts:
            raise ValueError("JobManager needs at least one target host")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be an int >= 1, got {slots!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not connect_timeout > 0 or not heartbeat > 0 or not lease > heartbeat:
            raise ValueError("connect_timeout and heartbeat must be > 0, lease > heartbeat")
        self.slots = slots
        self.max_retries = max_retries
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ssh_options = None if ssh_options is None else list(ssh_options)
        self.on_event = on_event
        self.heartbeat = heartbeat
        self.lease = lease
        self.backend = resolve_backend(backend)
        self._store = BatchStore(self.backend, self.batch)
        self._results_arg = None if results_dir is None else Path(results_dir).absolute()
        self.results_dir: Path | None = self._results_arg
        self.id = f"{HOST}-{os.getpid()}-{secrets.token_hex(4)}"
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, Run] = {}
        self._per_host: dict[str, int] = dict.fromkeys(self.hosts, 0)
        self._host_state: dict[str, str] = dict.fromkeys(self.hosts, "unknown")
        self._host_error: dict[str, str] = {}
        self._host_counts: dict[str, list[int]] = {h: [0, 0] for h in self.hosts}
        self._finished: _queue.Queue[tuple[Run, launch.Outcome]] = _queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._log: Any = None
        self._meta_done = False

    # ------------------------------------------------------------------ public API
    def submit(self, jobs: Iterable[JobSpec | Sequence[str] | str]) -> int:
        """Add jobs to the batch (names as given by :func:`expand`); return how many were new.

        Jobs already in the batch under the same name are left as they are (done jobs stay
        done), so submitting the same list again is how a batch is resumed.

        Raises:
            BatchMismatch: a job name exists in the batch with another command or files.
            ValueError: two jobs of ``jobs`` have the same name.
        """
        expanded = expand(jobs)
        self._ensure_meta()
        existing = self._store.jobs()
        for job in expanded:
            self._jobs[job.name] = job
            if job.name in existing:  # only checked: the stored job must be the same job
                self._store.add_job(_new_record(job), existing[job.name])
        fresh = [job for job in expanded if job.name not in existing]
        # Independent compare-and-sets and puts: in parallel, so that a durable backend can
        # commit many of them per fsync. The queue priority keeps the batch order.
        return sum(_parallel(lambda job: self._store.add_job(_new_record(job), None), fresh))

    def run(self, jobs: Iterable[JobSpec | Sequence[str] | str] | None = None) -> BatchStatus:
        """Submit ``jobs`` (if given) and run the batch until every job is done or failed,
        or until no usable host is left. Returns the final :class:`BatchStatus`.

        On KeyboardInterrupt (or an exception from ``on_event``, or :meth:`stop` from another
        thread) the running attempts are killed and their jobs put back as pending, then
        the exception propagates (:meth:`stop` returns normally).

        Raises:
            OSError: the results directory cannot be created.
            BackendUnavailable: the backend cannot be reached.
        """
        if jobs is not None:
            self.submit(jobs)
        self._ensure_meta()
        assert self.results_dir is not None
        self.results_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # fail early, clearly
        self._stop.clear()
        # Each run gives every host a new chance (an error may have been fixed meanwhile).
        self._host_error.clear()
        self._host_state = dict.fromkeys(self.hosts, "unknown")
        LIVE_MANAGERS.add(self.id)
        self._beat()
        try:
            self._take_over_dead()
            self._requeue_pending()
            next_beat = time.monotonic() + self.heartbeat
            while not self._stop.is_set():
                self._drain(0)
                if time.monotonic() >= next_beat:
                    self._beat()
                    self._take_over_dead()
                    next_beat = time.monotonic() + self.heartbeat
                self._fill()
                if not self._running and self._idle_and_finished():
                    break
                self._drain(min(0.5, max(0.0, next_beat - time.monotonic())))
        except BaseException:
            self._abort()
            raise
        else:
            if self._stop.is_set():
                self._abort()
            else:
                self._finish_hosts()
        finally:
            self._store.drop_manager(self.id)
            LIVE_MANAGERS.discard(self.id)
        return self.status()

    def stop(self) -> None:
        """Ask :meth:`run` (in another thread) to stop: running attempts are killed and their
        jobs put back as pending."""
        self._stop.set()

    def status(self) -> BatchStatus:
        """The batch's stored status (every manager's jobs)."""
        snap = self._store.snapshot()
        meta = snap.get("meta")
        return status_of(self._store, snap, meta if isinstance(meta, dict) else {})

    @property
    def host_states(self) -> dict[str, str]:
        """This manager's view of its hosts: one of :data:`HOST_STATES` each."""
        return dict(self._host_state)

    def forget(self) -> None:
        """Delete the batch from the backend (records and queue); results files stay."""
        self._store.forget()

    # ------------------------------------------------------------------ internals
    def _ensure_meta(self) -> None:
        if self._meta_done:
            return
        default = Path.cwd() / "unidist-results" / self.batch
        meta = self._store.ensure_meta(str(self._results_arg or default))
        if self._results_arg is None:
            self.results_dir = Path(str(meta.get("results_dir") or default))
        else:
            self.results_dir = self._results_arg
            if meta.get("results_dir") != str(self._results_arg):
                self._store.state["meta"] = {**meta, "results_dir": str(self._results_arg)}
        self._meta_done = True

    def _logger(self) -> Any:
        if self._log is None:
            import unidist.log

            self._log = unidist.log.get_logger(track="jobs", batch=self.batch)
        return self._log

    def _emit(self, event: JobEvent) -> None:
        fields = event.to_json()
        for key in ("kind", "batch", "time"):
            fields.pop(key, None)
        if "host" in fields:  # ``host`` in a log record is the machine that wrote it
            fields["job_host"] = fields.pop("host")
        log = self._logger()
        name = f"job_{event.kind}" if event.kind != "host" else "host_state"
        if event.kind == "failed" or event.host_state == "error":
            log.warning(name, manager=self.id, **fields)
        else:
            log.info(name, manager=self.id, **fields)
        if self.on_event is not None:
            self.on_event(event)

    def _beat(self) -> None:
        self._store.heartbeat(
            self.id,
            {
                "id": self.id,
                "host": HOST,
                "pid": os.getpid(),
                "heartbeat": time.time(),
                "lease": self.lease,
            },
        )

    def _alive(self, manager_id: str, managers: dict[str, dict[str, Any]]) -> bool:
        if manager_id == self.id or manager_id in LIVE_MANAGERS:
            return True
        rec = managers.get(manager_id)
        return rec is not None and manager_alive(rec, self.lease)

    def _take_over_dead(self) -> None:
        snap = self._store.snapshot()
        managers = self._store.managers(snap)
        for name, rec in self._store.jobs(snap).items():
            if rec.get("state") != "running" or name in self._running:
                continue
            if self._alive(str(rec.get("manager")), managers):
                continue
            self._take_over(name, rec)

    def _take_over(self, name: str, rec: dict[str, Any]) -> None:
        directory = Path(rec["attempt_dir"]) if rec.get("attempt_dir") else None
        same_machine = rec.get("manager_host") == HOST and directory is not None
        if same_machine and directory is not None:
            outcome = launch.outcome_of(directory)
            if outcome is not None or launch.runner_alive(directory):
                new = {**rec, "manager": self.id}
                if not self._store.replace_job(name, rec, new):
                    return
                run = Run(
                    name,
                    str(rec.get("host")),
                    int(rec.get("attempts", 1)),
                    directory,
                    float(rec.get("started") or time.time()),
                    self._jobs.get(name),
                    adopted=True,
                    pid=launch.read_pid(directory),
                )
                self._track(run)
                self._emit(JobEvent("adopt", self.batch, name, run.host, run.attempt))
                if outcome is not None:
                    self._finished.put((run, outcome))
                else:
                    self._start_thread(run)
                return
            started = rec.get("started")
            if (
                launch.read_pid(directory) is None
                and isinstance(started, (int, float))
                and time.time() - started < _SPAWN_GRACE
            ):
                return  # a runner may be starting right now: look again at the next scan
        # Nobody can tell whether this attempt ran: it runs again.
        self._requeue(name, rec, "lost", "its manager died and its runner is gone")

    def _requeue(self, name: str, rec: dict[str, Any], error: str, message: str) -> None:
        attempts = int(rec.get("attempts", 0))
        give_up = attempts > self.max_retries
        new = {
            **rec,
            "state": "failed" if give_up else "pending",
            "manager": None,
            "error": error,
            "message": message,
        }
        if give_up:
            new["ended"] = time.time()
        if not self._store.replace_job(name, rec, new):
            return
        if give_up:
            if self.results_dir is not None:
                self._write_result(self.results_dir / name, new)
            self._emit(
                JobEvent(
                    "failed",
                    self.batch,
                    name,
                    rec.get("host"),
                    attempts,
                    error=error,
                    message=message,
                )
            )
        else:
            self._store.put(name, attempts, RETRY_PRIORITY)
            self._emit(
                JobEvent(
                    "retry",
                    self.batch,
                    name,
                    rec.get("host"),
                    attempts,
                    error=error,
                    message=message,
                )
            )

    def _requeue_pending(self) -> None:
        pending = [(n, r) for n, r in self._store.jobs().items() if r.get("state") == "pending"]

        def put(item: tuple[str, dict[str, Any]]) -> None:
            name, rec = item
            attempts = int(rec.get("attempts", 0))
            priority = RETRY_PRIORITY if attempts else order_priority(rec)
            self._store.put(name, attempts, priority)

        _parallel(put, pending)

    def _usable(self) -> list[str]:
        return [h for h in self.hosts if h not in self._host_error]

    def _pick_host(self) -> str | None:
        free = [h for h in self._usable() if self._per_host.get(h, 0) < self.slots]
        if not free:
            return None
        return min(free, key=lambda h: self._per_host.get(h, 0))

    def _fill(self) -> None:
        while not self._stop.is_set():
            host = self._pick_host()
            if host is None:
                return
            name = self._store.take()
            if name is None:
                return
            self._claim(name, host)

    def _claim(self, name: str, host: str) -> None:
        rec = self._store.job(name)
        if rec is None or rec.get("state") != "pending":
            return
        assert self.results_dir is not None
        attempt = int(rec.get("attempts", 0)) + 1
        directory = self.results_dir / name / f"attempt-{attempt}"
        started = time.time()
        new = {
            **rec,
            "state": "running",
            "host": host,
            "hosts": [*rec.get("hosts", []), host],
            "attempts": attempt,
            "manager": self.id,
            "manager_host": HOST,
            "attempt_dir": str(directory),
            "started": started,
            "ended": None,
            "duration": None,
            "exit_code": None,
            "error": "",
            "message": "",
        }
        if not self._store.replace_job(name, rec, new):
            return
        job = self._jobs.get(name) or Job(name, _argv_of(rec), tuple(rec.get("files", ())))
        run = Run(name, host, attempt, directory, started, job)
        self._track(run)
        self._emit(JobEvent("launch", self.batch, name, host, attempt))
        self._start_thread(run)

    def _track(self, run: Run) -> None:
        self._running[run.name] = run
        self._per_host[run.host] = self._per_host.get(run.host, 0) + 1
        self._set_host(run.host, "busy")

    def _set_host(self, host: str, state: str, message: str = "") -> None:
        if self._host_state.get(host) == state and (not message or state == "error"):
            return
        self._host_state[host] = state
        counts = self._host_counts.setdefault(host, [0, 0])
        self._store.set_host(
            host,
            {
                "state": state,
                "running": self._per_host.get(host, 0),
                "done": counts[0],
                "failed": counts[1],
                "error": message,
                "since": time.time(),
                "manager": self.id,
            },
        )
        self._emit(JobEvent("host", self.batch, None, host, host_state=state, message=message))

    def _drain(self, timeout: float) -> None:
        try:
            item = (
                self._finished.get(timeout=timeout) if timeout > 0 else self._finished.get_nowait()
            )
        except _queue.Empty:
            return
        while True:
            self._complete(*item)
            try:
                item = self._finished.get_nowait()
            except _queue.Empty:
                return

    def _complete(self, run: Run, outcome: launch.Outcome) -> None:
        self._running.pop(run.name, None)
        self._per_host[run.host] = max(0, self._per_host.get(run.host, 0) - 1)
        rec = self._store.job(run.name)
        mine = (
            rec is not None
            and rec.get("state") == "running"
            and rec.get("manager") == self.id
            and int(rec.get("attempts", 0)) == run.attempt
        )
        if rec is None or not mine:
            self._logger().warning("job_taken_over", job=run.name, attempt=run.attempt)
            self._host_idle(run.host)
            return
        if outcome.error in ("stopped",):
            self._requeue_stopped(run.name, rec)
            self._host_idle(run.host)
            return
        if outcome.error in ("unreachable", "lost"):
            if outcome.error == "unreachable" and run.host in self._host_state:
                self._host_error[run.host] = outcome.message or "unreachable"
                self._set_host(run.host, "error", self._host_error[run.host])
            elif outcome.error == "lost":
                self._host_idle(run.host)
            self._save_results(run, rec, outcome)
            self._requeue(run.name, rec, outcome.error, outcome.message)
            return
        state = "done" if outcome.error == "ok" else "failed"
        final = {
            **rec,
            "state": state,
            "exit_code": outcome.exit_code,
            "error": "" if state == "done" else outcome.error,
            "message": outcome.message,
            "ended": outcome.ended,
            "duration": round(max(0.0, outcome.ended - run.started), 3),
            "manager": None,
        }
        self._save_results(run, final, outcome)
        if not self._store.replace_job(run.name, rec, final):
            self._logger().warning("job_taken_over", job=run.name, attempt=run.attempt)
        counts = self._host_counts.setdefault(run.host, [0, 0])
        counts[0 if state == "done" else 1] += 1
        self._emit(
            JobEvent(
                state,
                self.batch,
                run.name,
                run.host,
                run.attempt,
                outcome.exit_code,
                "" if state == "done" else outcome.error,
                final["duration"],
                message=outcome.message,
            )
        )
        self._host_idle(run.host)

    def _requeue_stopped(self, name: str, rec: dict[str, Any]) -> None:
        new = {**rec, "state": "pending", "manager": None, "error": "stopped", "message": ""}
        if self._store.replace_job(name, rec, new):
            self._store.put(name, int(rec.get("attempts", 0)), RETRY_PRIORITY)

    def _host_idle(self, host: str) -> None:
        if host not in self._host_state or host in self._host_error:
            return
        self._set_host(host, "busy" if self._per_host.get(host, 0) else "free")

    def _idle_and_finished(self) -> bool:
        """Nothing runs here: True when the batch is finished or nothing more can run here."""
        jobs = self._store.jobs()
        states = [rec.get("state") for rec in jobs.values()]
        if all(s in TERMINAL for s in states):
            return True
        if "pending" in states:
            if not self._usable():
                return True  # every host failed: the rest waits for a later manager
            if self._store.queue.stats()["ready"] == 0:
                self._requeue_pending()  # a message lost by a crash between take and claim
            return False
        return False  # running under another live manager: wait for it (or its death)

    def _abort(self) -> None:
        self._stop.set()
        for run in list(self._running.values()):
            run.killed = True
            if run.pid is not None:
                launch.stop_runner(run.pid)
        deadline = time.monotonic() + 5
        while self._running and time.monotonic() < deadline:
            try:
                run, outcome = self._finished.get(timeout=0.1)
            except _queue.Empty:
                continue
            if outcome.error not in ("ok", "failed", "timeout"):
                outcome = launch.Outcome(outcome.exit_code, "stopped", outcome.ended)
            with contextlib.suppress(Exception):
                self._complete(run, outcome)
        for run in list(self._running.values()):  # runner never started, or no answer
            rec = self._store.job(run.name)
            if rec is not None and rec.get("manager") == self.id:
                self._requeue_stopped(run.name, rec)
        self._running.clear()

    def _finish_hosts(self) -> None:
        for host in self.hosts:
            if host not in self._host_error and self._per_host.get(host, 0) == 0:
                self._set_host(host, "done")


_T = TypeVar("_T")
_R = TypeVar("_R")


def _parallel(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[fn(x) for x in items]`` on up to 16 threads (in order; the first error raises)."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(16, len(items)), thread_name_prefix="jobs") as pool:
        return list(pool.map(fn, items))


def _new_record(job: Job) -> dict[str, Any]:
    return {
        "name": job.name,
        "index": job.index,
        "argv": job.command_json(),
        "files": list(job.files),
        "state": "pending",
        "attempts": 0,
        "host": None,
        "hosts": [],
        "exit_code": None,
        "error": "",
        "message": "",
        "started": None,
        "ended": None,
        "duration": None,
        "manager": None,
    }


def _argv_of(rec: dict[str, Any]) -> tuple[str, ...] | str:
    argv = rec.get("argv")
    if isinstance(argv, str):
        return argv
    return tuple(str(a) for a in argv or ())
