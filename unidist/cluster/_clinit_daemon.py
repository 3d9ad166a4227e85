"""The clinit daemon: groups, level changes, process supervision, socket server, cluster poll.

Threads: the main thread handles signals and polls the shared desired levels; one thread
serves the socket; one thread per group runs its level changes; one thread per child
process waits for it and respawns it. Every piece of shared state is guarded by one
condition variable (``Daemon._cond``); nothing blocks while holding it except the small
status writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import unidist.log
from unidist.cluster._clinit_proc import Group, Proc, describe_exit, killpg, start_ticks
from unidist.cluster._clinit_sock import (
    acquire_daemon_lock,
    bind_socket,
    peer_uid,
    read_line,
    secure_dir,
)
from unidist.cluster._clinit_table import Entry, Table, check_word, read_table
from unidist.cluster.clinit import (
    BUCKET,
    DONE,
    FAILED,
    RUNNING,
    STARTING,
    STOPPED,
    DaemonConfig,
    render_status,
    write_atomic,
)
from unidist.errors import UnidistError

__all__ = ["Daemon"]

_log = unidist.log.get_logger(track="clinit")


class Daemon:
    """One clinit daemon (see :mod:`unidist.cluster.clinit`). Use :meth:`run`."""

    def __init__(self, config: DaemonConfig) -> None:
        self.cfg = config
        self.table: Table = read_table(config.cltab)
        self._cond = threading.Condition(threading.RLock())
        self._stopping = False
        self._reload = False
        self._wake = threading.Event()
        self._remote_dirty = True
        self._pushed_at = 0.0
        self._polled_at: float | None = None
        now = time.time()
        self.groups = {name: Group(name, since=now) for name in self.table.groups}
        for group, level in config.levels.items():
            if group not in self.groups:
                raise UnidistError(f"--level names group {group!r}, which the cltab lacks")
            check_word(level, "level")
        self.host = config.host or socket.gethostname()
        self._cluster_groups: set[str] = set()
        if config.url:
            from unidist.cluster.files import load

            cluster = load(config.cluster_file)
            names = (self.host,) if config.host else (cluster.hostname, cluster.shortname)
            for name in names:
                self._cluster_groups.update(cluster.groups_of(name))
            if not self._cluster_groups & set(self.groups):
                _log.warning(
                    "clinit_no_cluster_groups",
                    host=self.host,
                    cluster_file=cluster.path,
                    hint="no cltab group is a cluster group of this host; --cluster will not "
                    "reach it",
                )
        self.run_file = config.status_file.with_name(config.status_file.name + ".json")

    # ------------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; stop every process group on the way out."""
        secure_dir(self.cfg.socket.parent)
        lock_fd = acquire_daemon_lock(self.cfg.socket)
        try:
            self.cfg.status_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            srv = bind_socket(self.cfg.socket)
            try:
                return self._serve(srv)
            finally:
                srv.close()
                with contextlib.suppress(OSError):
                    os.unlink(self.cfg.socket)
        finally:
            os.close(lock_fd)

    def _serve(self, srv: socket.socket) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGHUP, self._on_signal)
        _log.info(
            "clinit_started",
            cltab=str(self.cfg.cltab),
            socket=str(self.cfg.socket),
            groups=list(self.groups),
            url_given=self.cfg.url is not None,
            cluster_groups=sorted(self._cluster_groups),
        )
        recorded = self._reap_previous()
        with self._cond:
            self._write_status()  # before the socket answers: a client then finds the files
        server = threading.Thread(target=self._accept_loop, args=(srv,), name="clinit-socket")
        server.daemon = True
        server.start()
        if self.cfg.url:
            self._poll_cluster()
        with self._cond:
            for name, g in self.groups.items():
                if g.managed:
                    continue
                level = recorded.get(name) or self.cfg.levels.get(name)
                if level:
                    self._request(g, level)
            self._write_status()
        next_poll = time.monotonic() + self.cfg.poll
        while not self._is_stopping():
            # Short waits: the signal handler only sets a flag (taking a lock in a signal
            # handler can deadlock against the interrupted main thread).
            woken = self._wake.wait(0.1)
            self._wake.clear()
            if self._reload:
                self._reload = False
                self.reload()
            if not self.cfg.url or self._is_stopping():
                continue
            if time.monotonic() >= next_poll:
                self._poll_cluster()
                next_poll = time.monotonic() + self.cfg.poll
            elif woken:
                self._push_status()
        self._shutdown()
        # Wakes the accept() of the socket thread at once (Linux) instead of at its timeout.
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)
        server.join(timeout=2)
        _log.info("clinit_stopped")
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stopping = True

    def _is_stopping(self) -> bool:
        return self._stopping

    def _shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads = [g.thread for g in self.groups.values() if g.thread is not None]
        for t in threads:
            t.join()
        with self._cond:
            victims = [p for g in self.groups.values() for p in g.procs.values()]
        self._stop_procs(victims)
        with self._cond:
            now = time.time()
            for g in self.groups.values():
                g.state, g.since, g.reason = STOPPED, now, "daemon stopped"
            self._write_status()
        if self.cfg.url:
            self._push_status()

    def _reap_previous(self) -> dict[str, str]:
        """Stop what a previous daemon left running (per its run file); return its levels."""
        try:
            data = json.loads(self.run_file.read_bytes())
        except (OSError, ValueError):
            return {}
        levels: dict[str, str] = {}
        leftovers: list[int] = []
        for name, info in dict(data.get("groups", {})).items():
            if isinstance(info, dict) and isinstance(info.get("level"), str):
                levels[name] = info["level"]
            for p in info.get("procs", []) if isinstance(info, dict) else []:
                pid, ticks = p.get("pid"), p.get("ticks")
                if isinstance(pid, int) and ticks is not None and start_ticks(pid) == ticks:
                    leftovers.append(pid)
        if leftovers:
            _log.warning("clinit_leftovers", pids=leftovers)
            for pid in leftovers:
                killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.cfg.grace
            while time.monotonic() < deadline and any(start_ticks(p) for p in leftovers):
                time.sleep(0.05)
            for pid in leftovers:
                killpg(pid, signal.SIGKILL)
        return {k: v for k, v in levels.items() if k in self.groups}

    def reload(self) -> None:
        """Re-read the cltab (SIGHUP). A bad table is logged and the old one kept.

        Running processes whose line is still there (same group, tag, mode and command, at
        a level that includes the one they were started for) are kept and belong to the
        new line; the others run on until their group's next level change stops them.
        New groups appear with no level. Nothing is started or stopped by the reload.
        """
        try:
            table = read_table(self.cfg.cltab)
        except UnidistError as exc:
            _log.error("clinit_reload_failed", error=str(exc))
            return
        with self._cond:
            self.table = table
            for name in table.groups:
                self.groups.setdefault(name, Group(name, since=time.time()))
            kept = moved = 0
            for g in self.groups.values():
                for old, proc in list(g.procs.items()):
                    new = self._current_entry(old, proc.level)
                    if new is None or new is old:
                        continue
                    del g.procs[old]
                    g.procs[new] = proc
                    proc.entry = new
                    moved += 1
                kept += len(g.procs)
            self._write_status()
        _log.info("clinit_reloaded", cltab=str(self.cfg.cltab), groups=list(table.groups),
                  running=kept, renumbered=moved)  # fmt: skip

    def _current_entry(self, entry: Entry, level: str) -> Entry | None:
        """The line of the current table that runs ``entry``'s command at ``level``."""
        for e in self.table.entries_at(entry.group, level):
            if (e.tag, e.mode, e.argv) == (entry.tag, entry.mode, entry.argv):
                return e
        return None

    # ------------------------------------------------------------------------ requests
    def _request(self, g: Group, level: str) -> int:
        """Queue a move of ``g`` to ``level`` (call with the lock held); return its serial."""
        g.serial += 1
        g.desired = level
        if g.thread is None:
            g.thread = threading.Thread(target=self._group_loop, args=(g,), name=f"clinit-{g.name}")
            g.thread.daemon = True
            g.thread.start()
        self._cond.notify_all()
        return g.serial

    def _group_loop(self, g: Group) -> None:
        with self._cond:
            while True:
                while not self._stopping and g.applied == g.serial:
                    self._cond.wait()
                if self._stopping:
                    return
                serial, target = g.serial, g.desired
                g.applied = serial
                assert target is not None
                self._cond.release()
                try:
                    self._transition(g, target, serial)
                except Exception as exc:  # a bug must not kill the group's thread silently
                    _log.error("clinit_transition_error", group=g.name, error=repr(exc))
                    with self._cond:
                        self._set(g, FAILED, f"internal error: {exc}")
                        g.done_serial = serial
                finally:
                    self._cond.acquire()

    def _superseded(self, g: Group, serial: int) -> bool:
        return self._stopping or g.serial != serial

    def _set(self, g: Group, state: str, reason: str = "") -> None:
        g.state, g.reason, g.since = state, reason, time.time()
        self._write_status()

    def _transition(self, g: Group, target: str, serial: int) -> None:
        entries = self.table.entries_at(g.name, target)
        # An 'off' line takes its tag out of the level, wherever it sits in the file.
        offs = {e.tag for e in entries if e.mode == "off"}
        entries = tuple(e for e in entries if e.tag not in offs)
        with self._cond:
            previous = g.level
            g.level = target
            self._set(g, STARTING)
            keep = {e for e in entries if e.mode in ("respawn", "once")}
            victims = [p for e, p in g.procs.items() if e not in keep]
        _log.info("clinit_level", group=g.name, level=target, previous=previous)
        self._stop_procs(victims)
        note = ""
        for entry in entries:
            if self._superseded(g, serial):
                return
            with self._cond:
                if entry in g.procs and entry.mode in ("respawn", "once"):
                    continue
                proc = self._spawn(g, entry, target)
                if proc is None:
                    if g.serial == serial:
                        g.done_serial = serial
                    return
            if entry.mode in ("respawn", "once"):
                continue
            code = self._wait_exit(g, proc, serial)
            if code is None:
                return
            if code != 0 and entry.mode == "test":
                with self._cond:
                    if g.serial == serial:
                        self._set(g, FAILED, f"test {entry.tag} {describe_exit(code)}")
                        g.done_serial = serial
                _log.error(
                    "clinit_test_failed", group=g.name, level=target, tag=entry.tag, code=code
                )
                return
            if code != 0:
                note = f"wait {entry.tag} {describe_exit(code)}"
                _log.warning(
                    "clinit_wait_failed", group=g.name, level=target, tag=entry.tag, code=code
                )
        with self._cond:
            if g.serial != serial:
                return
            state = (RUNNING if g.procs else DONE) if entries else STOPPED
            self._set(g, state, note)
            g.done_serial = serial
        _log.info("clinit_level_reached", group=g.name, level=target, state=state)

    # ------------------------------------------------------------------------ processes
    def _spawn(self, g: Group, entry: Entry, level: str) -> Proc | None:
        """Start ``entry`` (lock held). On failure mark the group FAILED and return None."""
        env = dict(os.environ, CLINIT_GROUP=g.name, CLINIT_LEVEL=level, CLINIT_TAG=entry.tag)
        try:
            popen = subprocess.Popen(  # noqa: S603 - the cltab's command line, no shell
                list(entry.argv),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            reason = f"cannot run {entry.tag} ({entry.argv[0]}): {exc.strerror or exc}"
            _log.error("clinit_spawn_failed", group=g.name, tag=entry.tag, error=reason)
            self._set(g, FAILED, reason)
            return None
        proc = Proc(entry, popen, level, time.time(), time.monotonic(), start_ticks(popen.pid))
        g.procs[entry] = proc
        _log.info("clinit_spawn", group=g.name, tag=entry.tag, mode=entry.mode, child_pid=popen.pid)
        watcher = threading.Thread(
            target=self._watch, args=(g, proc), name=f"clinit-{g.name}-{entry.tag}"
        )
        watcher.daemon = True
        watcher.start()
        self._write_status()
        return proc

    def _watch(self, g: Group, proc: Proc) -> None:
        code = proc.popen.wait()
        ran = time.monotonic() - proc.started_mono
        with self._cond:
            proc.code = code
            mine = g.procs.get(proc.entry) is proc
            if mine:
                del g.procs[proc.entry]
            self._cond.notify_all()
            _log.info(
                "clinit_exit", group=g.name, tag=proc.entry.tag, child_pid=proc.pid, code=code
            )
            if not mine or proc.stopping or self._stopping:
                self._write_status()
                return
            if proc.entry.mode != "respawn":
                if g.state == RUNNING and not g.procs:
                    self._set(g, DONE, g.reason)
                else:
                    self._write_status()
                return
            line = (proc.entry.tag, proc.level)
            deaths = 0 if ran >= self.cfg.stable else g.quick_deaths.get(line, 0)
            delay = min(self.cfg.backoff_max, self.cfg.backoff_min * 2**deaths)
            g.quick_deaths[line] = deaths + 1
            serial = g.serial
            _log.warning("clinit_respawn", group=g.name, tag=proc.entry.tag, code=code, delay=delay)
            self._write_status()
            deadline = time.monotonic() + delay
            while not self._superseded(g, serial):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            # The cltab may have been reloaded meanwhile: respawn the line as it is now.
            entry = self._current_entry(proc.entry, proc.level)
            if self._superseded(g, serial) or entry is None or entry in g.procs:
                return
            self._spawn(g, entry, proc.level)

    def _wait_exit(self, g: Group, proc: Proc, serial: int) -> int | None:
        """Wait for a wait/test command; None when the level change was superseded (the
        command is then stopped)."""
        with self._cond:
            while proc.code is None and not self._superseded(g, serial):
                self._cond.wait(0.5)
            if proc.code is not None:
                return proc.code
        self._stop_procs([proc])
        return None

    def _stop_procs(self, procs: list[Proc]) -> None:
        """SIGTERM each process group, SIGKILL what is left after the grace period."""
        if not procs:
            return
        with self._cond:
            for p in procs:
                p.stopping = True
        for p in procs:
            _log.info("clinit_stop", group=p.entry.group, tag=p.entry.tag, child_pid=p.pid)
            killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.grace
        with self._cond:
            while any(p.code is None for p in procs):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        for p in procs:
            # Also kills whatever the command left in its process group.
            killpg(p.pid, signal.SIGKILL)
        with self._cond:
            while any(p.code is None for p in procs):
                self._cond.wait(1.0)

    # ------------------------------------------------------------------------ status
    def snapshot(self) -> dict[str, Any]:
        """The daemon's status as JSON-ready data (lock held or not)."""
        with self._cond:
            groups: dict[str, Any] = {}
            for name, g in self.groups.items():
                groups[name] = {
                    "level": g.level,
                    "state": g.state,
                    "since": g.since,
                    "reason": g.reason,
                    "managed": g.managed,
                    "serial": g.serial,
                    "done_serial": g.done_serial,
                    "procs": [
                        {
                            "tag": p.entry.tag,
                            "mode": p.entry.mode,
                            "line": p.entry.line,
                            "pid": p.pid,
                            "ticks": p.ticks,
                            "started": p.started,
                        }
                        for p in g.procs.values()
                    ],
                }
            return {
                "host": self.host,
                "pid": os.getpid(),
                "cltab": str(self.cfg.cltab),
                "updated": time.time(),
                "polled": self._polled_at,
                "groups": groups,
            }

    def _write_status(self) -> None:
        """Rewrite the status and run files atomically (lock held)."""
        snap = self.snapshot()
        text = render_status(self.host, snap["groups"].items(), snap["updated"])
        try:
            write_atomic(self.cfg.status_file, text.encode())
            write_atomic(self.run_file, json.dumps(snap, sort_keys=True).encode() + b"\n")
        except OSError as exc:
            _log.error("clinit_status_write_failed", path=str(self.cfg.status_file), error=str(exc))
        self._remote_dirty = True
        self._wake.set()

    # ------------------------------------------------------------------------ cluster
    def _poll_cluster(self) -> None:
        from unidist.state import SharedState

        started = time.time()
        try:
            bucket = SharedState(BUCKET, backend=self.cfg.url)
            snap = bucket.snapshot()
        except UnidistError as exc:
            _log.warning("clinit_cluster_unreachable", error=str(exc))
            return
        with self._cond:
            # When the read began: a record written before this was seen.
            self._polled_at = started
            for name, g in self.groups.items():
                record = snap.get(f"desired/{name}")
                if name not in self._cluster_groups or not isinstance(record, dict):
                    g.managed = False
                    continue
                g.managed = True
                level, rid = record.get("level"), record.get("id")
                if not isinstance(level, str) or rid == g.cluster_id:
                    continue
                try:
                    check_word(level, "level")
                except ValueError as exc:
                    _log.error("clinit_bad_desired_level", group=name, error=str(exc))
                    g.cluster_id = str(rid)
                    continue
                g.cluster_id = str(rid)
                _log.info("clinit_cluster_level", group=name, level=level, by=record.get("by"))
                self._request(g, level)
        self._push_status()

    def _push_status(self) -> None:
        from unidist.state import SharedState

        # Also a heartbeat: a status older than a few polls means the daemon is gone.
        stale = time.monotonic() - self._pushed_at > max(30.0, 5 * self.cfg.poll)
        if not self._remote_dirty and not stale:
            return
        self._remote_dirty = False
        self._pushed_at = time.monotonic()
        snap = self.snapshot()
        try:
            SharedState(BUCKET, backend=self.cfg.url)[f"status/{self.host}"] = snap
        except UnidistError as exc:
            self._remote_dirty = True
            _log.warning("clinit_status_push_failed", error=str(exc))

    # ------------------------------------------------------------------------ socket
    def _accept_loop(self, srv: socket.socket) -> None:
        srv.settimeout(0.5)
        while not self._stopping:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._is_stopping():
                    return
                time.sleep(0.1)
                continue
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        try:
            uid = peer_uid(conn)
            if uid not in (os.geteuid(), 0):
                _log.warning("clinit_peer_refused", uid=uid)
                answer: dict[str, Any] = {"ok": False, "error": "permission denied"}
            else:
                answer = self._answer(read_line(conn))
            conn.sendall(json.dumps(answer, sort_keys=True).encode() + b"\n")
        except (OSError, ValueError) as exc:
            _log.warning("clinit_bad_client", error=str(exc))

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "the request is not JSON"}
        if not isinstance(msg, dict):
            return {"ok": False, "error": "the request must be a JSON object"}
        op = msg.get("op")
        if op == "status":
            return {"ok": True, **self.snapshot()}
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op != "level":
            return {"ok": False, "error": f"unknown op {op!r} (level, status, ping)"}
        group, level = msg.get("group"), msg.get("level")
        if not isinstance(group, str) or not isinstance(level, str):
            return {"ok": False, "error": "level needs 'group' and 'level' strings"}
        try:
            check_word(level, "level")
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        with self._cond:
            g = self.groups.get(group)
            if g is None:
                return {
                    "ok": False,
                    "error": f"no group {group!r} in the cltab {self.cfg.cltab} "
                    f"(groups: {', '.join(self.groups) or 'none'})",
                }
            if g.managed:
                return {
                    "ok": False,
                    "error": f"group {group!r} follows the cluster-wide desired level; "
                    "change it with 'unidist clinit --cluster'",
                }
            previous = g.desired if g.desired is not None else g.level
            serial = self._request(g, level)
        note = "" if level in self.table.levels_of(group) else "no entries: everything stops"
        _log.info("clinit_request", group=group, level=level, previous=previous)
        return {
            "ok": True,
            "group": group,
            "level": level,
            "previous": previous,
            "serial": serial,
            "note": note,
        }
