"""Services published on hosts: start servers of a factory, hand out proxies to free ones.

::

    grid = unidist.cluster.Grid("redis://db:6379/0", ["node1", "node2"])
    sid = grid.publish("mypkg.workers:Resizer", instances_per_host=2, args=["/srv/img"])
    with grid.acquire(sid, timeout=30) as proxy:      # one free server, for us alone
        proxy.resize("a.jpg", width=640)                # runs on that server; JSON in, JSON out
    grid.services()                                     # [ServiceInfo(id=..., free=4, busy=0, ...)]
    grid.terminate(sid)

How it works (built from unidist's own primitives, see :mod:`unidist.cluster._grid_common`):
``publish`` records the service in the state bucket ``unidist.grid`` and starts
``unidist serve`` once per instance, as a local subprocess for this host and over ``ssh``
otherwise. Each server joins the membership (group = the service id), creates one
instance of the factory and puts a "free" hint in the service's free queue. ``acquire``
takes a hint, checks that the server is live, and binds it with a lease (the server
refuses a second lease, so a stale hint can never give two clients one server). Calls go
through the server's request queue and come back on a reply queue of the client. A client
is itself a member, so a client that dies frees its server.

Failure semantics: a call whose server dies (``kill -9``, host lost, lease lapsed) raises
:class:`~unidist.errors.ServiceLost` as soon as the client notices: at once for a server on
this host (its pid is gone), else within the membership ``ttl``. Such a call ran at most
once: requests are taken off the queue before they run and never retried.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from unidist._clock import Deadline, check_timeout
from unidist.backends import connect
from unidist.backends.base import Backend
from unidist.cluster._grid_common import (
    REGISTRY,
    STOP_PRIORITY,
    TICK,
    free_queue,
    live_members,
    live_servers,
    member_alive,
    pid_alive,
    request_queue,
    status_bucket,
    this_host_names,
)
from unidist.cluster.membership import MEMBERS_GROUP, Member, Membership
from unidist.cluster.remote import resolve_targets, ssh_argv
from unidist.codec import JSON, encode
from unidist.errors import Empty, LockTimeout, RemoteError, ServiceLost, UnidistError
from unidist.queue import MessageQueue
from unidist.state import SharedState

__all__ = ["Grid", "ServiceInfo", "ServiceProxy"]

#: seconds between two membership looks while waiting for a reply (pid checks every TICK).
_MEMBER_CHECK: Final = 1.0
#: seconds between two checks that an awaited service still exists.
_SERVICE_CHECK: Final = 1.0


@dataclass(frozen=True)
class ServiceInfo:
    """A published service as seen now (from :meth:`Grid.services`).

    Attributes:
        id: the service id.
        factory: ``"package.module:Factory"``.
        hosts: the target hosts it was published on.
        instances_per_host: servers started per host.
        servers: live servers now.
        free: live servers not bound to a proxy.
        busy: live servers bound to a proxy.
        created_at: Unix seconds of the publish.
    """

    id: str
    factory: str
    hosts: tuple[str, ...]
    instances_per_host: int
    servers: int
    free: int
    busy: int
    created_at: float

    def to_dict(self) -> dict[str, JSON]:
        """A JSON object of the fields."""
        return {
            "id": self.id,
            "factory": self.factory,
            "hosts": list(self.hosts),
            "instances_per_host": self.instances_per_host,
            "servers": self.servers,
            "free": self.free,
            "busy": self.busy,
            "created_at": self.created_at,
        }


class ServiceProxy:
    """A client's handle on one server of a service, from :meth:`Grid.acquire`.

    ``proxy.name(*args, **kwargs)`` (or ``proxy.call("name", ...)``) runs the method on the
    bound server and returns its result; calls from several threads on one proxy run one
    after another. Arguments and results are JSON. Use as a context manager, or give it
    back with :meth:`release`.

    Attributes:
        service_id: the service.
        server_id: the bound server.
        host: the host the server runs on (its own name for itself).
        pid: the server's process id.
    """

    def __init__(self, grid: Grid, service_id: str, member: Member, lease: str, reply: str) -> None:
        self._grid = grid
        self.service_id = service_id
        self.server_id = member.id
        self.host = member.host
        self.pid = member.pid
        self._incarnation = member.incarnation
        self._lease = lease
        self._reply_name = reply
        self._reply = MessageQueue(reply, grid.backend)
        self._requests = MessageQueue(request_queue(member.id), grid.backend)
        self._lock = threading.Lock()
        self._released = False
        self._lost = False

    def __repr__(self) -> str:
        state = "released" if self._released else "lost" if self._lost else "bound"
        return f"<ServiceProxy {self.server_id} on {self.host} pid {self.pid} {state}>"

    def __getattr__(self, name: str) -> Callable[..., JSON]:
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args: JSON, **kwargs: JSON) -> JSON:
            return self.call(name, *args, **kwargs)

        method.__name__ = name
        return method

    def call(self, method: str, *args: JSON, **kwargs: JSON) -> JSON:
        """Run ``method(*args, **kwargs)`` on the bound server and return its result.

        Raises:
            RemoteError: the method raised (``type_name``, message, ``remote_traceback``),
                or its result was not JSON.
            SerializationError: an argument is not JSON (nothing was sent).
            ServiceLost: the server died or left while the call was in flight (the call ran
                at most once), or the proxy was already released or lost.
            BackendUnavailable: the backend failed while the call was in flight (the call
                may or may not have run).
        """
        with self._lock:
            if self._released:
                raise ServiceLost(f"the proxy for {self.server_id} was released; acquire again")
            if self._lost:
                raise ServiceLost(f"server {self.server_id} of service {self.service_id} was lost")
            call_id = uuid.uuid4().hex
            self._requests.put(
                {
                    "op": "call",
                    "lease": self._lease,
                    "call": call_id,
                    "method": method,
                    "args": list(args),
                    "kwargs": dict(kwargs),
                    "reply": self._reply_name,
                }
            )
            reply = self._wait(call_id)
        if "lost" in reply:
            self._lost = True
            raise ServiceLost(f"server {self.server_id}: {reply['lost']}")
        error = reply.get("error")
        if isinstance(error, dict):
            type_name = str(error.get("type", ""))
            raise RemoteError(
                f"{type_name}: {error.get('message', '')} (in {method} on {self.server_id})",
                type_name=type_name,
                remote_traceback=str(error.get("traceback", "")),
            )
        return reply.get("result")

    def _wait(self, call_id: str) -> dict[str, JSON]:
        """The reply to ``call_id``; ServiceLost once the server is no longer alive."""
        be = self._grid.backend
        next_member_check = time.monotonic() + _MEMBER_CHECK
        local = self.host in this_host_names()
        while True:
            try:
                body = self._reply.get(timeout=TICK)
            except Empty:
                body = None
            if isinstance(body, dict) and body.get("call") == call_id:
                return body
            if body is not None:
                continue  # a stale reply of an abandoned call
            now = time.monotonic()
            dead = local and not pid_alive(self.pid)
            if not dead and now >= next_member_check:
                next_member_check = now + _MEMBER_CHECK
                dead = not member_alive(be, self.server_id, self._incarnation, self.host, self.pid)
            if dead:
                self._lost = True
                raise ServiceLost(
                    f"server {self.server_id} of service {self.service_id} "
                    f"(host {self.host}, pid {self.pid}) died or left during the call"
                )

    def release(self) -> None:
        """Give the server back to the pool (idempotent; a lost server is not given back)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        try:
            # Sent after a loss too: a server that only lapsed its lease then frees itself.
            self._requests.put({"op": "release", "lease": self._lease})
        finally:
            self._grid._return_reply(self._reply_name)

    def __enter__(self) -> ServiceProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _backend_url(backend: Backend) -> str:
    # The servers need the full URL (with any password); Backend.url is redacted.
    parsed = getattr(backend, "_parsed", None)
    url = getattr(parsed, "url", None)
    return url if isinstance(url, str) else backend.url


