"""``unidist backend check`` and the error/exit-code rules every command shares."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from unidist.backends._url import redact
from unidist.cli import main

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_backend_check_json(backend_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`backend check --json` names the backend, URL and version and times a round trip."""
    assert main(["backend", "check", "--url", backend_url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] is True
    assert info["url"] == redact(backend_url)  # a Redis URL with a password is redacted
    assert info["scheme"] == backend_url.partition("://")[0]
    assert info["version"]
    assert info["roundtrip_ms"] >= 0
    assert info["ping_ms"] >= 0


def test_backend_check_human(capsys: pytest.CaptureFixture[str]) -> None:
    """The human report is a few labelled lines ending in ok."""
    assert main(["--url", "memory://check", "backend", "check"]) == 0
    out = capsys.readouterr().out
    assert "memory://check" in out
    assert "roundtrip" in out
    assert out.endswith("ok\n")


@pytest.mark.parametrize(
    "args",
    [
        ["backend", "check"],
        ["queue", "get", "q"],
        ["counter", "incr", "c"],
        ["lock", "run", "l", "--", "true"],
    ],
    ids=["check", "queue-get", "counter", "lock-run"],
)
def test_unreachable_backend_exits_69_without_password(cli: Cli, args: list[str]) -> None:
    """An unreachable Redis: exit 69, one line naming the URL, no password, no traceback."""
    proc = cli("redis://user:s3cret@127.0.0.1:1/0?connect_timeout=0.2&retries=0", *args)
    assert proc.returncode == 69, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("unidist: error: ")
    assert proc.stderr.count("\n") == 1
    assert "127.0.0.1:1" in proc.stderr
    assert "s3cret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback(cli: Cli) -> None:
    """--debug lets the traceback through (still never the password)."""
    proc = cli("bogus://u:s3cret@x", "--debug", "counter", "get", "c")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "s3cret" not in proc.stderr


def test_global_options_after_command(capsys: pytest.CaptureFixture[str]) -> None:
    """--url and --json work after the command; arguments after -- are CMD's own."""
    assert main(["counter", "incr", "c", "--url", "memory://late", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "c", "value": 1}
    assert main(["--url", "memory://late", "counter", "get", "c"]) == 0
    assert capsys.readouterr().out == "1\n"


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` works on every command and subcommand, with a description."""
    from unidist.cli.main import cli

    def walk(cmd: object, path: list[str]) -> list[list[str]]:
        import click

        found = [path]
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                found += walk(sub, [*path, name])
        return found

    for path in walk(cli, []):
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert "Usage:" in out, path
        assert len(out.splitlines()) > 3, path
