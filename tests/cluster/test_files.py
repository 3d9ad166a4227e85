"""Cluster definition files: the clusterit format, its errors, the Cluster API, Hypothesis."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unidist
from unidist.cluster import ALL, ORPHANS, Cluster, load, parse
from unidist.errors import ClusterFileError

EXAMPLE = """\
# the example of the clusterit documentation
foo.baz.com
bar.baz.com

GROUP:odd
one.baz.com
three.baz.com
five.baz.com

GROUP:even
two.baz.com
four.baz.com
six.baz.com

GROUP:prime
one.baz.com
two.baz.com
three.baz.com
five.baz.com

GROUP:qux
frob.baz.com
one.baz.com

LUMP:weird
qux
prime
"""


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLUSTER", raising=False)


def write(tmp_path: Path, text: str | bytes, name: str = "cluster") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_documentation_example(tmp_path: Path) -> None:
    c = load(write(tmp_path, EXAMPLE))
    assert c.groups_of("one.baz.com") == ("odd", "prime", "qux", "weird")
    assert c.group("weird").count("one.baz.com") == 1
    assert c.group("weird") == (
        "frob.baz.com",
        "one.baz.com",
        "two.baz.com",
        "three.baz.com",
        "five.baz.com",
    )
    assert c.group(ORPHANS) == ("foo.baz.com", "bar.baz.com")
    assert c.groups == ("odd", "even", "prime", "qux", "weird")
    assert c.hosts[:4] == ("foo.baz.com", "bar.baz.com", "one.baz.com", "three.baz.com")
    assert len(c.hosts) == len(set(c.hosts)) == 9
    assert c.group(ALL) == c.hosts
    assert c.groups_of("foo.baz.com") == (ORPHANS,)
    assert c.groups_of("six.baz.com") == ("even",)
    assert c.groups_of("nowhere.example") == ()
    with pytest.raises(KeyError):
        c.group("nope")
    assert c.path == str(tmp_path / "cluster")


def test_properties_flat_view(tmp_path: Path) -> None:
    c = load(write(tmp_path, EXAMPLE))
    props = c.properties()
    assert props["groups.prime"] == c.group("prime")
    assert props["groups.__orphans__"] == ("foo.baz.com", "bar.baz.com")
    assert props["groups.__all__"] == c.hosts
    assert props["hosts.one.baz.com"] == ("odd", "prime", "qux", "weird")
    assert props["hostname"] == socket.gethostname() == c.hostname
    assert props["shortname"] == c.hostname.split(".")[0] == c.shortname
    for key, value in props.items():
        if key in ("hostname", "shortname"):
            assert isinstance(value, str)
        else:
            assert isinstance(value, tuple)
            assert all(isinstance(v, str) for v in value)


def test_comments_blank_lines_whitespace_and_duplicates() -> None:
    c = parse(
        "  a   # first\n\n\t# only a comment\nb\r\na\nGROUP:g   \n  x\n y # why\nx\n\nGROUP:h\n"
    )
    assert c.group(ORPHANS) == ("a", "b")
    assert c.group("g") == ("x", "y")
    assert c.group("h") == ()
    assert c.groups == ("g", "h")
    assert c.hosts == ("a", "b", "x", "y")


def test_host_in_several_groups_and_orphan() -> None:
    c = parse("a\nGROUP:g\na\nb\nGROUP:h\nb\na\n")
    assert c.groups_of("a") == (ORPHANS, "g", "h")
    assert c.groups_of("b") == ("g", "h")


def test_lumps_of_lumps_forward_references_and_reserved_groups() -> None:
    c = parse(
        "o1\n"
        "LUMP:top\n"
        "mid\n"  # a lump defined later
        "g3\n"
        "LUMP:mid\n"
        "g2\n"
        "g1\n"
        "__orphans__\n"
        "GROUP:g1\nh1\nh2\n"
        "GROUP:g2\nh2\nh3\n"
        "GROUP:g3\nh4\nh1\n"
    )
    assert c.group("mid") == ("h2", "h3", "h1", "o1")
    assert c.group("top") == ("h2", "h3", "h1", "o1", "h4")
    assert c.groups == ("top", "mid", "g1", "g2", "g3")
    assert c.groups_of("h1") == ("top", "mid", "g1", "g3")
    assert c.groups_of("o1") == (ORPHANS, "top", "mid")
    everything = parse("a\nGROUP:g\nb\nLUMP:l\n__all__\n")
    assert everything.group("l") == ("a", "b")


def test_repeated_group_continues_the_first() -> None:
    c = parse("GROUP:a\nh1\nGROUP:b\nh2\nGROUP:a\nh3\nh1\nLUMP:l\na\nLUMP:l\nb\n")
    assert c.groups == ("a", "b", "l")
    assert c.group("a") == ("h1", "h3")
    assert c.group("l") == ("h1", "h3", "h2")
    assert c.hosts == ("h1", "h2", "h3")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("GROUP:g\na\nLUMP:l\ng\nnope\n", 5, "unknown group 'nope'"),
        ("LUMP:a\nb\nLUMP:b\nc\nLUMP:c\na\n", 6, "cycle"),
        ("LUMP:a\na\n", 2, "cycle"),
        ("GROUP:x\nh\nLUMP:x\nx\n", 3, "cannot also be a lump"),
        ("a b\n", 1, "one host"),
        ("ok\nGROUP:\n", 2, "needs a name"),
        ("GROUP:__all__\n", 1, "reserved"),
        ("LUMP:__orphans__\n", 1, "reserved"),
        ("a\n\x00b\n", 2, "one host"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ClusterFileError) as info:
        load(path)
    assert info.value.line == line
    assert info.value.path == str(path)
    assert f"{path}:{line}" in str(info.value)
    assert words in str(info.value)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\nGROUP:g\n\xff\xfe\n")
    with pytest.raises(ClusterFileError) as info:
        load(path)
    assert info.value.line == 3


def test_missing_or_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClusterFileError) as info:
        load(tmp_path / "absent")
    assert info.value.path == str(tmp_path / "absent")
    assert isinstance(info.value, unidist.UnidistError)
    with pytest.raises(ClusterFileError):
        load(tmp_path)  # a directory
    monkeypatch.setenv("CLUSTER", str(tmp_path / "absent-too"))
    with pytest.raises(ClusterFileError):
        load()


def test_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTER", str(write(tmp_path, EXAMPLE)))
    assert load().groups_of("two.baz.com") == ("even", "prime", "weird")
    explicit = write(tmp_path, "GROUP:z\nzz\n", "other")
    assert load(explicit).groups == ("z",)


def test_no_file_is_the_local_host() -> None:
    c = load()
    assert c.path is None
    assert c.hosts == (socket.gethostname(),)
    assert c.group(ALL) == c.hosts
    assert c.group(ORPHANS) == ()
    assert c.groups == ()
    assert c.groups_of(c.hostname) == ()
    assert "groups.__all__" in c.properties()


def test_cluster_is_reachable_from_the_package() -> None:
    assert unidist.cluster.load is load
    assert isinstance(parse(""), Cluster)


# ---------------------------------------------------------------------------- Hypothesis
HOSTS = ("a.x", "b.x", "c", "d-1", "e.y.z", "10.0.0.1", "f@g")
GROUPS = ("g1", "g2", "g3", "odd")
LUMPS = ("l1", "l2", "l3")  # a lump may only name lumps before it here: never a cycle


_BEFORE = ("", "", "", "   ", "# c", "\t# GROUP:nope")
_LEFT = ("", "", " ", "\t")
_RIGHT = ("", "", " ", "  # trailing", "\r")


def _render(lines: list[str], draw: st.DrawFn) -> str:
    n = len(lines)
    deco = draw(st.lists(st.integers(0, 119), min_size=n, max_size=n))
    out = []
    for text, d in zip(lines, deco):
        before = _BEFORE[d % 6]
        if before:
            out.append(before)
        out.append(_LEFT[d // 6 % 4] + text + _RIGHT[d // 24 % 5])
    return "\n".join(out) + "\n"


@st.composite
def cluster_files(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    orphans = draw(st.lists(st.sampled_from(HOSTS), max_size=4))
    heads = draw(st.lists(st.sampled_from(GROUPS + LUMPS), max_size=8))
    defined = set(heads)
    sections: list[tuple[str, list[str]]] = []
    for name in heads:
        if name in GROUPS:
            entries = draw(st.lists(st.sampled_from(HOSTS), max_size=4))
        else:
            allowed = [g for g in GROUPS if g in defined]
            allowed += [lmp for lmp in LUMPS[: LUMPS.index(name)] if lmp in defined]
            allowed += [ORPHANS, ALL]
            entries = draw(st.lists(st.sampled_from(allowed), max_size=4))
        sections.append((name, entries))
    lines = list(orphans)
    for name, entries in sections:
        lines.append(("GROUP:" if name in GROUPS else "LUMP:") + name)
        lines += entries
    return _render(lines, draw), {"orphans": orphans, "sections": sections}


def _uniq(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _model(spec: dict[str, object]) -> dict[str, object]:
    orphans: list[str] = spec["orphans"]  # type: ignore[assignment]
    sections: list[tuple[str, list[str]]] = spec["sections"]  # type: ignore[assignment]
    order = _uniq([name for name, _ in sections])
    entries: dict[str, list[str]] = {name: [] for name in order}
    every = list(orphans)
    for name, items in sections:
        entries[name] += items
        if name in GROUPS:
            every += items
    hosts = _uniq(every)

    def members(name: str) -> tuple[str, ...]:
        if name == ORPHANS:
            return _uniq(orphans)
        if name == ALL:
            return hosts
        if name in GROUPS:
            return _uniq(entries[name])
        return _uniq([h for ref in entries[name] for h in members(ref)])

    groups = {name: members(name) for name in order}
    of = {
        h: ((ORPHANS,) if h in orphans else ()) + tuple(n for n in order if h in groups[n])
        for h in hosts
    }
    return {"groups": groups, "order": order, "hosts": hosts, "orphans": _uniq(orphans), "of": of}


@settings(max_examples=120, deadline=None)
@given(cluster_files())
def test_generated_file_parses_like_the_model(case: tuple[str, dict[str, object]]) -> None:
    text, spec = case
    want = _model(spec)
    c = parse(text, "gen")
    assert c.groups == want["order"]
    assert c.hosts == want["hosts"]
    assert c.group(ORPHANS) == want["orphans"]
    groups: dict[str, tuple[str, ...]] = want["groups"]  # type: ignore[assignment]
    for name, hosts in groups.items():
        assert c.group(name) == hosts, name
    of: dict[str, tuple[str, ...]] = want["of"]  # type: ignore[assignment]
    for host, names in of.items():
        assert c.groups_of(host) == names, host


_TOKENS = st.sampled_from(
    ["GROUP:", "LUMP:", "GROUP:g", "LUMP:l", "g", "l", "h", "#", " ", "\t", "\n", "\r", ":",
     "__all__", "__orphans__", "\x00", "é", "\u2028", "\x85", "\ud800", "LUMP:g", "GROUP:l"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), st.lists(_TOKENS, max_size=60).map("".join)))
def test_garbage_raises_only_cluster_file_error(data: bytes | str) -> None:
    try:
        c = parse(data, "garbage")
    except ClusterFileError as exc:
        error: ClusterFileError | None = exc
    else:
        error = None
    if error is not None:
        assert error.path == "garbage"
        assert error.line >= 1
        return
    # Whatever parsed is self-consistent.
    for name in c.groups:
        for host in c.group(name):
            assert name in c.groups_of(host)
    assert set(c.hosts) >= {h for n in c.groups for h in c.group(n)}


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_garbage_files_through_load(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    try:
        load(path)
    except ClusterFileError as exc:
        assert_names(exc, str(path))


def assert_names(exc: ClusterFileError, path: str) -> None:
    assert exc.path == path
    assert str(exc).startswith(path)


def test_deep_lump_chain_has_no_recursion_limit() -> None:
    n = 5000
    lines = ["GROUP:g0", "h"]
    for i in range(1, n):
        lines += [f"LUMP:l{i}", f"l{i - 1}" if i > 1 else "g0"]
    c = parse("\n".join(lines))
    assert c.group(f"l{n - 1}") == ("h",)
    assert len(c.groups_of("h")) == n
