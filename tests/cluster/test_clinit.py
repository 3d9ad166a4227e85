"""``unidist clinit``: real daemon processes moving resource groups between levels.

Every command in these tables is a real child process that writes its pid to a file; the
tests check those pids are alive or gone (a zombie counts as gone), send real signals, and
kill -9 the daemon itself. No process outlives a test: the fixture stops every daemon and
kills the process group of every pid file it finds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from unidist.cli.main import main
from unidist.cluster import clinit
from unidist.cluster._clinit_table import parse_table, read_table
from unidist.errors import ClusterFileError, UnidistError

DEADLINE = 15.0


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] != b"Z"


def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class Daemon:
    """One ``unidist clinit --daemon`` child process and its files."""

    def __init__(self, base: Path, cltab: Path, extra: list[str], name: str) -> None:
        self.sock = base / "run" / "clinit.sock"
        self.status_file = base / "run" / "clinit.status"
        self.out = base / f"{name}.out"
        env = {k: v for k, v in os.environ.items() if k not in ("UNIDIST_URL", "CLUSTER")}
        env["UNIDIST_LOG_DIR"] = str(base / "log")
        argv = [sys.executable, "-m", "unidist", "clinit", "--daemon", "--cltab", str(cltab)]
        argv += ["--socket", str(self.sock), "--grace", "1", "--backoff", "0.2,1", *extra]
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def ready(self) -> Daemon:
        def up() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited {self.proc.returncode}: {self.out.read_text()}")
            try:
                return bool(clinit.status(self.sock)["ok"])
            except (UnidistError, OSError):
                return False

        until(up, "the daemon's socket")
        return self

    def status(self) -> dict[str, Any]:
        return clinit.status(self.sock)

    def group(self, name: str) -> dict[str, Any]:
        return dict(self.status()["groups"][name])

    def level(self, group: str, level: str) -> dict[str, Any]:
        """Move ``group`` to ``level`` and wait until the change has finished."""
        answer = clinit.set_level(group, level, self.sock)
        return clinit.wait_level(group, answer["serial"], self.sock, timeout=DEADLINE)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


class Env:
    """A test directory: cltab, pid files, daemons."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pids = base / "pids"
        self.pids.mkdir(parents=True)
        self.daemons: list[Daemon] = []

    def sleeper(self, name: str) -> str:
        """A command that writes its pid to ``pids/NAME.pid`` and sleeps."""
        return f"sh -c 'echo $$ > {self.pids}/{name}.pid; exec sleep 60'"

    def cltab(self, text: str) -> Path:
        path = self.base / "cltab"
        path.write_text(text.replace("@P", str(self.pids)))
        os.chmod(path, 0o644)  # whatever the umask: the daemon refuses a group-writable cltab
        return path

    def daemon(self, *extra: str, name: str = "daemon", wait: bool = True) -> Daemon:
        d = Daemon(self.base, self.base / "cltab", list(extra), name)
        self.daemons.append(d)
        return d.ready() if wait else d

    def pid(self, name: str) -> int:
        path = self.pids / f"{name}.pid"
        text = until(lambda: path.exists() and path.read_text().strip(), f"{path}")
        return int(text)

    def fresh_pid(self, name: str, old: int) -> int:
        path = self.pids / f"{name}.pid"

        def changed() -> int:
            text = path.read_text().strip() if path.exists() else ""
            return int(text) if text and int(text) != old else 0

        return int(until(changed, f"a new pid in {path}"))

    def cleanup(self) -> None:
        for d in self.daemons:
            d.stop()
        for path in self.pids.glob("*.pid"):
            for word in path.read_text().split():
                try:
                    os.killpg(int(word), signal.SIGKILL)
                except (ValueError, ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.cleanup()


def gone(pid: int) -> bool:
    return not alive(pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------- levels
def test_level_changes_start_and_stop_the_right_processes(env: Env) -> None:
    """Moving up keeps lines listed at both levels, starts new ones and stops the rest;
    a level without entries stops everything; the status file follows."""
    env.cltab(
        f"""# web servers
web:1:a:once:{env.sleeper("a")}
web:1,2:b:respawn:{env.sleeper("b")}

web:2:c:respawn:{env.sleeper("c")}
db:1:d:once:{env.sleeper("d")}
"""
    )
    d = env.daemon()
    assert d.group("web")["state"] == "STOPPED"
    info = d.level("web", "1")
    assert (info["level"], info["state"]) == ("1", "RUNNING")
    a, b = env.pid("a"), env.pid("b")
    assert alive(a)
    assert alive(b)
    assert {p["pid"] for p in info["procs"]} == {a, b}
    assert not (env.pids / "d.pid").exists(), "db was never asked to move"

    info = d.level("web", "2")
    c = env.pid("c")
    until(lambda: gone(a), f"a ({a}) stopped at level 2")
    assert alive(b)
    assert alive(c)
    assert {p["pid"] for p in info["procs"]} == {b, c}
    assert (env.pids / "b.pid").read_text().strip() == str(b), "b was restarted"

    status = clinit.parse_status(d.status_file.read_text())
    assert status["web"]["level"] == "2"
    assert status["web"]["state"] == "RUNNING"
    assert status["db"]["level"] == "-"
    assert status["db"]["state"] == "STOPPED"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["web"]["since"])
    assert d.status_file.read_text().splitlines()[0].startswith("# unidist clinit status")
    assert sorted(p.name for p in d.status_file.parent.iterdir() if p.name.startswith(".")) == []

    info = d.level("web", "0")
    assert (info["level"], info["state"], info["procs"]) == ("0", "STOPPED", [])
    assert gone(b)
    assert gone(c)
    assert clinit.parse_status(d.status_file.read_text())["web"]["state"] == "STOPPED"
    assert d.stop() == 0


def events(d: Daemon, name: str) -> list[dict[str, Any]]:
    """The daemon's log records of event ``name`` (JSON lines on its stderr)."""
    out = []
    for line in d.out.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == name:
                out.append(record)
    return out


def test_respawn_comes_back_after_kill_9_and_once_does_not(env: Env) -> None:
    """kill -9 of a respawn process brings a new one (new pid) after a delay that doubles
    while it keeps dying and starts over once it stayed up; a once process that dies stays
    dead and the group stays RUNNING while the respawn one lives."""
    env.cltab(f"g:1:r:respawn:{env.sleeper('r')}\ng:1:o:once:{env.sleeper('o')}\n")
    d = env.daemon("--stable", "2.5")
    d.level("g", "1")
    r, o = env.pid("r"), env.pid("o")
    os.kill(r, signal.SIGKILL)
    r2 = env.fresh_pid("r", r)
    assert alive(r2)
    assert gone(r)
    os.kill(r2, signal.SIGKILL)
    r3 = env.fresh_pid("r", r2)
    assert alive(r3)
    os.kill(o, signal.SIGKILL)
    until(lambda: [p["tag"] for p in d.group("g")["procs"]] == ["r"], "o leaving the status")
    time.sleep(2.7)  # r3 stays up longer than --stable
    assert (env.pids / "o.pid").read_text().strip() == str(o), "a once entry was restarted"
    assert d.group("g")["state"] == "RUNNING"
    os.kill(r3, signal.SIGKILL)
    env.fresh_pid("r", r3)
    delays = [e["delay"] for e in events(d, "clinit_respawn")]
    assert delays == [0.2, 0.4, 0.2], "backoff 0.2 doubling, reset after a stable run"


def test_failing_test_marks_group_failed(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A test that exits non-zero marks the group FAILED, later lines do not start, earlier
    ones keep running; `clinit GROUP LEVEL --wait` exits 1 and names the test. A level
    whose commands have all finished is DONE; a command that cannot be run is FAILED."""
    env.cltab(
        f"""g:1:first:once:{env.sleeper("first")}
g:1:ok:test:true
g:1:check:test:sh -c 'exit 3'
g:1:later:once:{env.sleeper("later")}
g:2:fine:test:true
g:2:quick:once:true
g:3:ghost:respawn:/nonexistent/prog --flag
"""
    )
    d = env.daemon()
    code = main(["clinit", "--socket", str(d.sock), "g", "1", "--wait"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.strip() == "g: level 1 FAILED: test check exited 3"
    assert alive(env.pid("first"))
    time.sleep(0.3)
    assert not (env.pids / "later.pid").exists()
    status = clinit.parse_status(d.status_file.read_text())["g"]
    assert (status["state"], status["reason"]) == ("FAILED", "test check exited 3")
    d.level("g", "2")
    until(lambda: d.group("g")["state"] == "DONE", "DONE once every command has finished")
    assert gone(env.pid("first"))
    assert clinit.parse_status(d.status_file.read_text())["g"]["state"] == "DONE"
    info = d.level("g", "3")
    assert info["state"] == "FAILED"
    assert info["reason"] == "cannot run ghost (/nonexistent/prog): No such file or directory"


def test_wait_runs_to_completion_before_the_next_line(env: Env) -> None:
    """A wait line finishes before the next line starts (the group is STARTING meanwhile);
    a failing wait is reported but does not fail the group."""
    log, gate = env.base / "order", env.base / "gate"
    hold = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    env.cltab(
        f"""g:1:w1:wait:sh -c 'echo w1-start >> {log}; {hold}; echo w1-end >> {log}'
g:1:w2:wait:sh -c 'echo w2 >> {log}; exit 2'
g:1:o:once:sh -c 'echo o >> {log}; exec sleep 60'
"""
    )
    d = env.daemon()
    answer = clinit.set_level("g", "1", d.sock)
    until(lambda: log.exists(), "w1 to start")
    assert d.group("g")["state"] == "STARTING"
    time.sleep(0.3)
    assert log.read_text().split() == ["w1-start"], "a line started before the wait ended"
    gate.touch()
    info = clinit.wait_level("g", answer["serial"], d.sock, timeout=DEADLINE)
    until(lambda: "o" in log.read_text().split(), "o to start")
    assert log.read_text().split() == ["w1-start", "w1-end", "w2", "o"]
    assert (info["state"], info["reason"]) == ("RUNNING", "wait w2 exited 2")
    assert [p["tag"] for p in info["procs"]] == ["o"]


def test_stopping_off_lines_superseded_waits_and_sigkill_after_grace(env: Env) -> None:
    """An 'off' line stops the tag's process (even from above its line in the file); a
    request arriving during a long wait stops the wait command and moves on at once; a
    process group that ignores SIGTERM is killed with SIGKILL after the grace period (1 s
    here), children included."""
    stubborn = "sh -c 'trap \"\" TERM; echo $$ > @P/t.pid; sleep 60 & echo $! > @P/tc.pid; wait'"
    env.cltab(
        f"""g:2:s:off:
g:1,2:s:respawn:{env.sleeper("s")}
g:3:slow:wait:{env.sleeper("slow")}
k:1:t:once:{stubborn}
"""
    )
    d = env.daemon()
    d.level("g", "1")
    s = env.pid("s")
    info = d.level("g", "2")
    assert gone(s)
    assert info["procs"] == []
    assert info["state"] == "STOPPED", "nothing of level 2 runs"
    clinit.set_level("g", "3", d.sock)
    slow = env.pid("slow")
    start = time.monotonic()
    info = d.level("g", "0")
    assert gone(slow)
    assert info["state"] == "STOPPED"
    assert time.monotonic() - start < 10, "the 60 s wait command was not cut short"

    d.level("k", "1")
    t, child = env.pid("t"), env.pid("tc")
    start = time.monotonic()
    info = d.level("k", "stop")
    took = time.monotonic() - start
    assert info["state"] == "STOPPED"
    assert gone(t)
    assert gone(child)
    assert took >= 0.9, f"killed after {took:.2f}s, before the 1 s grace"


def test_sighup_rereads_the_cltab_and_keeps_running_lines(env: Env) -> None:
    """SIGHUP re-reads the cltab: a running line that is still there keeps its process
    (even when its line number moved), new lines and groups wait for the next level change,
    and a broken table is refused with the old one kept."""
    env.cltab(f"g:1:a:respawn:{env.sleeper('a')}\n")
    d = env.daemon()
    d.level("g", "1")
    a = env.pid("a")
    env.cltab(
        f"""# added later
g:1:a:respawn:{env.sleeper("a")}
g:1:b:once:{env.sleeper("b")}
h:1:c:once:{env.sleeper("c")}
"""
    )
    d.proc.send_signal(signal.SIGHUP)
    until(lambda: "h" in d.status()["groups"], "the new group after SIGHUP")
    assert [(p["pid"], p["line"]) for p in d.group("g")["procs"]] == [(a, 2)]
    assert not (env.pids / "b.pid").exists()
    info = d.level("g", "1")
    b = env.pid("b")
    assert sorted(p["pid"] for p in info["procs"]) == sorted([a, b])
    os.kill(a, signal.SIGKILL)
    env.fresh_pid("a", a)

    env.cltab("g:1:a:bogus:true\n")
    d.proc.send_signal(signal.SIGHUP)
    until(lambda: "clinit_reload_failed" in d.out.read_text(), "the reload error")
    assert "h" in d.status()["groups"]
    assert d.level("h", "1")["state"] == "RUNNING", "the old table still works"


def test_daemon_killed_and_restarted_adopts_its_level(env: Env) -> None:
    """--level sets a group's first level; after kill -9 of the daemon, a new daemon stops
    the orphans it left (pid and start time from the run file) and brings the group back to
    its recorded level (not --level) with fresh processes."""
    env.cltab(
        f"""g:1,2:r:respawn:{env.sleeper("r")}
g:2:o:once:{env.sleeper("o")}
"""
    )
    d = env.daemon("--level", "g=1")
    r = env.pid("r")
    until(lambda: d.group("g")["state"] == "RUNNING", "level 1 from --level")
    d.level("g", "2")
    o = env.pid("o")
    d.proc.kill()
    d.proc.wait()
    assert alive(r), "children live on in their own sessions"
    assert alive(o)
    d2 = env.daemon("--level", "g=1", name="daemon2")
    r2, o2 = env.fresh_pid("r", r), env.fresh_pid("o", o)
    until(lambda: d2.group("g")["state"] == "RUNNING", "RUNNING after restart")
    assert d2.group("g")["level"] == "2"
    assert gone(r)
    assert gone(o)
    assert {p["pid"] for p in d2.group("g")["procs"]} == {r2, o2}
    assert d2.stop() == 0
    assert gone(r2), "a stopped daemon stops its groups"
    assert gone(o2)
    status = clinit.parse_status(d2.status_file.read_text())["g"]
    assert (status["level"], status["state"]) == ("2", "STOPPED")


def test_cluster_level_converges_and_survives_restart(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`clinit --cluster` sets the desired level in shared state: the daemon of a host in
    the cluster group converges, one outside it does not; local requests for the group are
    refused; status is published per host; a restarted daemon adopts a level set while it
    was down."""
    url = f"file://{env.base / 'shared'}"
    cluster = env.base / "cluster"
    cluster.write_text("GROUP:web\nh1\nGROUP:other\nh2\n")
    env.cltab(f"web:1:a:respawn:{env.sleeper('a')}\nweb:2:b:respawn:{env.sleeper('b')}\n")
    opts = ["--url", url, "--file", str(cluster), "--poll", "0.2"]
    d1 = env.daemon(*opts, "--host", "h1", name="h1")
    other = Env(env.base / "h2")
    try:
        other.cltab(f"web:1:a:respawn:{other.sleeper('a')}\n")
        d2 = other.daemon(*opts, "--host", "h2", name="h2")

        client = ["--url", url, "clinit", "--file", str(cluster), "--cluster"]
        assert main([*client, "nosuch", "1"]) == 1
        assert main([*client, "web", "1"]) == 0
        a = env.pid("a")
        until(lambda: d1.group("web")["state"] == "RUNNING", "h1 RUNNING")
        with pytest.raises(UnidistError, match="cluster-wide"):
            clinit.set_level("web", "2", d1.sock)

        def published() -> bool:
            hosts = clinit.cluster_status(url)["hosts"]
            return bool(
                hosts.get("h1", {}).get("groups", {}).get("web", {}).get("state") == "RUNNING"
            )

        until(published, "h1's status in shared state")
        capsys.readouterr()
        assert main(["--url", url, "clinit", "--status", "--cluster"]) == 0
        rows = [line.split()[:5] for line in capsys.readouterr().out.splitlines()]
        assert rows[0] == ["HOST", "GROUP", "LEVEL", "DESIRED", "STATE"]
        assert ["h1", "web", "1", "1", "RUNNING"] in rows
        set_at = clinit.cluster_status(url)["desired"]["web"]["set_at"]
        until(lambda: (d2.status()["polled"] or 0) > set_at, "h2 to read the desired levels")
        assert d2.group("web")["level"] is None, "h2 is not in cluster group web"
        assert not (other.pids / "a.pid").exists()
        assert clinit.cluster_status(url)["desired"]["web"]["level"] == "1"

        d1.proc.kill()
        d1.proc.wait()
        clinit.set_cluster_level(url, "web", "2")
        d1b = env.daemon(*opts, "--host", "h1", name="h1b")
        b = env.pid("b")
        until(lambda: gone(a), "level-1 orphan stopped by the new daemon")
        info = until(lambda: (g := d1b.group("web"))["state"] == "RUNNING" and g, "level 2")
        assert info["level"] == "2"
        assert [p["pid"] for p in info["procs"]] == [b]
    finally:
        other.cleanup()


def test_status_cli_json_and_second_daemon(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`clinit --status` prints a table and `--json` the daemon's data; an unknown group is
    refused; a second daemon on the same socket exits 1 with a clear error."""
    env.cltab(f"g:1:a:once:{env.sleeper('a')}\n")
    d = env.daemon()
    d.level("g", "1")
    a = env.pid("a")
    assert main(["clinit", "--socket", str(d.sock), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["GROUP", "LEVEL", "STATE", "SINCE", "PIDS", "REASON"]
    assert lines[1].split()[:3] == ["g", "1", "RUNNING"]
    assert f"a={a}" in lines[1]
    assert main(["--json", "clinit", "--socket", str(d.sock), "--status"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"]["g"]["procs"][0]["pid"] == a
    assert main(["clinit", "--socket", str(d.sock), "nosuch", "1"]) == 1
    assert "no group 'nosuch'" in capsys.readouterr().err
    argv = ["clinit", "--daemon", "--cltab", str(env.base / "cltab"), "--socket", str(d.sock)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"another clinit daemon (pid {d.proc.pid}) is already running on {d.sock}" in err
    assert d.status()["pid"] == d.proc.pid
    before = cpu_seconds(d.proc.pid)
    time.sleep(1.0)
    used = cpu_seconds(d.proc.pid) - before
    assert used < 0.05, f"an idle daemon used {used:.2f}s of CPU in 1 s"


def test_client_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A client with no daemon listening says so."""
    assert main(["clinit", "--socket", str(tmp_path / "none.sock"), "--status"]) == 1
    assert "no clinit daemon is listening" in capsys.readouterr().err


# ------------------------------------------------------------------------------- cltab
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("web:1:a:once", "expected group:level:tag:mode:command, got 4 field(s)"),
        ("web:1:a:sometimes:true", "unknown mode 'sometimes'"),
        ("we b:1:a:once:true", "group 'we b' is not valid"),
        ("web::a:once:true", "level '' is not valid"),
        ("web:1:.a:once:true", "tag '.a' is not valid"),
        ("web:1:a:once:", "a 'once' entry needs a command"),
        ("web:1:a:off:true", "an 'off' entry takes no command"),
        ("web:1:a:once:sh -c 'unclosed", "cannot split the command"),
        ("web:2,1:x:once:true", "tag 'x' of group 'web' is already used at level(s) 1 on line 2"),
    ],
)
def test_bad_cltab_lines_name_file_and_line(line: str, message: str) -> None:
    """Each malformed line is reported with the file name and its line number."""
    text = "# comment\nweb:1:x:once:true\n\n" + line + "\n"
    with pytest.raises(ClusterFileError) as info:
        parse_table(text, "/etc/cltab")
    assert str(info.value).startswith("/etc/cltab:4: ")
    assert message in str(info.value)
    assert (info.value.path, info.value.line) == ("/etc/cltab", 4)


def test_cltab_parsing() -> None:
    """Fields are trimmed, commands are split like a shell would (no shell runs), a command
    keeps its colons, levels are comma lists."""
    table = parse_table(" web : 1,2 : a : respawn : /bin/x --url=http://h:1 'a b'\nweb:3:a:off:\n")
    first, second = table.entries
    assert first.levels == ("1", "2")
    assert first.mode == "respawn"
    assert first.argv == ("/bin/x", "--url=http://h:1", "a b")
    assert (second.mode, second.argv, second.line) == ("off", (), 2)
    assert table.entries_at("web", "2") == (first,)
    assert table.groups == ("web",)


def test_cltab_others_could_change_is_refused(tmp_path: Path) -> None:
    """A cltab writable by group or others, or owned by another user, is refused."""
    path = tmp_path / "cltab"
    path.write_text("g:1:a:once:true\n")
    os.chmod(path, 0o644)
    assert len(read_table(path).entries) == 1
    os.chmod(path, 0o664)
    with pytest.raises(ClusterFileError, match="writable by group or others"):
        read_table(path)
    os.chmod(path, 0o644)
    os.chown(path, 65534, 65534)
    with pytest.raises(ClusterFileError, match="owned by uid 65534"):
        read_table(path)
    assert len(read_table(path, strict=False).entries) == 1


def test_daemon_with_bad_cltab_exits_naming_the_line(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon refuses to start on a malformed cltab, naming file and line."""
    path = env.cltab("g:1:a:once:true\ng:1:b:bogus:true\n")
    sock = env.base / "run" / "clinit.sock"
    assert main(["clinit", "--daemon", "--cltab", str(path), "--socket", str(sock)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"unidist: error: {path}:2: unknown mode 'bogus'; use one of {', '.join(clinit.MODES)}\n"
    )
    assert not sock.exists()
