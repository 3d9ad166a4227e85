"""Where a batch lives on the backend (part of :mod:`unidist.cluster.jobs`).

* ``SharedState("jobs:<batch>")`` holds one record per job (``job:<name>``), the last known
  state of each host (``host:<name>``), one heartbeat record per running manager
  (``manager:<id>``) and the batch's ``meta``. Job records change only by compare-and-set,
  so two managers never both launch a job.
* ``MessageQueue("jobs:<batch>")`` holds the names of the jobs waiting to run (a job that
  must run again after a connection failure is put back with a higher priority). The job
  record decides: a message whose job is not ``pending`` any more is dropped.
* ``SharedState("jobs")`` indexes the batches (``unidist jobs status``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from unidist.backends.base import Backend
from unidist.codec import JSON
from unidist.errors import Empty, UnidistError
from unidist.queue import MessageQueue
from unidist.state import SharedState

__all__ = ["RETRY_PRIORITY", "TERMINAL", "BatchMismatch", "BatchStore", "order_priority"]

TERMINAL: Final = frozenset({"done", "failed"})
_JOB: Final = "job:"
_HOST: Final = "host:"
_MANAGER: Final = "manager:"
INDEX_BUCKET: Final = "jobs"


class BatchMismatch(UnidistError, ValueError):
    """A job name already exists in the batch with a different command or files."""


def order_priority(record: dict[str, Any]) -> int:
    """The queue priority of a waiting job: minus its position in the batch, so that jobs
    leave in batch order whatever order they were put in (a retried job gets
    :data:`RETRY_PRIORITY` and goes first)."""
    return -min(MAX_ORDER, int(record.get("index", 0)))


MAX_ORDER: Final = 1_000_000
RETRY_PRIORITY: Final = 1


class BatchStore:
    """The records of one batch on a backend."""

    def __init__(self, backend: Backend, batch: str) -> None:
        self.batch = batch
        self.state = SharedState(f"jobs:{batch}", backend)
        # Messages are taken with get() (removed at once): the job record, not the queue,
        # is what survives a crash, and reconcile() puts back any pending job.
        self.queue = MessageQueue(f"jobs:{batch}", backend)
        self.index = SharedState(INDEX_BUCKET, backend)

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> dict[str, Any]:
        """Every record of the batch, read at once."""
        return dict(self.state.snapshot())

    def jobs(self, snap: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Job records by name, in batch order."""
        snap = self.snapshot() if snap is None else snap
        found = {k[len(_JOB) :]: v for k, v in snap.items() if k.startswith(_JOB)}
        return dict(sorted(found.items(), key=lambda kv: int(kv[1].get("index", 0))))

    def hosts(self, snap: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Host records by host name."""
        snap = self.snapshot() if snap is None else snap
        return {k[len(_HOST) :]: v for k, v in snap.items() if k.startswith(_HOST)}

    def managers(self, snap: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Manager heartbeat records by manager id."""
        snap = self.snapshot() if snap is None else snap
        return {k[len(_MANAGER) :]: v for k, v in snap.items() if k.startswith(_MANAGER)}

    def job(self, name: str) -> dict[str, Any] | None:
        """One job record, or None."""
        value = self.state.get(_JOB + name)
        return value if isinstance(value, dict) else None

    def meta(self) -> dict[str, Any] | None:
        """The batch's meta record (None when the batch does not exist)."""
        value = self.state.get("meta")
        return value if isinstance(value, dict) else None

    # ---------------------------------------------------------------- writing
    def ensure_meta(self, results_dir: str) -> dict[str, Any]:
        """Create the meta record (first manager) or return the existing one."""
        new: dict[str, JSON] = {
            "batch": self.batch,
            "created": time.time(),
            "results_dir": results_dir,
        }
        self.state.compare_and_set("meta", None, new)
        meta: dict[str, Any] = self.meta() or new
        created: JSON = meta.get("created")
        self.index.compare_and_set(self.batch, None, {"created": created})
        return meta

    def add_job(self, record: dict[str, Any], existing: dict[str, Any] | None) -> bool:
        """Store a new job record and queue it; True if it was new.

        Raises:
            BatchMismatch: a job of that name exists with another command or files.
        """
        name = record["name"]
        if existing is None:
            if self.state.compare_and_set(_JOB + name, None, record):
                self.put(name, record["attempts"], order_priority(record))
                return True
            existing = self.job(name)
        if existing is not None and (
            existing.get("argv") != record["argv"] or existing.get("files") != record["files"]
        ):
            raise BatchMismatch(
                f"job {name!r} of batch {self.batch!r} already exists with another command "
                f"or files; use another batch name (or forget this batch first)"
            )
        return False

    def put(self, name: str, attempts: int, priority: int) -> None:
        """Queue job ``name`` (the message id names the attempt, so a repeated put of the
        same waiting job stores one message)."""
        self.queue.put(name, priority=priority, id=f"{name}@{attempts}")

    def take(self) -> str | None:
        """The next queued job name, or None."""
        try:
            body = self.queue.get(block=False)
        except Empty:
            return None
        return body if isinstance(body, str) else None

    def replace_job(self, name: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Compare-and-set a job record; True if ``old`` was still current."""
        return self.state.compare_and_set(_JOB + name, old, new)

    def update_job(
        self, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Apply ``fn`` to the current record by compare-and-set, retrying on a race; ``fn``
        returns None to leave the record alone. Returns the stored record (or None)."""
        while True:
            current = self.job(name)
            if current is None:
                return None
            new = fn(dict(current))
            if new is None:
                return None
            if self.state.compare_and_set(_JOB + name, current, new):
                return new

    def set_host(self, host: str, record: dict[str, Any]) -> None:
        """Store the last known state of ``host``."""
        self.state[_HOST + host] = record

    def heartbeat(self, manager_id: str, record: dict[str, Any]) -> None:
        """Store a manager's heartbeat record."""
        self.state[_MANAGER + manager_id] = record

    def drop_manager(self, manager_id: str) -> None:
        """Remove a manager's heartbeat record (it stopped cleanly)."""
        self.state.pop(_MANAGER + manager_id, None)

    def forget(self) -> None:
        """Delete the whole batch: records, queue and index entry."""
        self.state.clear()
        self.queue.purge(dead=True)
        self.index.pop(self.batch, None)
