"""What a batch looks like from outside (part of :mod:`unidist.cluster.jobs`): job and host
states, the events a manager reports, the stored status of a batch, the list of batches.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Final

from unidist._facade import HOST, resolve_backend
from unidist._names import check_name
from unidist.backends.base import Backend
from unidist.cluster import _jobs_launch as launch
from unidist.cluster._jobs_store import INDEX_BUCKET, TERMINAL, BatchStore
from unidist.state import SharedState

__all__ = [
    "HOST_STATES",
    "JOB_STATES",
    "LIVE_MANAGERS",
    "BatchStatus",
    "JobEvent",
    "batch_status",
    "check_batch",
    "forget_batch",
    "list_batches",
    "manager_alive",
    "status_of",
]

HOST_STATES: Final = ("unknown", "free", "busy", "done", "error")
"""Host states: ``unknown`` (not used yet by this manager), ``free`` (reachable, a slot is
free and nothing runs), ``busy`` (at least one job runs there), ``done`` (the batch has no more
work for it), ``error`` (a connection failed; this manager launches nothing more there)."""

JOB_STATES: Final = ("pending", "running", "done", "failed")
"""Job states: ``pending`` (waiting in the queue), ``running``, ``done`` (exit code 0),
``failed`` (non-zero exit, timeout, or no host reached it within ``max_retries`` retries)."""

LIVE_MANAGERS: set[str] = set()
"""Ids of the managers running in this process (their heartbeat records carry our pid)."""


@dataclass(frozen=True)
class JobEvent:
    """What the manager reports to ``on_event`` and logs to the ``jobs`` track.

    ``kind`` is ``launch`` (an attempt started on ``host``), ``done`` (exit code 0),
    ``failed`` (the job ended badly: ``error`` is ``failed``, ``timeout``, ``unreachable`` or
    ``lost``), ``retry`` (the attempt never reached the host or its runner was lost; the job
    waits for another host), ``adopt`` (a job left running by a dead manager is now followed
    by this one) or ``host`` (``host`` changed to ``host_state``).
    """

    kind: str
    batch: str
    job: str | None = None
    host: str | None = None
    attempt: int | None = None
    exit_code: int | None = None
    error: str = ""
    duration: float | None = None
    host_state: str | None = None
    message: str = ""
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object (None fields left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


@dataclass(frozen=True)
class BatchStatus:
    """A batch as stored: job records by name (batch order) and host records by host."""

    batch: str
    jobs: dict[str, dict[str, Any]]
    hosts: dict[str, dict[str, Any]]
    results_dir: str | None = None
    created: float | None = None
    managers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Heartbeat records of the managers working on the batch (``host``, ``pid``,
    ``heartbeat``, ``lease``, and ``alive`` as judged from here)."""

    @property
    def orphaned(self) -> list[str]:
        """Running jobs whose manager is gone: they wait for a manager to resume the batch."""
        return [
            name
            for name, rec in self.jobs.items()
            if rec.get("state") == "running"
            and not self.managers.get(str(rec.get("manager")), {}).get("alive", False)
        ]

    @property
    def counts(self) -> dict[str, int]:
        """Number of jobs in each of :data:`JOB_STATES`."""
        counts = dict.fromkeys(JOB_STATES, 0)
        for rec in self.jobs.values():
            state = str(rec.get("state"))
            counts[state] = counts.get(state, 0) + 1
        return counts

    @property
    def finished(self) -> bool:
        """Every job is done or failed."""
        return all(rec.get("state") in TERMINAL for rec in self.jobs.values())

    @property
    def ok(self) -> bool:
        """Every job is done (exit code 0)."""
        return all(rec.get("state") == "done" for rec in self.jobs.values())

    def to_json(self) -> dict[str, Any]:
        """The status as a JSON object."""
        return {
            "batch": self.batch,
            "results_dir": self.results_dir,
            "created": self.created,
            "counts": self.counts,
            "jobs": list(self.jobs.values()),
            "hosts": self.hosts,
            "managers": self.managers,
            "orphaned": self.orphaned,
        }


def manager_alive(rec: dict[str, Any], default_lease: float = 30.0) -> bool:
    """Whether the manager of heartbeat record ``rec`` counts as alive: its heartbeat is
    younger than its lease and, on this machine, its pid runs (a pid that is this process's
    but no live manager of it was reused)."""
    beat = rec.get("heartbeat")
    lease = rec.get("lease", default_lease)
    fresh = isinstance(beat, (int, float)) and time.time() - beat < float(lease)
    if rec.get("host") != HOST:
        return fresh
    pid = rec.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return fresh and isinstance(pid, int) and rec.get("id") in LIVE_MANAGERS
    return fresh and launch._pid_alive(pid)


def status_of(store: BatchStore, snap: dict[str, Any], meta: dict[str, Any]) -> BatchStatus:
    managers = {
        mid: {**rec, "alive": manager_alive(rec)} for mid, rec in store.managers(snap).items()
    }
    return BatchStatus(
        store.batch,
        store.jobs(snap),
        store.hosts(snap),
        meta.get("results_dir"),
        meta.get("created"),
        managers,
    )


def batch_status(batch: str, backend: Backend | str | None = None) -> BatchStatus:
    """The stored status of ``batch``.

    Raises:
        KeyError: there is no such batch on the backend.
        InvalidName: a bad batch name.
    """
    store = BatchStore(resolve_backend(backend), check_batch(batch))
    snap = store.snapshot()
    meta = snap.get("meta")
    if not isinstance(meta, dict):
        raise KeyError(f"no batch named {batch!r} on this backend")
    return status_of(store, snap, meta)


def forget_batch(batch: str, backend: Backend | str | None = None) -> None:
    """Delete ``batch`` from the backend: job and host records, queue, index entry. Results
    files stay. Deleting a batch that a manager still runs makes that manager's updates fail
    their compare-and-set: its jobs are not recorded."""
    BatchStore(resolve_backend(backend), check_batch(batch)).forget()


def list_batches(backend: Backend | str | None = None) -> list[str]:
    """The names of the batches stored on ``backend``, oldest first."""
    index = SharedState(INDEX_BUCKET, resolve_backend(backend)).snapshot()
    return sorted(index, key=lambda b: (_created(index[b]), b))


def _created(value: Any) -> float:
    created = value.get("created") if isinstance(value, dict) else None
    return float(created) if isinstance(created, (int, float)) else 0.0


def check_batch(batch: str) -> str:
    check_name(batch, "batch name")
    if len(batch) > 190:
        raise ValueError("a batch name is limited to 190 characters")
    return batch
