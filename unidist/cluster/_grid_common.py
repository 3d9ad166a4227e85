"""Names and liveness checks shared by the grid's clients (:mod:`unidist.cluster.grid`) and
servers (:mod:`unidist.cluster._grid_server`).

Everything a service needs lives in the backend under names derived from its id:

* state bucket ``unidist.grid``: service id → the service record (factory, args, hosts...);
* state bucket ``unidist.grid.<service>``: server id → ``{"state": "free"|"busy", ...}``;
* queue ``unidist.grid.<service>.free``: hints "server S may be free";
* queue ``unidist.grid.<server>.req``: the requests of one server, in order;
* membership (group = the service id): one member per live server, one per client.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from typing import Final

from unidist.backends.base import Backend
from unidist.cluster.membership import MEMBERS_GROUP, Member
from unidist.codec import JSON

REGISTRY: Final = "unidist.grid"
#: seconds between two looks at liveness while waiting for a reply or an idle request queue.
TICK: Final = 0.25
#: seconds between two re-puts of an idle server's free hint (a lost hint comes back).
REHINT: Final = 2.0
#: priority of stop requests: ahead of every queued call.
STOP_PRIORITY: Final = 1_000_000


def status_bucket(service_id: str) -> str:
    """The state bucket of a service's server states."""
    return f"{REGISTRY}.{service_id}"


def free_queue(service_id: str) -> str:
    """The queue of a service's free-server hints."""
    return f"{REGISTRY}.{service_id}.free"


def request_queue(server_id: str) -> str:
    """The request queue of one server."""
    return f"{REGISTRY}.{server_id}.req"


@functools.lru_cache(maxsize=1)
def this_host_names() -> frozenset[str]:
    """The names under which this host can be meant (for local starts and pid checks);
    looked up once per process (``getfqdn`` may ask DNS)."""
    host = socket.gethostname()
    names = {"localhost", "127.0.0.1", "::1", host, host.split(".", 1)[0]}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    return frozenset(names)


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        stat = b""
    if stat:
        # The state letter follows the ")" that closes the command name.
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        return state not in (b"Z", b"X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_members(backend: Backend) -> dict[str, Member]:
    """Every live member (id → member) of the backend's membership."""
    raw: dict[str, dict[str, JSON]] = backend.members(MEMBERS_GROUP)
    return {mid: Member.from_record(mid, info) for mid, info in raw.items()}


def live_servers(backend: Backend, service_id: str) -> list[Member]:
    """The live servers of a service (a server on this host whose pid is gone is dead,
    even while its heartbeat record has not expired yet)."""
    here = socket.gethostname()
    return [
        m
        for m in live_members(backend).values()
        if service_id in m.groups and (m.host != here or pid_alive(m.pid))
    ]


def member_alive(backend: Backend, member_id: str, incarnation: str, host: str, pid: int) -> bool:
    """True while the member's heartbeat record (this incarnation) is live and, on this
    host, its process exists (so that a ``kill -9`` is noticed at once, not after the ttl)."""
    if host == socket.gethostname() and not pid_alive(pid):
        return False
    member = live_members(backend).get(member_id)
    return member is not None and (not incarnation or member.incarnation == incarnation)
