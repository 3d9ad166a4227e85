"""X3: Redis security. Secrets never leak, TLS verifies by default, Lua is static, and a
least-privilege ACL user is enough.

* A wrong password gives ``BackendUnavailable`` saying authentication failed; neither the
  message, the repr, the whole exception chain, the logs (stdlib and structlog) nor the
  ``unidist`` command's output contain the password.
* ``rediss://`` against a real TLS redis-server whose certificate comes from a throwaway CA
  made here with ``openssl``: refused by default (the CA is not trusted), refused with the
  wrong CA and on a host-name mismatch, accepted with ``?ssl_ca_certs=``.
* Lua: every script is a constant shipped with the package; no Python code builds Lua or
  sends EVAL with anything else; no script can evaluate code (``loadstring``...).
* ACL: the user of :mod:`unidist.backends.redis.acl` covers every command the backend and
  its scripts use, and is confined to its prefix (the whole conformance suite already runs
  as such a user, see ``tests/conftest.py``).
"""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import redis

import unidist
from backends.redis.server import RedisServer, free_port
from tests.conftest import redis_acl_url
from unidist.backends.redis import RedisBackend, acl
from unidist.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "unidist"
SCRIPTS = PACKAGE / "backends" / "redis" / "scripts"
SECRET = "S3cr3t-" + uuid.uuid4().hex[:8]


# ---------------------------------------------------------------------- secrets
@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    with RedisServer(password="the-right-one-" + uuid.uuid4().hex[:6]) as server:
        yield server


