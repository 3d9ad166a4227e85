"""``unidist cluster ...``: the cluster file and live members from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unidist.backends import Backend
from unidist.cli.main import main
from unidist.cluster import Membership

FILE = "foo\nbar\nGROUP:odd\none\nthree\nGROUP:prime\none\ntwo\nLUMP:weird\nprime\nodd\n"


@pytest.fixture
def cluster_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cluster"
    path.write_text(FILE)
    monkeypatch.setenv("CLUSTER", str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_groups_hosts_groups_of(cluster_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "cluster", "groups") == (0, "odd\nprime\nweird\n", "")
    assert run(capsys, "cluster", "hosts", "weird")[1].split() == ["one", "two", "three"]
    assert run(capsys, "cluster", "hosts")[1].split() == ["foo", "bar", "one", "three", "two"]
    assert run(capsys, "cluster", "hosts", "__orphans__")[1].split() == ["foo", "bar"]
    assert run(capsys, "cluster", "groups-of", "one")[1].split() == ["odd", "prime", "weird"]
    code, out, _ = run(capsys, "--json", "cluster", "groups-of", "foo")
    assert (code, json.loads(out)) == (0, ["__orphans__"])
    code, out, _ = run(capsys, "cluster", "hosts", "odd", "--json")
    assert (code, json.loads(out)) == (0, ["one", "three"])
    code, _, err = run(capsys, "cluster", "hosts", "nope")
    assert code == 1
    assert "nope" in err


def test_properties(cluster_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "cluster", "properties")
    props = json.loads(out)
    assert code == 0
    assert props["groups.weird"] == ["one", "two", "three"]
    assert props["hosts.one"] == ["odd", "prime", "weird"]
    assert isinstance(props["hostname"], str)
    human = run(capsys, "cluster", "properties")[1].splitlines()
    assert "groups.odd=one three" in human


def test_file_option_and_errors(
    cluster_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.write_text("GROUP:solo\nx\n")
    assert run(capsys, "cluster", "--file", str(other), "groups")[1] == "solo\n"
    bad = tmp_path / "bad"
    bad.write_text("LUMP:l\nmissing\n")
    code, _, err = run(capsys, "cluster", "--file", str(bad), "groups")
    assert code == 1
    assert f"{bad}:2" in err
    code, _, err = run(capsys, "cluster", "--file", str(tmp_path / "absent"), "groups")
    assert code == 1
    assert "absent" in err


def test_members(backend: Backend, backend_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--url", backend_url, "cluster", "members")[1] == "no live members\n"
    with Membership(backend, member_id="web-1", groups=["web"], meta={"v": 1}, ttl=5):
        with Membership(backend, member_id="db-1", groups=["db"], ttl=5, current=False):
            code, out, _ = run(capsys, "--url", backend_url, "cluster", "members", "--json")
            assert code == 0
            assert [m["id"] for m in json.loads(out)] == ["db-1", "web-1"]
            code, out, _ = run(capsys, "--url", backend_url, "cluster", "members", "--group", "web")
            assert code == 0
            assert "web-1" in out
            assert "db-1" not in out
            assert out.splitlines()[0].split()[:4] == ["MEMBER", "HOST", "PID", "GROUPS"]
            record = json.loads(run(capsys, "--url", backend_url, "--json", "cluster",
                                    "members")[1])[1]  # fmt: skip
            assert record["meta"] == {"v": 1}
            assert set(record) >= {"host", "pid", "groups", "joined_at", "last_seen"}