class Grid:
    """Publishes services on hosts and hands out proxies to their free servers.

    Args:
        backend: a Backend or URL shared by this process and every server: ``file://``
            when every target is this host, ``redis://`` across hosts (not ``memory://``).
        targets: the hosts to publish on, as for :func:`unidist.cluster.run`: host names,
            group or lump names of the cluster file (``$CLUSTER``), comma-separated lists
            of those, or an iterable of them. ``"localhost"`` and this host's own names
            start local subprocesses; other hosts are reached over ``ssh``. Default: this
            host.
        ttl: membership heartbeat ttl (seconds) of servers and of this client: a server
            that dies on another host is noticed within about ``ttl``, a client that dies
            frees its servers within about ``ttl``.
        command: the command that runs ``unidist serve`` on a target (default: this Python
            interpreter's path with ``-m unidist serve``, which must exist on every target).
            Extra ``serve`` options may follow, e.g. ``[..., "serve", "--log", "/tmp/s.log"]``.
        pythonpath: directories the servers put in front of ``sys.path`` to import the factory.
        url: the URL given to the servers (default: the backend's own URL, password
            included; it appears on the servers' command lines).
        ssh_options: extra ssh options (default ``$UNIDIST_SSH_OPTIONS``).
        start_timeout: seconds a server may take to start and register.

    Raises:
        ValueError: a ``memory://`` backend, or a ``file://`` backend with a remote target.
        ValueError: a bad host name in ``targets``.
        ClusterFileError: the cluster file cannot be read.
    """

    def __init__(
        self,
        backend: Backend | str | None = None,
        targets: str | Iterable[str] | None = None,
        *,
        ttl: float = 10,
        command: Sequence[str] | None = None,
        pythonpath: Sequence[str] = (),
        url: str | None = None,
        ssh_options: Sequence[str] | None = None,
        start_timeout: float = 60,
    ) -> None:
        if isinstance(backend, Backend):
            self.backend = backend
        elif backend is None or isinstance(backend, str):
            self.backend = connect(backend)
        else:
            raise TypeError(
                f"backend must be a Backend, a URL string or None, not {type(backend).__name__}"
            )
        hosts = ("localhost",) if targets is None else tuple(resolve_targets(targets))
        if not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise ValueError(f"targets must name at least one host, got {targets!r}")
        self.targets = hosts
        if self.backend.scope == "process":
            raise ValueError(
                f"{self.backend.url} is private to this process; servers need a file:// "
                "(one host) or redis:// (many hosts) backend"
            )
        local = this_host_names()
        if self.backend.scope == "host" and any(h not in local for h in hosts):
            remote = [h for h in hosts if h not in local]
            raise ValueError(
                f"{self.backend.url} is shared by the processes of one host only; "
                f"remote targets {remote} need a redis:// backend"
            )
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        self.ttl = float(ttl)
        self.command = (
            [sys.executable, "-m", "unidist", "serve"] if command is None else list(command)
        )
        if not self.command:
            raise ValueError("command must not be empty")
        self.pythonpath = [str(p) for p in pythonpath]
        self.url = _backend_url(self.backend) if url is None else url
        self.ssh_options = None if ssh_options is None else list(ssh_options)
        self.start_timeout = float(start_timeout)
        self.registry = SharedState(REGISTRY, self.backend)
        self._lock = threading.Lock()
        self._client: Membership | None = None
        self._client_id = f"unidist.grid.client.{secrets.token_hex(6)}"
        self._replies: list[str] = []
        self._reply_seq = 0

    def __repr__(self) -> str:
        return f"<Grid on {self.backend.url} targets={list(self.targets)}>"

    # ------------------------------------------------------------------ publish
    def publish(
        self,
        factory: str,
        instances_per_host: int = 1,
        args: Sequence[JSON] = (),
        kwargs: Mapping[str, JSON] | None = None,
    ) -> str:
        """Start ``instances_per_host`` servers of ``factory`` on every target host.

        Each server runs ``unidist serve``, creates ``factory(*args, **kwargs)`` and
        registers in the membership under the returned service id. Returns once every
        server is registered and free.

        Args:
            factory: ``"package.module:Factory"``, importable on the targets.
            instances_per_host: servers per host (>= 1).
            args, kwargs: JSON arguments of the factory.

        Returns:
            The service id.

        Raises:
            ValueError: a malformed factory or instance count.
            SerializationError: ``args`` or ``kwargs`` are not JSON.
            RemoteError: a server failed to start: the factory raised (``type_name`` and
                ``remote_traceback`` are the factory's), or the start command or ssh
                failed (``type_name`` empty, the message carries its stderr). The servers
                already started are stopped.
        """
        module, sep, attr = factory.partition(":") if isinstance(factory, str) else ("", "", "")
        if not sep or not module or not attr:
            raise ValueError(f"factory must look like 'package.module:Factory', got {factory!r}")
        if isinstance(instances_per_host, bool) or not isinstance(instances_per_host, int):
            raise TypeError("instances_per_host must be an int")
        if instances_per_host < 1:
            raise ValueError(f"instances_per_host must be >= 1, got {instances_per_host}")
        arg_list: list[JSON] = list(args)
        kw: dict[str, JSON] = {} if kwargs is None else dict(kwargs)
        encode([arg_list, kw])
        service_id = f"svc-{secrets.token_hex(6)}"
        servers: dict[str, JSON] = {}
        for host in self.targets:
            for _ in range(instances_per_host):
                servers[f"{service_id}.{len(servers) + 1}"] = host
        self.registry[service_id] = {
            "factory": factory,
            "args": arg_list,
            "kwargs": kw,
            "instances_per_host": instances_per_host,
            "hosts": list(self.targets),
            "servers": servers,
            "created_at": time.time(),
        }
        started = [
            (sid, str(host), self._start(service_id, sid, str(host)))
            for sid, host in servers.items()
        ]
        failure: RemoteError | None = None
        for server_id, host, proc in started:
            error = self._started(server_id, host, proc)
            if error is not None and failure is None:
                failure = error
        if failure is not None:
            self.terminate(service_id)
            raise failure
        return service_id

    def _serve_argv(self, service_id: str, server_id: str) -> list[str]:
        argv = [*self.command, "--url", self.url, "--ttl", repr(self.ttl), "--detach"]
        for path in self.pythonpath:
            argv += ["--path", path]
        return [*argv, service_id, server_id]

    def _start(self, service_id: str, server_id: str, host: str) -> subprocess.Popen[str]:
        argv = self._serve_argv(service_id, server_id)
        if host not in this_host_names():
            argv = ssh_argv(host, argv, ssh_options=self.ssh_options)
        return subprocess.Popen(  # noqa: S603 - our own serve command line, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _started(
        self, server_id: str, host: str, proc: subprocess.Popen[str]
    ) -> RemoteError | None:
        """Wait for one ``serve --detach``; None if its server is up, else the error."""
        import json

        try:
            out, err = proc.communicate(timeout=self.start_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return RemoteError(
                f"server {server_id} on {host} did not start within {self.start_timeout:g}s"
            )
        report: Any = None
        for line in reversed(out.splitlines()):
            with contextlib.suppress(ValueError):
                report = json.loads(line)
                break
        if proc.returncode == 0 and isinstance(report, dict) and report.get("ready"):
            return None
        error = report.get("error") if isinstance(report, dict) else None
        if isinstance(error, dict):
            type_name = str(error.get("type", ""))
            return RemoteError(
                f"server {server_id} on {host} failed to start: {type_name}: "
                f"{error.get('message', '')}",
                type_name=type_name,
                remote_traceback=str(error.get("traceback", "")),
            )
        tail = (err or out).strip()[-2000:]
        return RemoteError(
            f"server {server_id} on {host} failed to start (exit {proc.returncode}): {tail}"
        )

    # ------------------------------------------------------------------ acquire / release
    def acquire(self, service_id: str, timeout: float | None = None) -> ServiceProxy:
        """A proxy bound to one free server of the service, for this caller alone.

        Blocks until a server is free. Servers that died are skipped (and never handed out).

        Args:
            service_id: from :meth:`publish`.
            timeout: seconds to wait for a free server (None: forever).

        Raises:
            LockTimeout: no server became free within ``timeout``.
            ServiceLost: the service does not exist, was terminated, or has no live
                server left (every server died).
        """
        timeout = check_timeout(timeout)
        if service_id not in self.registry:
            raise ServiceLost(f"no service {service_id!r} on {self.backend.url}")
        client = self._join()
        free = MessageQueue(free_queue(service_id), self.backend)
        deadline = Deadline(timeout)
        next_check = time.monotonic() + _SERVICE_CHECK
        while True:
            try:
                hint = free.get(timeout=deadline.remaining(_SERVICE_CHECK))
            except Empty:
                hint = None
            if hint is None:
                if deadline.expired:
                    raise LockTimeout(
                        f"no free server of service {service_id!r} within {timeout:g}s",
                        name=service_id,
                    )
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + _SERVICE_CHECK
                    if service_id not in self.registry:
                        raise ServiceLost(f"service {service_id!r} was terminated")
                    if not live_servers(self.backend, service_id):
                        raise ServiceLost(f"service {service_id!r} has no live server left")
                continue
            server_id = hint.get("server") if isinstance(hint, dict) else None
            if not isinstance(server_id, str):
                continue
            proxy = self._bind(service_id, server_id, client)
            if proxy is not None:
                return proxy

    def _bind(self, service_id: str, server_id: str, client: Membership) -> ServiceProxy | None:
        member = live_members(self.backend).get(server_id)
        if member is None or (member.host in this_host_names() and not pid_alive(member.pid)):
            return None  # the hint of a dead server: dropped
        state = SharedState(status_bucket(service_id), self.backend).get(server_id)
        if isinstance(state, dict) and state.get("state") == "busy":
            return None  # a duplicate hint of a bound server (it puts a new one when freed)
        reply = self._borrow_reply()
        lease = uuid.uuid4().hex
        proxy = ServiceProxy(self, service_id, member, lease, reply)
        call_id = uuid.uuid4().hex
        ok = False
        try:
            proxy._requests.put(
                {
                    "op": "bind",
                    "lease": lease,
                    "client": client.member_id,
                    "call": call_id,
                    "reply": reply,
                }
            )
            answer = proxy._wait(call_id)
            ok = answer.get("bound") is True
        except ServiceLost:
            ok = False
        finally:
            if not ok:
                self._return_reply(reply)
        if not ok:
            # In case the server only looked dead and binds later: this frees it again.
            with contextlib.suppress(UnidistError):
                proxy._requests.put({"op": "release", "lease": lease})
            return None
        return proxy

    def release(self, proxy: ServiceProxy) -> None:
        """Give ``proxy``'s server back to the pool (same as ``proxy.release()``)."""
        proxy.release()

    def _join(self) -> Membership:
        with self._lock:
            if self._client is None:
                self._client = Membership(
                    self.backend,
                    self._client_id,
                    groups=(),
                    meta={"role": "grid-client"},
                    ttl=self.ttl,
                    current=False,
                ).join()
            return self._client

    def _borrow_reply(self) -> str:
        with self._lock:
            if self._replies:
                return self._replies.pop()
            self._reply_seq += 1
            return f"{self._client_id}.r{self._reply_seq}"

    def _return_reply(self, name: str) -> None:
        with self._lock:
            self._replies.append(name)

    # ------------------------------------------------------------------ inspection / stop
    def services(self) -> list[ServiceInfo]:
        """Every published service with its live, free and busy server counts (by id)."""
        out: list[ServiceInfo] = []
        for service_id, record in sorted(self.registry.items()):
            if not isinstance(record, dict):
                continue
            live = {m.id for m in live_servers(self.backend, service_id)}
            states = SharedState(status_bucket(service_id), self.backend).snapshot()
            busy = 0
            for mid in live:
                state = states.get(mid)
                if isinstance(state, dict) and state.get("state") == "busy":
                    busy += 1
            hosts = record.get("hosts")
            n = record.get("instances_per_host")
            created = record.get("created_at")
            out.append(
                ServiceInfo(
                    id=service_id,
                    factory=str(record.get("factory", "")),
                    hosts=tuple(str(h) for h in hosts) if isinstance(hosts, list) else (),
                    instances_per_host=n if isinstance(n, int) else 0,
                    servers=len(live),
                    free=len(live) - busy,
                    busy=busy,
                    created_at=float(created) if isinstance(created, (int, float)) else 0.0,
                )
            )
        return out

    def terminate(self, service_id: str, timeout: float = 10) -> int:
        """Stop every server of the service and forget it.

        Each server gets a stop request ahead of its queued calls (a call running now
        finishes first); servers still alive after ``timeout`` seconds are killed
        (``SIGKILL``, over ssh for remote hosts). Proxies bound to them raise
        :class:`ServiceLost` on their next call.

        Returns:
            How many servers were running.
        """
        timeout = check_timeout(timeout) or 0.0
        record = self.registry.pop(service_id, None)
        targets: dict[str, str] = {}
        servers = record.get("servers") if isinstance(record, dict) else None
        if isinstance(servers, dict):
            targets = {str(k): str(v) for k, v in servers.items()}
        members = live_servers(self.backend, service_id)
        for m in members:
            MessageQueue(request_queue(m.id), self.backend).put(
                {"op": "stop"}, priority=STOP_PRIORITY
            )
        deadline = Deadline(timeout)
        pending = list(members)
        while pending:
            pending = [
                m for m in pending if member_alive(self.backend, m.id, m.incarnation, m.host, m.pid)
            ]
            if not pending or deadline.expired:
                break
            time.sleep(TICK / 2)
        for m in pending:
            self._kill(m, targets.get(m.id, m.host))
        for m in members:
            with contextlib.suppress(UnidistError):
                self.backend.member_leave(MEMBERS_GROUP, m.id)
        for server_id in {*targets, *(m.id for m in members)}:
            MessageQueue(request_queue(server_id), self.backend).purge()
        MessageQueue(free_queue(service_id), self.backend).purge()
        SharedState(status_bucket(service_id), self.backend).clear()
        return len(members)

    def _kill(self, member: Member, host: str) -> None:
        if member.host in this_host_names() or host in this_host_names():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member.pid, signal.SIGKILL)
            deadline = Deadline(5)
            while pid_alive(member.pid) and not deadline.expired:
                time.sleep(0.02)
            return
        argv = ssh_argv(host, ["kill", "-9", str(member.pid)], ssh_options=self.ssh_options)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(  # noqa: S603 - a fixed kill command line, no shell
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
            )

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Leave the membership as a client (servers stay up; see :meth:`terminate`)."""
        with self._lock:
            client, self._client = self._client, None
            replies, self._replies = self._replies, []
        for name in replies:
            with contextlib.suppress(UnidistError):
                MessageQueue(name, self.backend).purge()
        if client is not None:
            client.leave()

    def __enter__(self) -> Grid:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
