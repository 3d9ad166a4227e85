"""Live cluster membership: heartbeats in a backend, a view of the live members, events.

::

    with unidist.cluster.Membership("redis://db:6379/0", meta={"role": "worker"}) as m:
        for member in m.members(group="web"):
            print(member.id, member.host, member.last_seen)

How it works: a joined member records itself with the backend's ``member_heartbeat`` every
``ttl / 3`` seconds (a daemon thread); its record expires ``ttl`` seconds after the last
heartbeat, so a member that dies or stops (``kill -9``, SIGSTOP, a lost host) is gone from
:meth:`Membership.members` within ``ttl`` seconds of its last heartbeat. Only the backend
interface's ``member_*`` and ``queue_release`` methods are used, so it works the same on
``memory://`` (threads), ``file://`` (processes of a host) and ``redis://`` (hosts).

Failure detection, in two steps. A watching member that has not seen a member's heartbeat
change for ``ttl`` seconds (judged on its own monotonic clock) reports it **suspect**
(:meth:`Membership.suspects`; ``"suspect"`` and ``"trusted"`` events for watchers that ask for
them). The
member's record itself expires ``ttl + grace`` seconds after its last heartbeat (judged by the
backend: the Redis server's clock, the host's clock on ``file://``); then it is **dead**: it
leaves the view (a ``"left"`` event) and its incarnation is over for good.

Membership reports suspicion, not truth: a suspect or even a "dead" member may only be slow
(a long GC or swap pause, SIGSTOP, an overloaded host or backend). A member that notices its
own lease lapsed (more than ``ttl`` seconds since its last successful heartbeat, or its record
gone) rejoins with a new **incarnation**: the others see the old incarnation leave and a new
one join. What the old incarnation did is fenced, never trusted again:

* locks and semaphore slots acquired while a membership was current carry its member id and
  incarnation in their owner records; whoever sees that incarnation leave (any watching
  member, including the member itself once it resumes) breaks them with
  ``lock_break(name, holder)``, so the old holder's ``renew()`` fails, its ``release()``
  raises ``LockNotOwned``, the next holder gets a larger fencing token and resources that
  check tokens (:func:`unidist.lock.fenced_set`) refuse the old holder's writes. A member that
  leaves gracefully should release its locks first: they are broken like a dead member's.

Feeding the other primitives while a membership is current (see :mod:`unidist.cluster._current`):

* lock and semaphore owner records carry ``member`` (the member id);
* log records carry ``member`` and ``groups``;
* ``MessageQueue.receive`` on the membership's backend tags each delivery with the member's
  incarnation; when a watching member sees that incarnation leave (gracefully or by expiry),
  it gives its in-flight messages back at once with ``queue_release`` instead of leaving them
  to their visibility timeout. A member that leaves gives back its own. Deliveries that
  nobody saw the holder of (every member started after it died) still return after their
  visibility timeout.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue as _queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal

from unidist._names import check_name
from unidist.backends import connect
from unidist.backends.base import Backend
from unidist.cluster import _current
from unidist.cluster.files import load
from unidist.codec import JSON, encode
from unidist.errors import UnidistError

__all__ = ["MEMBERS_GROUP", "Member", "MemberEvent", "Membership"]

#: the backend group every member heartbeats into (cluster groups are in each record).
MEMBERS_GROUP: Final = "unidist.cluster"
#: longest gap between two looks at the view (for events and dead-member requeues).
MAX_POLL: Final = 0.5


@dataclass(frozen=True)
class Member:
    """One live member as last recorded by its heartbeat.

    Attributes:
        id: the member id (``host:pid`` by default).
        host: the host it runs on.
        pid: its process id.
        groups: its cluster groups.
        meta: the JSON object it joined with.
        joined_at: Unix seconds when this incarnation joined.
        last_seen: Unix seconds of its last heartbeat (its own clock).
        incarnation: changes each time the member (re)joins.
        ttl: its heartbeat ttl in seconds.
    """

    id: str
    host: str
    pid: int
    groups: tuple[str, ...]
    meta: dict[str, JSON] = field(hash=False)
    joined_at: float
    last_seen: float
    incarnation: str
    ttl: float
    queues: dict[str, int] = field(default_factory=dict, hash=False, repr=False)

    def to_dict(self) -> dict[str, JSON]:
        """A JSON object of the public fields."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "groups": list(self.groups),
            "meta": self.meta,
            "joined_at": self.joined_at,
            "last_seen": self.last_seen,
            "incarnation": self.incarnation,
            "ttl": self.ttl,
        }

    @classmethod
    def from_record(cls, member_id: str, info: Mapping[str, JSON]) -> Member:
        """Rebuild a member from its heartbeat record (missing fields get neutral values)."""

        def num(key: str) -> float:
            value = info.get(key)
            return float(value) if isinstance(value, (int, float)) else 0.0

        groups = info.get("groups")
        meta = info.get("meta")
        queues = info.get("queues")
        pid = info.get("pid")
        return cls(
            id=member_id,
            host=str(info.get("host", "")),
            pid=pid if isinstance(pid, int) else 0,
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            meta=dict(meta) if isinstance(meta, dict) else {},
            joined_at=num("joined_at"),
            last_seen=num("last_seen"),
            incarnation=str(info.get("incarnation", "")),
            ttl=num("ttl"),
            queues=(
                {str(k): v for k, v in queues.items() if isinstance(v, int)}
                if isinstance(queues, dict)
                else {}
            ),
        )


