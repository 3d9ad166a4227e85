"""``unidist queue ...``: put/get/stats/dead/purge, exit 3 on empty, and ``queue work``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import unidist
from unidist.cli import main

Cli = Callable[..., subprocess.CompletedProcess[str]]

# A worker CMD: appends its stdin to a file; fails on bodies that ask for it.
WORKER = (
    "import json, os, sys\n"
    "body = json.loads(sys.stdin.read())\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(json.dumps([body, os.environ['UNIDIST_ATTEMPTS']]) + '\\n')\n"
    "sys.exit(1 if isinstance(body, dict) and body.get('fail') else 0)\n"
)


def test_put_get_stats_purge(backend_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """put prints an id; get prints the body as JSON in priority order; stats and purge count."""
    u = ["--url", backend_url, "queue"]
    assert main([*u, "put", "q", '{"n": 1}']) == 0
    first_id = capsys.readouterr().out.strip()
    assert len(first_id) == 32
    assert main([*u, "put", "q", "urgent", "--priority", "5"]) == 0
    assert main([*u, "put", "q", "later", "--delay", "60"]) == 0
    capsys.readouterr()
    assert main([*u, "stats", "q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ready": 2,
        "delayed": 1,
        "in_flight": 0,
        "dead": 0,
    }
    assert main([*u, "get", "q"]) == 0
    assert capsys.readouterr().out == '"urgent"\n'
    assert main([*u, "get", "q", "--timeout", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 1}
    assert main([*u, "purge", "q"]) == 0
    assert capsys.readouterr().out == "1\n"
    assert main([*u, "get", "q"]) == 3
    assert capsys.readouterr() == ("", "")


@pytest.mark.scope("host")
def test_get_on_empty_queue_exits_3(cli: Cli, backend_url: str) -> None:
    """An empty queue after the timeout: exit 3 and nothing on stdout."""
    proc = cli(backend_url, "queue", "get", "empty", "--timeout", "0.2")
    assert (proc.returncode, proc.stdout) == (3, "")


@pytest.mark.scope("host")
def test_queue_work_acks_and_nacks(cli: Cli, backend_url: str, tmp_path: Path) -> None:
    """`queue work` feeds each body to CMD; exit 0 acks, failure nacks (to the dead list
    after --max-attempts), --idle ends it, and the summary is JSON."""
    for body in ('{"n": 1}', '{"fail": true}', "plain"):
        assert cli(backend_url, "queue", "put", "jobs", body).returncode == 0
    out = tmp_path / "seen.jsonl"
    proc = cli(
        backend_url,
        "--json",
        "queue",
        "work",
        "jobs",
        "--idle",
        "0.5",
        "--max-attempts",
        "2",
        "--",
        sys.executable,
        "-c",
        WORKER,
        str(out),
    )
    assert proc.returncode == 1, proc.stderr  # one CMD failed
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["messages"] == 4
    assert summary["ok"] == 2
    assert summary["failed"] == 2
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    assert [b for b, _ in seen].count({"fail": True}) == 2
    assert sorted(a for b, a in seen if b == {"fail": True}) == ["1", "2"]
    assert {"n": 1} in [b for b, _ in seen]
    assert "plain" in [b for b, _ in seen]
    q = unidist.MessageQueue("jobs", backend=backend_url)
    assert q.stats() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    dead = cli(backend_url, "queue", "dead", "jobs", "--json")
    assert [m["body"] for m in json.loads(dead.stdout)] == [{"fail": True}]


def test_queue_work_max(
    backend_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max N stops after N messages; the rest stay ready."""
    q = unidist.MessageQueue("m", backend=backend_url)
    for n in range(3):
        q.put(n)
    out = tmp_path / "seen.jsonl"
    argv = ["--url", backend_url, "queue", "work", "m", "--max", "2"]
    assert main([*argv, "--", sys.executable, "-c", WORKER, str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert q.stats()["ready"] == 1
    assert "2 messages" in capsys.readouterr().err


def test_queue_dead_and_requeue(capsys: pytest.CaptureFixture[str]) -> None:
    """Dead messages are listed and can be made ready again."""
    url = "memory://queue-dead"
    q = unidist.MessageQueue("d", backend=url, max_attempts=1)
    q.put({"x": 1})
    q.receive(timeout=1).nack()
    assert main(["--url", url, "queue", "dead", "d"]) == 0
    assert 'attempts=1  {"x": 1}' in capsys.readouterr().out
    assert main(["--url", url, "queue", "requeue", "d"]) == 0
    assert capsys.readouterr().out == "1\n"
    assert q.stats()["ready"] == 1
