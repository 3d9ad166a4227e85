"""Cluster definition files (clusterit ``GROUP:``/``LUMP:`` format) and live membership.

* :func:`load` reads a cluster file (argument, else ``$CLUSTER``) into a :class:`Cluster`:
  ``groups``, ``group(name)``, ``hosts``, ``groups_of(host)``, ``hostname``, ``shortname``,
  ``properties()``.
* :class:`Membership` joins a backend as a live member with heartbeats; ``members()``,
  ``watch()`` and ``events()`` show who is alive. While joined it is the process's
  :func:`current` membership, which lock owner records, log records and queue deliveries
  carry.
"""

from __future__ import annotations

from unidist.cluster._current import current
from unidist.cluster.files import ALL, ORPHANS, Cluster, load, parse
from unidist.cluster.membership import MEMBERS_GROUP, Member, MemberEvent, Membership

__all__ = [
    "ALL",
    "MEMBERS_GROUP",
    "ORPHANS",
    "Cluster",
    "Member",
    "MemberEvent",
    "Membership",
    "current",
    "load",
    "parse",
]
