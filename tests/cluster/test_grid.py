"""Services published on hosts (unidist.cluster.Grid, ``unidist serve``): real server
processes, real client threads and processes, real ``kill -9``, real sshd.

Every test publishes through the ``grids`` fixture, which stops every service it published
and SIGKILLs any server process left, so no server outlives a test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import unidist
from tests.cluster._grid_client import CALLS, session
from tests.cluster._sshd import Sshd
from unidist.cluster import Grid, Membership

ROOT = Path(__file__).resolve().parents[2]
PROBE = "tests.cluster._grid_factories:Probe"
CLIENT = Path(__file__).with_name("_grid_client.py")
#: membership ttl of servers and clients in these tests: short enough to see a lost
#: server quickly, long enough that a loaded 2-core machine never misses a heartbeat.
TTL = 4.0


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def server_pids(url: str, service_id: str) -> dict[str, int]:
    """Server id → pid of the live servers of a service, from the public membership view."""
    view = Membership(url, groups=(), current=False)
    return {m.id: m.pid for m in view.members(group=service_id)}


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Grids:
    """Makes grids for one test and cleans up after it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[Grid] = []
        self.published: list[tuple[Grid, str]] = []
        self.pids: set[int] = set()

    def grid(self, url: str, targets: list[str] | None = None, **kwargs: Any) -> Grid:
        log = self.tmp_path / "servers.log"
        # --exit-with: even if this test process dies hard, its servers follow it.
        kwargs.setdefault(
            "command",
            [sys.executable, "-m", "unidist", "serve", "--log", str(log), "--exit-with",
             str(os.getpid())],
        )  # fmt: skip
        grid = Grid(url, targets or ["localhost"], ttl=TTL, pythonpath=[str(ROOT)], **kwargs)
        self.made.append(grid)
        return grid

    def publish(self, grid: Grid, n: int = 1, **kwargs: Any) -> tuple[str, dict[str, int]]:
        """Publish the probe with ``n`` instances per host; returns (id, server pids)."""
        sid = grid.publish(PROBE, instances_per_host=n, args=[str(self.tmp_path)], **kwargs)
        self.published.append((grid, sid))
        pids = server_pids(grid.url, sid)
        self.pids.update(pids.values())
        return sid, pids

    def cleanup(self) -> None:
        for grid, sid in self.published:
            try:
                self.pids.update(server_pids(grid.url, sid).values())
                grid.terminate(sid, timeout=2)
            except unidist.UnidistError:
                pass
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for grid in self.made:
            grid.close()