@dataclass(frozen=True)
class MemberEvent:
    """A change of the view: ``kind`` is ``"joined"``, ``"suspect"``, ``"trusted"`` or ``"left"``.

    Attributes:
        kind: ``"joined"``; ``"suspect"`` (no heartbeat seen for ``ttl`` seconds: maybe dead,
            maybe slow); ``"trusted"`` (a suspect's heartbeats resumed); ``"left"`` (left, or
            dead: the record expired ``ttl + grace`` after its last heartbeat). Suspicion
            events only reach watchers that asked for them (``watch(..., suspicion=True)``).
        member: the member as last seen.
        at: Unix seconds when this process noticed the change.
    """

    kind: Literal["joined", "left", "suspect", "trusted"]
    member: Member
    at: float


Callback = Callable[[MemberEvent], object]


def _seconds(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def _default_groups() -> tuple[str, ...]:
    cluster = load()
    return cluster.groups_of(cluster.hostname) or cluster.groups_of(cluster.shortname)


class Membership:
    """This process (or thread) as a live member of the cluster.

    Args:
        backend: a Backend, a backend URL, or None for the default backend.
        member_id: a unique id (letters, digits, ``._-:@``); default ``host:pid``.
        groups: the member's groups; default the local host's groups in the cluster file
            (``$CLUSTER``), see :func:`unidist.cluster.load`.
        meta: a JSON object published with the member.
        ttl: seconds without a heartbeat until watchers suspect the member; heartbeats are
            sent every ``ttl / 3`` seconds.
        grace: further seconds until the suspect member's record expires and it is dead
            (left the view, its locks broken); default 0: dead as soon as suspected.
        current: become the process-wide current membership while joined (fed into lock
            owner records, log records and queue deliveries).
        poll: seconds between looks at the view while joined or watched (default
            ``min(ttl / 3, 0.5)``): events and requeues of dead members' messages come at
            most this late after the record expires.

    Raises:
        InvalidName: a bad ``member_id`` or group name.
        SerializationError: ``meta`` is not a JSON object.
        ClusterFileError: ``groups`` is None and ``$CLUSTER`` names a bad file.
    """

    def __init__(
        self,
        backend: Backend | str | None = None,
        member_id: str | None = None,
        groups: Iterable[str] | None = None,
        meta: Mapping[str, JSON] | None = None,
        ttl: float = 10,
        *,
        grace: float = 0.0,
        current: bool = True,
        poll: float | None = None,
    ) -> None:
        if isinstance(backend, Backend):
            self._backend = backend
        elif backend is None or isinstance(backend, str):
            self._backend = connect(backend)
        else:
            raise TypeError(
                f"backend must be a Backend, a URL string or None, not {type(backend).__name__}"
            )
        self._host = socket.gethostname()
        self._member_id = check_name(
            f"{self._host}:{os.getpid()}" if member_id is None else member_id, "member id"
        )
        if groups is None:
            groups = _default_groups()
        if isinstance(groups, str):
            raise TypeError("groups must be a list or tuple of group names, not a str")
        self._groups = tuple(dict.fromkeys(check_name(g, "group name") for g in groups))
        meta_obj = {} if meta is None else dict(meta)
        encode(meta_obj)
        self._meta: dict[str, JSON] = meta_obj
        self._ttl = _seconds(ttl, "ttl")
        if isinstance(grace, bool) or not isinstance(grace, (int, float)):
            raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
        if not math.isfinite(grace) or grace < 0:
            raise ValueError(f"grace must be a finite number >= 0, got {grace!r}")
        self._grace = float(grace)
        self._poll = min(self._ttl / 3, MAX_POLL) if poll is None else _seconds(poll, "poll")
        self._as_current = current

        self._lock = threading.RLock()  # joined state, incarnation, heartbeats, leave
        self._joined = False
        self._incarnation = ""
        self._joined_at = 0.0
        self._last_ok: float | None = None  # monotonic start of the last good heartbeat
        self._queues: dict[str, int] = {}
        self._beats = 0
        # (member id, incarnation) -> (last heartbeat seen, monotonic time it changed)
        self._heard: dict[tuple[str, str], tuple[tuple[JSON, JSON], float]] = {}
        self._suspected: dict[tuple[str, str], Member] = {}
        self.fenced = 0  # lock slots this watcher broke for incarnations that left
        self._raw_beats: dict[tuple[str, str], tuple[JSON, JSON]] = {}
        self._watchers: dict[int, tuple[Callback, bool, bool]] = {}
        self._boxes: set[_queue.Queue[MemberEvent | None]] = set()
        self._watch_ids = iter(range(1, 1 << 62))
        self._view: dict[tuple[str, str], Member] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_error: BaseException | None = None

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> Backend:
        """The backend the membership lives in."""
        return self._backend

    @property
    def member_id(self) -> str:
        """This member's id."""
        return self._member_id

    @property
    def groups(self) -> tuple[str, ...]:
        """This member's groups."""
        return self._groups

    @property
    def meta(self) -> dict[str, JSON]:
        """The JSON object published with this member."""
        return dict(self._meta)

    @property
    def ttl(self) -> float:
        """Heartbeat ttl in seconds."""
        return self._ttl

    @property
    def grace(self) -> float:
        """Seconds a suspect member's record outlives its ``ttl`` before it is dead."""
        return self._grace

    @property
    def joined(self) -> bool:
        """True between :meth:`join` and :meth:`leave`."""
        return self._joined

    @property
    def incarnation(self) -> str:
        """The current incarnation ("" before the first join); new on every (re)join."""
        return self._incarnation

    def __repr__(self) -> str:
        state = f"joined as {self._incarnation}" if self._joined else "not joined"
        return f"<Membership {self._member_id!r} on {self._backend.url} {state}>"

    # ------------------------------------------------------------------ join / leave
    def join(self) -> Membership:
        """Record this member and start heartbeating (idempotent).

        Returns:
            self, so that ``m = Membership(...).join()`` reads well.

        Raises:
            BackendUnavailable: the first heartbeat failed (nothing is started).
        """
        with self._lock:
            if self._joined:
                return self
            self._new_incarnation()
            self._last_ok = None
            self._joined = True
            try:
                self._beat()
            except BaseException:
                self._joined = False
                raise
            if self._as_current:
                _current.register(self)
        self._ensure_thread()
        return self

    def leave(self) -> None:
        """Stop heartbeating, give back the messages this member still holds, remove its
        record, and stop watching (every :meth:`events` iterator ends). Idempotent."""
        with self._lock:
            was_joined = self._joined
            self._joined = False
            _current.unregister(self)
            consumer, queues = self._incarnation, dict(self._queues)
            self._queues.clear()
            self._watchers.clear()
            boxes, self._boxes = self._boxes, set()
        for box in boxes:
            box.put(None)
        self._stop_thread()
        if not was_joined:
            return
        try:
            for name, max_attempts in queues.items():
                self._backend.queue_release(name, consumer, max_attempts)
        finally:
            self._backend.member_leave(MEMBERS_GROUP, self._member_id)

    close = leave

    def __enter__(self) -> Membership:
        return self.join()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.leave()

    # ------------------------------------------------------------------ the view
    def members(self, group: str | None = None) -> list[Member]:
        """The live members (sorted by id), or those of ``group``.

        A member is in the view while its last heartbeat is less than ``ttl + grace`` old
        (judged by the backend); :meth:`suspects` tells which of them this watcher suspects.
        """
        raw = self._backend.members(MEMBERS_GROUP)
        out = [Member.from_record(mid, info) for mid, info in raw.items()]
        if group is not None:
            out = [m for m in out if group in m.groups]
        return sorted(out, key=lambda m: m.id)

    def suspects(self) -> list[Member]:
        """Members whose heartbeat this watcher has not seen change for their ``ttl``
        (sorted by id). Suspicion, not truth: they may be dead or only slow. Needs this
        membership to be joined or watching (the view is looked at every ``poll`` seconds)."""
        with self._lock:
            return sorted(self._suspected.values(), key=lambda m: m.id)

    def watch(
        self, callback: Callback, *, initial: bool = False, suspicion: bool = False
    ) -> Callable[[], None]:
        """Call ``callback(event)`` (from the membership thread) for every member that joins
        or leaves, as seen at most ``poll`` seconds after the change.

        Args:
            callback: receives :class:`MemberEvent`; its exceptions are kept in
                :attr:`last_error` and otherwise ignored.
            initial: first report every member already live as ``joined``.
            suspicion: also report ``"suspect"`` and ``"trusted"`` events.

        Returns:
            A function that stops this watch.
        """
        with self._lock:
            wid = next(self._watch_ids)
            self._watchers[wid] = (callback, initial, suspicion)
        self._ensure_thread()

        def unwatch() -> None:
            with self._lock:
                self._watchers.pop(wid, None)

        return unwatch

    def events(
        self, timeout: float | None = None, *, initial: bool = False, suspicion: bool = False
    ) -> Iterator[MemberEvent]:
        """Iterate over join/leave events as they happen.

        Args:
            timeout: end the iteration after this many seconds without an event (None:
                run until :meth:`leave`).
            initial: first yield every member already live as ``joined``.
            suspicion: also yield ``"suspect"`` and ``"trusted"`` events.
        """
        box: _queue.Queue[MemberEvent | None] = _queue.Queue()
        with self._lock:
            self._boxes.add(box)
        unwatch = self.watch(box.put, initial=initial, suspicion=suspicion)
        try:
            while True:
                try:
                    event = box.get(timeout=None if timeout is None else max(timeout, 0.0))
                except _queue.Empty:
                    return
                if event is None:
                    return
                yield event
        finally:
            unwatch()
            with self._lock:
                self._boxes.discard(box)

    # ------------------------------------------------------------------ current-member hooks
    def consumer_for(self, backend: object, queue: str, max_attempts: int) -> str | None:
        """The consumer id (this incarnation) for receiving from ``queue`` on ``backend``;
        None if this membership is not joined or lives on another backend.

        The first receive from a queue publishes the queue in this member's record (one
        synchronous heartbeat), so that whoever sees this member die can give back its
        in-flight messages.
        """
        if backend is not self._backend:
            return None
        with self._lock:
            if not self._joined:
                return None
            stale = self._last_ok is None or time.monotonic() - self._last_ok > self._ttl
            if self._queues.get(queue) != max_attempts or stale:
                self._queues[queue] = max_attempts
                self._beat()
            return self._incarnation

    # ------------------------------------------------------------------ internals
    def _new_incarnation(self) -> None:
        self._incarnation = secrets.token_hex(8)
        self._joined_at = time.time()

    def _record(self) -> dict[str, JSON]:
        queues: dict[str, JSON] = dict(self._queues)
        return {
            "host": self._host,
            "pid": os.getpid(),
            "groups": list(self._groups),
            "meta": self._meta,
            "joined_at": self._joined_at,
            "last_seen": time.time(),
            "incarnation": self._incarnation,
            "ttl": self._ttl,
            "grace": self._grace,
            "beat": self._beats,
            "queues": queues,
        }

    def _beat(self) -> None:
        """One heartbeat (caller holds ``_lock``); a lapsed lease means a new incarnation."""
        started = time.monotonic()
        if self._last_ok is not None and started - self._last_ok > self._ttl:
            self._new_incarnation()
        self._beats += 1
        self._backend.member_heartbeat(
            MEMBERS_GROUP, self._member_id, self._record(), self._ttl + self._grace
        )
        self._last_ok = started

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            # The first view is taken now, so that every change after watch()/join()
            # returns is reported.
            self._view = None
            self._guard(self._look)
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name=f"unidist-member-{self._member_id}",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    def _stop_thread(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self, stop: threading.Event) -> None:
        next_beat = time.monotonic() + self._ttl / 3
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self._ttl / 3
                with self._lock:
                    if self._joined and not stop.is_set():
                        self._guard(self._beat)
            self._guard(self._look)
            stop.wait(max(0.0, min(self._poll, next_beat - time.monotonic())))

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except UnidistError as exc:  # backend trouble: retried at the next tick
            self.last_error = exc

    def _look(self) -> None:
        """Compare the view with the last one: rejoin if we vanished, requeue the messages of
        members that left, tell the watchers."""
        raw = self._backend.members(MEMBERS_GROUP)
        view: dict[tuple[str, str], Member] = {}
        beats: dict[tuple[str, str], tuple[JSON, JSON]] = {}
        for mid, info in raw.items():
            member = Member.from_record(mid, info)
            view[(mid, member.incarnation)] = member
            beats[(mid, member.incarnation)] = (info.get("beat"), info.get("last_seen"))
        self._raw_beats = beats
        with self._lock:
            if self._joined and (self._member_id, self._incarnation) not in view:
                # Our record is gone (expired while we were stopped, or removed): rejoin.
                self._new_incarnation()
                self._beat()
                mine = Member.from_record(self._member_id, self._record())
                view[(self._member_id, self._incarnation)] = mine
            previous, self._view = self._view, view
            watchers = list(self._watchers.items())
            for wid, (cb, initial, suspicion) in watchers:
                if initial:
                    self._watchers[wid] = (cb, False, suspicion)
        now = time.time()
        events: list[MemberEvent] = []
        if previous is not None:
            for key, member in previous.items():
                if key not in view:
                    events.append(MemberEvent("left", member, now))
                    self._release(member)
                    self._fence(member)
            events += [MemberEvent("joined", m, now) for k, m in view.items() if k not in previous]
        events += self._judge(view, now)
        for _, (cb, initial, suspicion) in watchers:
            todo = [MemberEvent("joined", m, now) for m in view.values()] if initial else events
            if initial and previous is not None:
                todo += [e for e in events if e.kind == "left"]
            if not suspicion:
                todo = [e for e in todo if e.kind in ("joined", "left")]
            for event in todo:
                try:
                    cb(event)
                except Exception as exc:  # a watcher's bug must not stop the heartbeats
                    self.last_error = exc

    def _judge(self, view: dict[tuple[str, str], Member], now: float) -> list[MemberEvent]:
        """Track each member's heartbeats on this process's monotonic clock; suspect those
        silent for their ttl."""
        mono = time.monotonic()
        events: list[MemberEvent] = []
        with self._lock:
            mine = (self._member_id, self._incarnation)
            heard: dict[tuple[str, str], tuple[tuple[JSON, JSON], float]] = {}
            for key, member in view.items():
                raw = self._raw_beats.get(key, (None, None))
                old = self._heard.get(key)
                heard[key] = (raw, mono) if old is None or old[0] != raw else old
                silent = mono - heard[key][1]
                was = key in self._suspected
                if key != mine and silent > (member.ttl or self._ttl):
                    if not was:
                        self._suspected[key] = member
                        events.append(MemberEvent("suspect", member, now))
                elif was:
                    del self._suspected[key]
                    events.append(MemberEvent("trusted", member, now))
            self._heard = heard
            for key in [k for k in self._suspected if k not in view]:
                del self._suspected[key]
        return events

    def _fence(self, member: Member) -> None:
        """Break the lock slots an incarnation that left still holds (see the module docs)."""
        if not member.incarnation:
            return
        try:
            held = self._backend.locks()
        except UnidistError as exc:
            self.last_error = exc
            return
        for name, owners in held.items():
            for rec in owners:
                holder = rec.get("holder")
                if (
                    rec.get("member") == member.id
                    and rec.get("incarnation") == member.incarnation
                    and isinstance(holder, str)
                ):
                    with contextlib.suppress(UnidistError, ValueError):
                        self.fenced += self._backend.lock_break(name, holder)

    def _release(self, member: Member) -> None:
        """Give back the in-flight messages of a member incarnation that left."""
        if not member.incarnation:
            return
        for name, max_attempts in member.queues.items():
            with contextlib.suppress(UnidistError, ValueError):
                self._backend.queue_release(name, member.incarnation, max(1, max_attempts))
