"""Cluster definition files, live membership, remote commands, jobs, services, resource groups.

* :func:`load` reads a cluster file (argument, else ``$CLUSTER``) into a :class:`Cluster`:
  ``groups``, ``group(name)``, ``hosts``, ``groups_of(host)``, ``hostname``, ``shortname``,
  ``properties()``.
* :class:`Membership` joins a backend as a live member with heartbeats; ``members()``,
  ``watch()`` and ``events()`` show who is alive. While joined it is the process's
  :func:`current` membership, which lock owner records, log records and queue deliveries
  carry.
* :func:`run`, :func:`copy` and :func:`write_remote_file` run commands and copy files on
  cluster hosts with the system ``ssh``/``scp`` (module :mod:`unidist.cluster.remote`).
* :class:`JobSpec` and :class:`JobManager` farm a batch of jobs out over hosts, resumable
  through a backend (module :mod:`unidist.cluster.jobs`).
* :class:`Grid` publishes services on hosts and hands out proxies to free servers (module
  :mod:`unidist.cluster.grid`); :mod:`unidist.cluster.clinit` runs resource groups at run
  levels.

The remote, jobs and grid names are imported on first use, so ``import unidist.cluster``
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from unidist.cluster._current import current
from unidist.cluster.files import ALL, ORPHANS, Cluster, load, parse
from unidist.cluster.membership import MEMBERS_GROUP, Member, MemberEvent, Membership

if TYPE_CHECKING:
    from unidist.cluster.grid import Grid
    from unidist.cluster.jobs import JobManager, JobSpec
    from unidist.cluster.remote import Result, copy, run, write_remote_file

_LAZY = {
    "Result": "unidist.cluster.remote",
    "run": "unidist.cluster.remote",
    "copy": "unidist.cluster.remote",
    "write_remote_file": "unidist.cluster.remote",
    "JobSpec": "unidist.cluster.jobs",
    "JobManager": "unidist.cluster.jobs",
    "Grid": "unidist.cluster.grid",
}

__all__ = [
    "ALL",
    "MEMBERS_GROUP",
    "ORPHANS",
    "Cluster",
    "Grid",
    "JobManager",
    "JobSpec",
    "Member",
    "MemberEvent",
    "Membership",
    "Result",
    "copy",
    "current",
    "load",
    "parse",
    "run",
    "write_remote_file",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unidist.cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