@pytest.fixture
def grids(tmp_path: Path) -> Iterator[Grids]:
    made = Grids(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def check_sessions(lines: list[dict[str, Any]], pids: set[int]) -> None:
    """Every call was answered by the server its client acquired, no server ever had two
    clients at once (by the servers' own check and by the clients' hold intervals)."""
    errors = [line for line in lines if "error" in line]
    assert not errors
    for line in lines:
        assert line["pid"] in pids
        assert line["previous"] is None
        assert line["overlaps"] == []
        assert len(line["results"]) == CALLS
        for result in line["results"]:
            assert result == {"pid": line["pid"], "client": line["client"], "owner_ok": True}
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for line in lines:
        by_pid.setdefault(line["pid"], []).append((line["t0"], line["t1"]))
    for intervals in by_pid.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end <= start


@pytest.mark.scope("host")
def test_twelve_clients_share_three_servers(grids: Grids, backend_url: str) -> None:
    """3 servers, 12 concurrent clients (8 threads here, 4 in two other processes), each
    acquire -> enter + 5 calls + leave -> release: each call answered by its own server,
    never two clients on one server."""
    grid = grids.grid(backend_url)
    sid, pids = grids.publish(grid, n=3)
    assert len(pids) == 3
    children = [
        subprocess.Popen(
            [sys.executable, str(CLIENT), backend_url, sid, str(TTL), f"p{i}a", f"p{i}b"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    lines: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(name: str) -> None:
        try:
            line = session(grid, sid, name)
        except Exception as exc:
            line = {"client": name, "error": repr(exc)}
        with lock:
            lines.append(line)

    threads = [threading.Thread(target=client, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        lines += [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 12
    check_sessions(lines, set(pids.values()))
    assert {line["pid"] for line in lines} == set(pids.values())
    info = grid.services()
    assert [(s.id, s.servers, s.free, s.busy) for s in info] == [(sid, 3, 3, 0)]


def test_kill_9_and_sigstop_of_servers_and_a_client(
    grids: Grids, redis_server: Any, tmp_path: Path
) -> None:
    """Three servers A, B, C. A client process holding A is killed -9: A comes back after the
    client's ttl. B is killed -9 mid-call: that call raises ServiceLost at once (pid gone).
    C is SIGSTOPped under a call: the call raises ServiceLost once C's membership lapses
    (the path for servers on other hosts); resumed and released, C serves again. Meanwhile
    other clients keep being served, never by B."""
    url = f"{redis_server.url}?prefix=grid{os.getpid()}k:"
    grid = grids.grid(url)
    sid, pids = grids.publish(grid, n=3)
    holder = subprocess.Popen(
        [sys.executable, str(CLIENT), url, sid, str(TTL), "--hold"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        a_pid = json.loads(holder.stdout.readline())["pid"]
    finally:
        holder.kill()
        holder.wait()
    b = grid.acquire(sid, timeout=10)
    c = grid.acquire(sid, timeout=10)
    assert {a_pid, b.pid, c.pid} == set(pids.values())

    b_outcome: list[Any] = []
    b_caller = threading.Thread(target=lambda: b_outcome.append(_call_or_error(b.sleep, 60)))
    b_caller.start()
    wait_until((tmp_path / f"calling.{b.pid}").exists, 10, "the call on B to start")
    os.kill(c.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    c_outcome: list[Any] = []
    c_caller = threading.Thread(target=lambda: c_outcome.append(_call_or_error(c.whoami)))
    c_caller.start()
    killed_at = time.monotonic()
    os.kill(b.pid, signal.SIGKILL)
    b_caller.join(timeout=TTL + 5)
    assert isinstance(b_outcome[0], unidist.ServiceLost)
    assert time.monotonic() - killed_at < 2
    with pytest.raises(unidist.ServiceLost):
        b.whoami()
    b.release()

    lines: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(name: str) -> None:
        line = _call_or_error(session, grid, sid, name)
        with lock:
            lines.append(line if isinstance(line, dict) else {"error": repr(line)})

    threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(6)]
    for t in threads:
        t.start()

    c_caller.join(timeout=TTL + 5)
    assert isinstance(c_outcome[0], unidist.ServiceLost)
    assert time.monotonic() - stopped_at < TTL + 3
    os.kill(c.pid, signal.SIGCONT)
    c.release()

    for t in threads:
        t.join(timeout=60)
    assert len(lines) == 6
    check_sessions(lines, {a_pid, c.pid})

    def pool() -> tuple[int, int, int]:
        s = grid.services()[0]
        return (s.servers, s.free, s.busy)

    wait_until(lambda: pool() == (2, 2, 0), 2 * TTL + 5, "a pool of 2 free servers")
    with grid.acquire(sid, timeout=5) as one, grid.acquire(sid, timeout=5) as two:
        assert {one.pid, two.pid} == {a_pid, c.pid}
        assert {one.whoami()["pid"], two.whoami()["pid"]} == {a_pid, c.pid}


def test_remote_exceptions_and_json_only(grids: Grids, tmp_path: Path) -> None:
    """A remote exception arrives as RemoteError with type, message and traceback; arguments
    that are not JSON fail before sending; a result that is not JSON is a RemoteError; the
    proxy stays usable after each. Once its only server is dead, acquire (even without a
    timeout) raises ServiceLost."""
    grid = grids.grid(f"file://{tmp_path / 'be'}")
    sid, pids = grids.publish(grid)
    with grid.acquire(sid) as proxy:
        assert proxy.pid in pids.values()
        with pytest.raises(unidist.RemoteError) as info:
            proxy.fail("boom")
        err = info.value
        assert err.type_name == "tests.cluster._grid_factories.ProbeFailure"
        assert "boom" in str(err)
        assert "raise ProbeFailure(message)" in err.remote_traceback
        assert err.remote_traceback.rstrip().endswith("ProbeFailure: boom")

        with pytest.raises(unidist.SerializationError):
            proxy.echo({1, 2})
        with pytest.raises(unidist.RemoteError) as info:
            proxy.not_json()
        assert info.value.type_name == "unidist.errors.SerializationError"
        with pytest.raises(unidist.RemoteError) as info:
            proxy.no_such_method()
        assert info.value.type_name == "AttributeError"
        with pytest.raises(unidist.RemoteError):
            proxy.call("_private")

        assert proxy.echo(1, [2, "x"], k={"a": None}) == {
            "args": [1, [2, "x"]],
            "kwargs": {"k": {"a": None}},
        }
    with pytest.raises(unidist.ServiceLost):
        proxy.whoami()
    os.kill(proxy.pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(unidist.ServiceLost, match="no live server"):
        grid.acquire(sid)
    assert time.monotonic() - started < TTL


def test_services_timeout_terminate(grids: Grids, tmp_path: Path) -> None:
    """services() counts free and busy servers; acquire times out when all are busy;
    terminate stops every server (one stuck in a call is killed) and leaves no process."""
    grid = grids.grid(f"file://{tmp_path / 'be'}")
    sid, pids = grids.publish(grid, n=2)
    assert [(s.servers, s.free, s.busy, s.factory) for s in grid.services()] == [(2, 2, 0, PROBE)]
    first = grid.acquire(sid, timeout=10)
    second = grid.acquire(sid, timeout=10)
    assert {first.pid, second.pid} == set(pids.values())
    assert [(s.free, s.busy) for s in grid.services()] == [(0, 2)]
    started = time.monotonic()
    with pytest.raises(unidist.LockTimeout):
        grid.acquire(sid, timeout=0.5)
    assert time.monotonic() - started < 3
    grid.release(second)
    wait_until(lambda: grid.services()[0].free == 1, 5, "the released server to be free")
    with grid.acquire(sid, timeout=10) as again:
        assert again.pid == second.pid

    stuck: list[BaseException | object] = []
    caller = threading.Thread(target=lambda: stuck.append(_call_or_error(first.sleep, 60)))
    caller.start()
    wait_until((tmp_path / f"calling.{first.pid}").exists, 10, "the call to start")
    assert grid.terminate(sid, timeout=1) == 2
    caller.join(timeout=10)
    assert isinstance(stuck[0], unidist.ServiceLost)
    assert not [pid for pid in pids.values() if alive(pid)]
    assert grid.services() == []
    with pytest.raises(unidist.ServiceLost):
        grid.acquire(sid, timeout=1)


def _call_or_error(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except BaseException as exc:
        return exc


def test_publish_errors(grids: Grids, tmp_path: Path) -> None:
    """A factory that raises at start is a RemoteError with its type; bad factory names and
    non-JSON arguments fail before anything starts; nothing is left running."""
    grid = grids.grid(f"file://{tmp_path / 'be'}")
    with pytest.raises(unidist.RemoteError) as info:
        grid.publish("tests.cluster._grid_factories:Broken")
    assert info.value.type_name == "ValueError"
    assert "broken on purpose" in str(info.value)
    assert "_grid_factories.py" in info.value.remote_traceback
    with pytest.raises(unidist.RemoteError) as info:
        grid.publish("tests.cluster.no_such_module:X")
    assert info.value.type_name == "ModuleNotFoundError"
    with pytest.raises(ValueError, match=r"package\.module:Factory"):
        grid.publish("no_colon")
    with pytest.raises(unidist.SerializationError):
        grid.publish(PROBE, args=[object()])
    with pytest.raises(ValueError, match="instances_per_host"):
        grid.publish(PROBE, instances_per_host=0)
    assert grid.services() == []
    with pytest.raises(ValueError, match="memory"):
        Grid("memory://grid-test")
    with pytest.raises(ValueError, match="redis"):
        Grid(f"file://{tmp_path / 'be'}", ["some-other-host"])


def test_serve_foreground_exit_with_and_terminate(grids: Grids, tmp_path: Path) -> None:
    """``unidist serve`` in the foreground prints its ready line and serves; it exits 0 when
    its --exit-with process is gone, and a published server exits when terminated."""
    url = f"file://{tmp_path / 'be'}"
    grid = grids.grid(url)
    sid, pids = grids.publish(grid)
    guard = subprocess.Popen(["sleep", "60"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "unidist", "--url", url, "serve", "--path", str(ROOT),
         "--exit-with", str(guard.pid), sid, f"{sid}.extra"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] is True
        assert ready["pid"] == proc.pid
        grids.pids.add(proc.pid)
        assert grid.services()[0].servers == 2
        with grid.acquire(sid) as a, grid.acquire(sid) as b:
            assert {a.whoami()["pid"], b.whoami()["pid"]} == {proc.pid, *pids.values()}
        guard.kill()
        guard.wait()
        assert proc.wait(timeout=10) == 0
        assert grid.services()[0].servers == 1
        assert grid.terminate(sid) == 1
        assert not [pid for pid in pids.values() if alive(pid)]
    finally:
        for p in (guard, proc):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_publish_over_ssh(grids: Grids, ssh_env: Sshd, redis_server: Any) -> None:
    """Publishing on node1 and node2 starts one server through each ssh alias; both serve.
    A publish that cannot reach one host fails naming it and stops the servers it did start."""
    url = f"{redis_server.url}?prefix=grid{os.getpid()}:"
    grid = grids.grid(url, ["node1", "node2"])
    sid, pids = grids.publish(grid)
    assert len(pids) == 2
    with grid.acquire(sid, timeout=10) as a, grid.acquire(sid, timeout=10) as b:
        nodes = {a.whoami()["node"], b.whoami()["node"]}
        assert nodes == {"node1", "node2"}
    assert grid.terminate(sid) == 2
    # A remote server has left the membership when terminate() returns; its process (seen
    # here because the ssh hosts are this machine) exits right after.
    deadline = time.monotonic() + 5
    while [pid for pid in pids.values() if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids.values() if alive(pid)]

    partial = grids.grid(url, ["node1", ssh_env.down])
    with pytest.raises(unidist.RemoteError, match=ssh_env.down) as info:
        partial.publish(PROBE, args=["/nonexistent"])
    assert info.value.type_name == ""
    assert partial.services() == []
    view = Membership(url, groups=(), current=False).members()
    assert [m.id for m in view if m.meta.get("role") == "grid-server"] == []
