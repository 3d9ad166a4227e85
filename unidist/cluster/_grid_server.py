"""One server of a published service: the loop that ``unidist serve`` runs.

A server creates one instance of the service's factory, joins the membership (group = the
service id) and then takes requests from its own queue one at a time (``get``: a request
is removed before it runs, so it runs at most once):

* ``bind`` (from a client that took this server's free hint): binds the server to the
  client's lease, or refuses if another lease holds it;
* ``call``: runs ``instance.method(*args, **kwargs)`` for the bound lease and replies with
  the JSON result or the exception's type, message and traceback;
* ``release``: unbinds and puts a new free hint;
* ``stop``: leaves the membership and returns.

It also stops when its service record is gone (terminated) or, with ``exit_with``, when
that process has exited.

While bound and idle it checks that the client is still a live member; a client that died
frees the server. While free and idle it re-puts its hint (same id, so at most one is queued),
so a hint taken by a client that died before binding comes back.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

from unidist.backends.base import Backend
from unidist.cluster._grid_common import (
    REGISTRY,
    REHINT,
    free_queue,
    live_members,
    pid_alive,
    request_queue,
    status_bucket,
)
from unidist.cluster.membership import Membership
from unidist.codec import JSON
from unidist.errors import Empty, RemoteError, SerializationError, UnidistError
from unidist.queue import MessageQueue
from unidist.state import SharedState

#: seconds a server waits on its request queue before it looks around.
IDLE: Final = 0.5
#: seconds between two checks that the service still exists / the client still lives.
CHECK: Final = 1.0
#: a server gives up after the backend failed for this many ttls in a row.
OUTAGE_TTLS: Final = 10


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:Name"`` (``Name`` may be dotted).

    Raises:
        ValueError: ``spec`` is not of that form.
        ImportError, AttributeError: the module or name does not exist.
        TypeError: the name is not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"factory must look like 'package.module:Factory', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"factory {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def error_fields(exc: BaseException) -> dict[str, JSON]:
    """The JSON description of an exception that crosses the wire."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return {
        "type": name,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class Server:
    """One server of service ``service_id`` (see the module docs).

    Args:
        backend: the grid's backend.
        service_id: the service, whose record names the factory and its arguments.
        server_id: this server's id (member id; names its request queue).
        ttl: membership heartbeat ttl in seconds.
        exit_with: stop once this process (on this host) is gone.
    """

    def __init__(
        self,
        backend: Backend,
        service_id: str,
        server_id: str,
        ttl: float,
        exit_with: int | None = None,
    ) -> None:
        self.backend = backend
        self.exit_with = exit_with
        self.service_id = service_id
        self.server_id = server_id
        self.ttl = ttl
        self.requests = MessageQueue(request_queue(server_id), backend)
        self.free = MessageQueue(free_queue(service_id), backend)
        self.status = SharedState(status_bucket(service_id), backend)
        self.registry = SharedState(REGISTRY, backend)
        self.membership: Membership | None = None
        self.instance: Any = None
        self.lease: str | None = None
        self.client = ""
        self.generation = 0
        self._last_hint = 0.0
        self._last_check = 0.0
        self._written = ""  # the state last written to the status bucket

    # ------------------------------------------------------------------ start / stop
    def start(self) -> dict[str, JSON]:
        """Create the instance, join the membership and offer this server.

        Returns:
            ``{"server", "host", "pid", "incarnation"}``.

        Raises:
            RemoteError: the service is unknown or its factory failed (type, message and
                traceback of the factory's exception).
        """
        record = self.registry.get(self.service_id)
        if not isinstance(record, dict):
            raise RemoteError(
                f"no service {self.service_id!r} on {self.backend.url}", type_name="LookupError"
            )
        try:
            factory = load_factory(str(record.get("factory")))
            args = record.get("args") or []
            kwargs = record.get("kwargs") or {}
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("the service record's args/kwargs are not a list/object")
            self.instance = factory(*args, **kwargs)
        except Exception as exc:
            fields = error_fields(exc)
            raise RemoteError(
                f"{fields['type']}: {fields['message']}",
                type_name=str(fields["type"]),
                remote_traceback=str(fields["traceback"]),
            ) from exc
        self.membership = Membership(
            self.backend,
            self.server_id,
            groups=[self.service_id],
            meta={"role": "grid-server", "service": self.service_id},
            ttl=self.ttl,
            current=False,
        ).join()
        self._become_free()
        return {
            "server": self.server_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "incarnation": self.membership.incarnation,
        }

    def close(self) -> None:
        """Leave the membership and drop this server's status entry (idempotent; with the
        backend unreachable the membership record simply expires after the ttl)."""
        with contextlib.suppress(UnidistError):
            if self.membership is not None:
                self.membership.leave()
        with contextlib.suppress(UnidistError):
            self.status.pop(self.server_id, None)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Serve requests until a ``stop`` request or the service record disappears.

        Raises:
            BackendUnavailable: the backend stayed unreachable for ``OUTAGE_TTLS`` ttls.
        """
        failing_since: float | None = None
        while True:
            try:
                try:
                    request = self.requests.get(timeout=IDLE)
                except Empty:
                    if not self._idle():
                        return
                    continue
                if isinstance(request, dict) and not self._handle(request):
                    return
                failing_since = None
            except UnidistError:
                # Backend trouble: keep trying for a while (clients see this server leave
                # the membership after its ttl, so they stop waiting for it meanwhile).
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since > OUTAGE_TTLS * self.ttl:
                    raise
                time.sleep(IDLE)

    def _idle(self) -> bool:
        """Housekeeping between requests; False when the server should stop."""
        now = time.monotonic()
        if now - self._last_check >= CHECK:
            self._last_check = now
            if self.exit_with is not None and not pid_alive(self.exit_with):
                return False
            try:
                if self.service_id not in self.registry:
                    return False
                if self.lease is not None and self.client not in live_members(self.backend):
                    self._become_free()
            except UnidistError:  # backend trouble: try again at the next check
                return True
        if self.lease is None and now - self._last_hint >= REHINT:
            if self._written != "free":  # a status write failed: clients skip busy servers
                self._set_status("free")
            self._put_hint()
        return True

    def _handle(self, request: dict[str, JSON]) -> bool:
        op = request.get("op")
        lease = request.get("lease")
        if op == "stop":
            return False
        if op == "bind":
            if self.lease is None or self.lease == lease:
                self.lease = str(lease)
                self.client = str(request.get("client", ""))
                self._set_status("busy")
                self._reply(request, {"bound": True})
            else:
                self._reply(request, {"bound": False})
        elif op == "release":
            if lease is not None and lease == self.lease:
                self._become_free()
        elif op == "call":
            if lease is None or lease != self.lease:
                self._reply(request, {"lost": "this server is no longer bound to the proxy"})
            else:
                self._reply(request, self._call(request))
        return True

    def _call(self, request: dict[str, JSON]) -> dict[str, JSON]:
        method = request.get("method")
        args = request.get("args") or []
        kwargs = request.get("kwargs") or {}
        try:
            if not isinstance(method, str) or not method or method.startswith("_"):
                raise AttributeError(f"no public method {method!r} on the service")
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("args must be a JSON list and kwargs a JSON object")
            fn = getattr(self.instance, method)
            if not callable(fn):
                raise TypeError(f"{method!r} is not a method of the service")
            result = fn(*args, **kwargs)
        except Exception as exc:
            return {"error": error_fields(exc)}
        return {"result": result}

    def _reply(self, request: dict[str, JSON], body: dict[str, JSON]) -> None:
        reply_to = request.get("reply")
        if not isinstance(reply_to, str):
            return
        body["call"] = request.get("call")
        queue = MessageQueue(reply_to, self.backend)
        try:
            queue.put(body)
        except SerializationError as exc:
            error = error_fields(exc)
            error["message"] = f"the result is not JSON: {exc}"
            queue.put({"call": request.get("call"), "error": error})

    # ------------------------------------------------------------------ helpers
    def _set_status(self, state: str) -> None:
        self._written = ""
        self.status[self.server_id] = self._status(state)
        self._written = state

    def _status(self, state: str) -> dict[str, JSON]:
        return {
            "state": state,
            "client": self.client if state == "busy" else None,
            "since": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def _become_free(self) -> None:
        self.lease = None
        self.client = ""
        self.generation += 1
        self._set_status("free")
        self._put_hint()

    def _put_hint(self) -> None:
        self._last_hint = time.monotonic()
        try:
            self.free.put({"server": self.server_id}, id=f"{self.server_id}.g{self.generation}")
        except UnidistError:  # retried at the next REHINT
            pass
