"""X4 (RELIABILITY.md): remote argv quoting and ssh invocation safety.

* Remote argv with spaces, quotes, ``$()``, backticks, ``;``, newlines, ``*``, a leading ``-``
  and random hostile words round-trips exactly through a real sshd: the remote side prints
  its argv NUL-separated. The same check runs through a stand-in ``ssh`` (``$UNIDIST_SSH``)
  that hands the joined string to ``sh -c`` as sshd would, so dash's parsing is covered too
  (the real sshd uses the login shell, bash here).
* Hosts and users starting with ``-`` are refused; ``--`` precedes the host; ``BatchMode=yes``
  is always passed; no ``shell=True`` (nor ``os.system``/``os.popen``) anywhere in unidist/.

Random words scale with ``count()`` (soak: ``bash scripts/soak.sh``); replay with
``UNIDIST_SEED``.
"""

from __future__ import annotations

import ast
import os
import random
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster._sshd import Sshd
from tests.reliability._report import Result, count, seed
from unidist.cluster.remote import resolve_targets, run, run_one, scp_argv, ssh_argv

ROOT = Path(__file__).resolve().parents[2]
FIXED = [
    "a b",
    "  two  spaces  ",
    "",
    "'",
    '"',
    'it\'s "quoted"',
    "$(touch CANARY)",
    "`touch CANARY`",
    "${HOME}",
    "$HOME",
    ";",
    "a;touch CANARY",
    "&& touch CANARY",
    "| touch CANARY",
    "> CANARY",
    "line1\nline2",
    "\n",
    "trailing newline\n",
    "*",
    "/*",
    "?",
    "[a-z]*",
    "-n",
    "-e",
    "--",
    "-",
    "--help",
    "\\",
    "back\\slash\\n",
    "~",
    "~root",
    "!",
    "!!",
    "#not a comment",
    "%s%d",
    "{a,b}",
    "\t tab",
    "é ü 漢字 🙂",
    "a'b\"c`d$e\\f",
]
ALPHABET = " \t\n'\"`$(){}[]*?;&|<>!#~\\-=%@^,.:/aZ09é"
# Prints each argument followed by NUL; the command runs under the remote login shell.
PRINT_ARGV = ["printf", "%s\\0"]


def _random_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def _decode(stdout: str) -> list[str]:
    assert stdout.endswith("\0"), stdout[-20:]
    return stdout[:-1].split("\0")


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    with Sshd() as server:
        yield server


@pytest.fixture
def stand_in_ssh(tmp_path: Path) -> Path:
    """An ``ssh`` that skips its options up to ``--`` and the host, then runs the remote
    command string with ``sh -c`` (what sshd does with the login shell)."""
    script = tmp_path / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        'while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done\n'
        "shift 2\n"  # "--" and the host
        'exec /bin/sh -c "$1"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _shell_calls_in(text: str, name: str) -> list[str]:
    """``name:line`` of every call in ``text`` passing ``shell=`` other than False, or
    calling ``os.system`` / ``os.popen``."""
    found = []
    for node in ast.walk(ast.parse(text, name)):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "shell" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{name}:{node.lineno}")
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "os"
            and func.attr in ("system", "popen")
        ):
            found.append(f"{name}:{node.lineno}")
    return found


