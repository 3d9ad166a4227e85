"""X2: no pickle anywhere in the data path (RELIABILITY.md 3.8).

* Static: no module of the ``unidist`` package imports ``pickle``, ``_pickle``, ``cPickle``,
  ``marshal``, ``shelve``, ``dill``, ``cloudpickle``, ``joblib`` or ``copyreg``, directly,
  through ``from ... import`` or by name (``__import__``/``importlib.import_module``). This
  test fails the build when one appears.
* Dynamic: a pickle payload that would create a marker file when unpickled is planted as a
  whole journal, inside a checksum-valid journal record, as a snapshot, and as a
  ``memory://?archive=`` journal. Each is reported as ``CorruptData`` naming the file, and
  the marker never appears (nothing was executed).
"""

from __future__ import annotations

import ast
import os
import pickle  # the test crafts the hostile payload; unidist itself never imports it
from pathlib import Path

import pytest

import unidist
from tests.reliability._file_common import open_file_backend, watching_cuts
from tests.reliability._report import Result, seed
from unidist.backends.file.journal import dumps, frame
from unidist.errors import CorruptData

PACKAGE = Path(unidist.__file__).parent
FORBIDDEN = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN |= {"joblib", "copyreg"}


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def test_x2_static_no_pickle_imports() -> None:
    s = seed()
    offenders = []
    files = sorted(PACKAGE.rglob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _imports(tree):
            if name in FORBIDDEN:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}")
    result = Result("X2-static", "all", s)
    result.attempted = len(files)
    result.ok = len(files) - len({o.split(":")[0] for o in offenders})
    result.violations = len(offenders)
    result.extra = {"modules_checked": len(files), "offenders": offenders or "none"}
    result.emit()
    assert offenders == []
    assert len(files) > 30  # the scan really covered the package


def test_x2_the_static_check_can_fail() -> None:
    """The detector finds every spelling it is meant to catch."""
    src = (
        "import pickle\nimport marshal as m\nfrom shelve import open\nimport dill.settings\n"
        "x = __import__('cPickle')\nimport importlib\ny = importlib.import_module('_pickle')\n"
    )
    names = {n for _, n in _imports(ast.parse(src))} & FORBIDDEN
    assert names == {"pickle", "marshal", "shelve", "dill", "cPickle", "_pickle"}


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_x2_pickle_payloads_are_corrupt_data_and_never_run(tmp_path: Path) -> None:
    s = seed()
    marker = tmp_path / "EXECUTED"
    payload = pickle.dumps(_Boom(marker), protocol=2)
    assert marker.exists() is False
    result = Result("X2-payloads", "file", s, path=str(tmp_path))
    cases: dict[str, str] = {}

    def expect_corrupt(case: str, path: Path, run: object) -> None:
        result.attempted += 1
        with watching_cuts(), pytest.raises(CorruptData) as ei:
            run()  # type: ignore[operator]
        assert ei.value.path.startswith(str(path)), (case, ei.value.path)
        assert not marker.exists(), case
        cases[case] = "CorruptData"
        result.ok += 1

    # 1. a whole journal replaced by a pickle
    root = tmp_path / "j"
    be = open_file_backend(root)
    be.counter_add("c", 1, "r")
    be.counter_add("c", 1, "r")
    be.close()
    journal = root / "counters" / "c" / "journal.1"
    journal.write_bytes(payload + payload)
    expect_corrupt("journal", journal, lambda: open_file_backend(root).counter_get("c"))

    # 2. a pickle inside a checksum-valid record, followed by a valid record
    root = tmp_path / "r"
    be = open_file_backend(root)
    be.state_set("b", "k", "1")
    be.close()
    journal = root / "state" / "b" / "journal.1"
    good = journal.read_bytes()
    journal.write_bytes(good + frame(2, payload) + frame(3, dumps({"o": "s", "k": "x", "v": "2"})))
    expect_corrupt("record", journal, lambda: open_file_backend(root).state_items("b"))

    # 3. a snapshot holding a pickle, with no generation left to rebuild it from
    root = tmp_path / "s"
    be = open_file_backend(root, compact=3)
    for _ in range(7):
        be.counter_add("c", 1, "r")
    be.close()
    d = root / "counters" / "c"
    gens = sorted(int(p.name.split(".")[1]) for p in d.glob("snap.*"))
    snap = d / f"snap.{gens[-1]}"
    snap.write_bytes(payload)
    (d / f"journal.{gens[-1] - 1}").unlink()
    expect_corrupt("snapshot", snap, lambda: open_file_backend(root).counter_get("c"))

    # 4. a memory:// archive holding a pickle
    archive = tmp_path / "mem" / "store.journal"
    archive.parent.mkdir(mode=0o700)
    archive.write_bytes(payload)
    archive.chmod(0o600)
    expect_corrupt(
        "memory-archive",
        archive,
        lambda: unidist.connect(f"memory://x2pickle?archive={archive}").counter_get("c"),
    )
    result.extra = {"cases": cases, "executed": marker.exists()}
    result.emit()
    assert not marker.exists()
