"""``unidist counter ...`` and ``unidist state ...``: values, JSON, exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from unidist.cli import main

Cli = Callable[..., subprocess.CompletedProcess[str]]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_counter_commands_print_the_value(
    backend_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """incr/decr/set/reset/get print the resulting value; negative N needs no `--`."""
    u = ["--url", backend_url, "counter"]
    assert run(capsys, *u, "get", "c") == (0, "0\n", "")
    assert run(capsys, *u, "incr", "c") == (0, "1\n", "")
    assert run(capsys, *u, "incr", "c", "10") == (0, "11\n", "")
    assert run(capsys, *u, "incr", "c", "-5") == (0, "6\n", "")
    assert run(capsys, *u, "decr", "c") == (0, "5\n", "")
    assert run(capsys, *u, "decr", "c", "7") == (0, "-2\n", "")
    assert run(capsys, *u, "set", "c", "42") == (0, "42\n", "")
    assert run(capsys, *u, "get", "c") == (0, "42\n", "")
    rc, out, _ = run(capsys, *u, "get", "c", "--json")
    assert rc == 0
    assert json.loads(out) == {"name": "c", "value": 42}
    rc, out, _ = run(capsys, "--url", backend_url, "--json", "counter", "list")
    assert rc == 0
    assert json.loads(out)["c"] == 42
    assert run(capsys, *u, "reset", "c") == (0, "0\n", "")


def test_counter_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    """A value outside 64 bits or not a number is a usage error; a bad name an error."""
    u = ["--url", "memory://counter-bad", "counter"]
    assert run(capsys, *u, "set", "c", str(2**63))[0] == 2
    assert run(capsys, *u, "incr", "c", "many")[0] == 2
    rc, out, err = run(capsys, *u, "incr", "../etc")
    assert (rc, out) == (1, "")
    assert err.startswith("unidist: error: counter name '../etc'")
    assert err.count("\n") == 1


def test_state_set_parses_json_or_keeps_a_string(
    backend_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """VALUE is JSON when it parses, else a plain string; --string forces a string."""
    u = ["--url", backend_url, "state"]
    cases = [
        (["n", "3"], 3),
        (["obj", '{"a": [1, true, null]}'], {"a": [1, True, None]}),
        (["word", "hello world"], "hello world"),
        (["quoted", '"x"'], "x"),
        (["nan", "NaN"], "NaN"),
        (["port", "8080", "--string"], "8080"),
    ]
    for args, _ in cases:
        assert run(capsys, *u, "set", "b", *args) == (0, "", "")
    for args, expected in cases:
        rc, out, _ = run(capsys, *u, "get", "b", args[0])
        assert rc == 0
        assert json.loads(out) == expected
    assert run(capsys, *u, "get", "b", "word", "--raw") == (0, "hello world\n", "")
    rc, out, _ = run(capsys, *u, "list", "b")
    assert rc == 0
    assert json.loads(out) == {args[0]: v for args, v in cases}
    rc, out, _ = run(capsys, "--url", backend_url, "--json", "state", "buckets")
    assert rc == 0
    assert json.loads(out) == ["b"]


def test_state_missing_key_and_delete(backend_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing key exits 1 with a message on stderr and nothing on stdout; del removes."""
    u = ["--url", backend_url, "state"]
    rc, out, err = run(capsys, *u, "get", "b", "nope")
    assert (rc, out) == (1, "")
    assert err == "unidist: error: key 'nope' is not in bucket 'b'\n"
    assert run(capsys, *u, "set", "b", "k", "1")[0] == 0
    assert run(capsys, *u, "del", "b", "k") == (0, "", "")
    assert run(capsys, *u, "del", "b", "k")[0] == 1
    assert run(capsys, *u, "del", "b", "k", "--missing-ok")[0] == 0
    assert run(capsys, *u, "list", "b") == (0, "{}\n", "")


@pytest.mark.scope("host")
def test_shell_round_trip(cli: Cli, backend_url: str) -> None:
    """As a script would: values set by one process are read by another, JSON on stdout."""
    assert cli(backend_url, "state", "set", "cfg", "hosts", '["a", "b"]').returncode == 0
    got = cli(backend_url, "state", "get", "cfg", "hosts")
    assert got.returncode == 0
    assert json.loads(got.stdout) == ["a", "b"]
    assert cli(backend_url, "counter", "incr", "ids").stdout == "1\n"
    late = cli(None, "counter", "incr", "ids", "--url", backend_url, "--json")
    assert late.returncode == 0, late.stderr
    assert json.loads(late.stdout) == {"name": "ids", "value": 2}


def test_too_deeply_nested_json_is_a_usage_error_and_stores_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "memory://deep-json"
    deep = "[" * 30000 + "]" * 30000
    code, _, err = run(capsys, "--url", url, "state", "set", "b", "k", deep)
    assert code == 2
    assert "nested too deeply" in err
    assert "RecursionError" not in err
    code, _, _ = run(capsys, "--url", url, "state", "get", "b", "k")
    assert code == 1