def _shell_true_calls() -> list[str]:
    """Such calls anywhere in unidist/."""
    found = []
    for path in sorted((ROOT / "unidist").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "shell" in text or "system" in text or "popen" in text:  # else parsing is moot
            found += _shell_calls_in(text, str(path.relative_to(ROOT)))
    return found


def test_x4_ssh_quoting_and_invocation(
    sshd: Sshd, stand_in_ssh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = seed()
    rng = random.Random(s)
    batches = count(ci=1, soak=50)
    per_batch = 40
    report = Result(
        "X4",
        "ssh",
        s,
        params={"batches": batches, "words_per_batch": per_batch},
        path=str(tmp_path),
    )
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    canaries = [work / "CANARY", Path.home() / "CANARY"]
    mismatches: list[tuple[str, list[str], list[str]]] = []

    def check(via: str, words: list[str], options: list[str]) -> None:
        res = run_one("node1", [*PRINT_ARGV, *words], ssh_options=options, timeout=60)
        report.timing(via, res.duration * 1000)
        report.attempted += len(words)
        got = _decode(res.stdout) if res.ok else []
        if res.ok and got == words:
            report.ok += len(words)
        else:
            mismatches.append((via, words, got))
            report.violations += 1

    # 1. Through the real sshd (the login shell parses the joined string).
    for i in range(batches):
        extra = FIXED if i == 0 else []
        check("sshd", extra + _random_words(rng, per_batch), sshd.ssh_options)
    # 2. Through a stand-in ssh running /bin/sh -c (dash on Debian).
    monkeypatch.setenv("UNIDIST_SSH", str(stand_in_ssh))
    check("sh_c", FIXED, [])
    for _ in range(batches):
        check("sh_c", _random_words(rng, per_batch), [])
    monkeypatch.delenv("UNIDIST_SSH")
    # A fan-out carries the same exact words to every host.
    fan = run(["node2", "node3"], [*PRINT_ARGV, *FIXED], ssh_options=sshd.ssh_options)
    report.attempted += 2
    for res in fan.values():
        if res.ok and _decode(res.stdout) == FIXED:
            report.ok += 1
        else:
            report.violations += 1
            mismatches.append(("fan-out", FIXED, _decode(res.stdout) if res.ok else []))

    # 3. Hosts and users starting with "-" never reach ssh.
    hostile_hosts = ["-oProxyCommand=touch CANARY", "-p", "-oUser@node1", "ops@-node1", "-@node1"]
    rejected = 0
    for host in hostile_hosts:
        for call in (
            lambda h: ssh_argv(h, "true"),
            lambda h: scp_argv(h, ["x"], "/tmp"),
            lambda h: resolve_targets(h),
            lambda h: run_one(h, "true"),
            lambda h: run([h], "true"),
        ):
            try:
                call(host)
            except ValueError as exc:
                rejected += host in str(exc)
    report.attempted += len(hostile_hosts) * 5
    report.ok += rejected
    report.violations += len(hostile_hosts) * 5 - rejected

    # 4. The command line shape: "--" right before the host, BatchMode=yes, ConnectTimeout.
    argv = ssh_argv("node1", ["-x", "y"], ssh_options=["-o", "BatchMode=no"])
    shape_ok = (
        argv[argv.index("--") + 1] == "node1"
        and argv.index("BatchMode=yes") < argv.index("BatchMode=no")  # ssh keeps the first
        and "ConnectTimeout=10" in argv
        and argv[-1] == shlex.join(["-x", "y"])
    )
    scp = scp_argv("node1", ["-f", "a:b"], "/srv", ssh_options=[])
    shape_ok = shape_ok and scp[scp.index("--") + 1 :] == [
        os.path.abspath("-f"),
        os.path.abspath("a:b"),
        "node1:/srv/",
    ]
    shape_ok = shape_ok and "BatchMode=yes" in scp
    report.violations += not shape_ok

    # 5. No shell=True, os.system or os.popen anywhere in the package (the scanner finds them).
    sample = "import os, subprocess\nsubprocess.run('x', shell=True)\nos.system('x')\n"
    assert _shell_calls_in(sample, "sample") == ["sample:2", "sample:3"]
    shell_calls = _shell_true_calls()
    report.violations += len(shell_calls)

    report.unexpected = sum(p.exists() for p in canaries)
    report.extra["shell_calls"] = len(shell_calls)
    report.emit()
    assert not mismatches, mismatches[:3]
    assert rejected == len(hostile_hosts) * 5
    assert shape_ok, (argv, scp)
    assert shell_calls == []
    assert report.unexpected == 0
    assert report.violations == 0