def _chain(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def test_x3_wrong_password_never_shows_the_password(
    locked_server: RedisServer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every primitive on a wrong password raises BackendUnavailable ("authentication
    failed", naming host:port) whose text, repr, traceback and logs omit the password."""
    caplog.set_level(logging.DEBUG)
    url = f"redis://app:{SECRET}@127.0.0.1:{locked_server.port}/0?prefix=x3:"
    be = unidist.connect(url)
    calls = [
        lambda: be.counter("c").incr(),
        lambda: be.state("s").__setitem__("k", 1),
        lambda: be.queue("q").put({"a": 1}),
        lambda: be.lock("l").acquire(timeout=0.5),
        be.ping,
    ]
    texts = [repr(be), str(be.url)]
    try:
        for call in calls:
            with pytest.raises(BackendUnavailable, match="authentication failed") as info:
                call()
            assert f"127.0.0.1:{locked_server.port}" in str(info.value)
            texts += [_chain(info.value), info.value.url]
    finally:
        unidist.backends.reset()
    out, err = capsys.readouterr()
    texts += [caplog.text, out, err]
    for text in texts:
        assert SECRET not in text
        assert locked_server.password is not None
        assert locked_server.password not in text


def test_x3_cli_error_omits_the_password(locked_server: RedisServer) -> None:
    """``unidist --url redis://user:PASSWORD@... counter incr`` fails without printing it."""
    url = f"redis://app:{SECRET}@127.0.0.1:{locked_server.port}/0"
    proc = subprocess.run(
        [sys.executable, "-m", "unidist", "--url", url, "counter", "incr", "jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "authentication failed" in proc.stderr + proc.stdout
    assert SECRET not in proc.stderr + proc.stdout


# ---------------------------------------------------------------------- TLS
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=unidist test {name}", cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    """A redis-server with a TLS port whose certificate (for 127.0.0.1 only) is signed by a
    throwaway CA ``ca.pem``; ``rogue.pem`` is another CA."""
    d = tmp_path_factory.mktemp("tls")
    _ca(d, "ca")
    _ca(d, "rogue")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf", cwd=d,
    )  # fmt: skip
    tls_port = free_port()
    args = ["--tls-port", str(tls_port), "--tls-cert-file", str(d / "server.pem")]
    args += ["--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.pem")]
    args += ["--tls-auth-clients", "no"]
    with RedisServer(password=SECRET, extra_args=args) as server:
        server.tls_port = tls_port  # type: ignore[attr-defined]
        yield server, d


def test_x3_rediss_verifies_certificates_by_default(
    tls_server: tuple[RedisServer, Path],
) -> None:
    """rediss:// refuses an untrusted CA, the wrong CA and a host-name mismatch; it works
    with the right CA, and the password crosses only the encrypted connection."""
    server, d = tls_server
    port = server.tls_port  # type: ignore[attr-defined]
    base = f"rediss://:{SECRET}@"
    refused = [
        f"{base}127.0.0.1:{port}/0",  # system trust store: throwaway CA unknown
        f"{base}127.0.0.1:{port}/0?ssl_ca_certs={d / 'rogue.pem'}",  # another CA
        f"{base}localhost:{port}/0?ssl_ca_certs={d / 'ca.pem'}",  # cert is for 127.0.0.1
    ]
    try:
        for url in refused:
            with pytest.raises(BackendUnavailable) as info:
                unidist.connect(url).counter("c").incr()
            text = _chain(info.value)
            assert re.search(r"certificate|CERTIFICATE|hostname|mismatch", text), text
            assert SECRET not in text
        good = unidist.connect(f"{base}127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.pem'}")
        assert good.counter("c").incr() == 1
        # Turning verification off is possible, but only by saying so.
        loose = unidist.connect(f"{base}localhost:{port}/0?ssl_cert_reqs=none")
        assert loose.counter("c").incr() == 2
    finally:
        unidist.backends.reset()


# ---------------------------------------------------------------------- Lua is static
def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_x3_lua_scripts_are_constant_strings() -> None:
    """EVAL/EVALSHA/SCRIPT/FCALL are sent only in ``Client.script`` with a package script's
    ``source``/``sha``; ``register_script`` only gets module-level string constants;
    ``Script`` objects are only made by ``Script.load`` from package files; no Lua script
    can evaluate code."""
    raw_sends: list[str] = []
    for path in _python_files():
        source = path.read_text(encoding="utf-8")
        sends = r"[\"'](?:EVAL|EVALSHA|EVAL_RO|EVALSHA_RO|SCRIPT|FCALL|FUNCTION)[\"']"
        if not re.search(sends, source, re.I) and not re.search(
            r"register_script|Script\(", source
        ):
            continue
        tree = ast.parse(source)
        constants: set[str] = set()
        for stmt in tree.body:  # module-level NAME = "..." / NAME: Final = "..."
            targets = stmt.targets if isinstance(stmt, ast.Assign) else []
            if isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            value = getattr(stmt, "value", None)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                constants |= {t.id for t in targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call | ast.Tuple):
                continue
            items = node.args if isinstance(node, ast.Call) else node.elts
            first = items[0] if items else None
            if isinstance(first, ast.Constant) and str(first.value).upper() in {
                "EVAL",
                "EVALSHA",
                "EVAL_RO",
                "EVALSHA_RO",
                "SCRIPT",
                "FCALL",
                "FUNCTION",
            }:
                second = items[1] if len(items) > 1 else None
                ok = isinstance(second, ast.Attribute) and second.attr in {"source", "sha"}
                ok = ok and isinstance(second.value, ast.Name) and second.value.id == "script"
                if not (ok and path.name == "_client.py"):
                    raw_sends.append(f"{path}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register_script"
            ):
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Name) and arg.id in constants):
                    raw_sends.append(f"{path}:{node.lineno} register_script")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "Script" and path.name != "_client.py":
                    raw_sends.append(f"{path}:{node.lineno} Script(...)")
    assert raw_sends == []
    for lua in sorted(SCRIPTS.glob("*.lua")):
        text = lua.read_text(encoding="utf-8")
        for banned in ("loadstring", "load(", "dofile", "require", "setfenv"):
            assert banned not in text, f"{lua.name} uses {banned}"


# ---------------------------------------------------------------------- ACL
def _commands_used() -> set[str]:
    found: set[str] = set()
    for lua in SCRIPTS.glob("*.lua"):
        text = lua.read_text(encoding="utf-8")
        found |= {m.lower() for m in re.findall(r"redis\.p?call\('([A-Za-z]+)'", text)}
    backend = PACKAGE / "backends" / "redis"
    for path in backend.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            items = node.args if isinstance(node, ast.Call) else getattr(node, "elts", None)
            if isinstance(node, ast.Call | ast.Tuple) and items:
                first = items[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    if re.fullmatch(r"[A-Z]{3,}", first.value):
                        found.add(first.value.lower())
    return found


def test_x3_acl_command_list_covers_the_backend() -> None:
    """Every command the backend sends or its scripts call is in ``acl.COMMANDS`` (and the
    list names nothing else), so a least-privilege user is never short of one."""
    used = _commands_used()
    listed = {c.split("|")[0] for c in acl.COMMANDS}
    connection = {"ping", "hello", "auth", "select", "client"}
    assert used - listed == set()
    assert listed - used - connection == set()


def test_x3_acl_user_is_confined_to_its_prefix(redis_server: RedisServer) -> None:
    """The least-privilege user runs every primitive under its prefix, and the server
    refuses it everything else: other prefixes, FLUSHALL, CONFIG, KEYS."""
    url = redis_acl_url(redis_server, "app:")
    be = unidist.connect(url)
    try:
        assert be.counter("c").incr() == 1
        be.state("s")["k"] = {"v": 1}
        be.queue("q").put("m")
        assert be.queue("q").get(timeout=1) == "m"
        with be.lock("l", ttl=5):
            pass
        assert be.counters() == {"c": 1}
        other = unidist.connect(url.replace("prefix=app:", "prefix=other:"))
        with pytest.raises(BackendUnavailable, match="ACL"):
            other.counter("c").incr()
        assert isinstance(be, RedisBackend)
        creds = url.split("?")[0]
        with redis.Redis.from_url(creds) as client:
            for command in (("FLUSHALL",), ("CONFIG", "GET", "dir"), ("KEYS", "*")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*command)
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.get("other:x")
        rules = resources.files("unidist.backends.redis").joinpath("acl.py").read_text()
        assert "-@all" in rules
    finally:
        unidist.backends.reset()
