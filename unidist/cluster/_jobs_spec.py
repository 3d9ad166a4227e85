"""Job specifications and the builders of job lists (part of :mod:`unidist.cluster.jobs`).

A :class:`JobSpec` says what to run; :func:`expand` turns a list of specs into the named
jobs of a batch (one per ``repeat``). The builders read job lists from text (one shell
command per line, or JSON lines), from a file, or from a product of parameters.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from unidist._names import check_name
from unidist.errors import InvalidName

__all__ = ["Job", "JobSpec", "expand", "load_jobs", "parse_jobs", "product_jobs"]

_JSON_KEYS: Final = frozenset({"argv", "name", "files", "repeat"})
_LOOKS_JSON: Final = re.compile(r'[{\[]\s*(["\]}]|$)')


@dataclass(frozen=True)
class JobSpec:
    """One job of a batch: what to run on a host.

    Args:
        argv: the command: a list of arguments (quoted for the remote shell, so spaces and
            shell characters reach the program unchanged) or one string, which the remote
            shell runs as a command line (pipes, ``&&``, globbing...).
        files: local files copied to the job's remote directory before it runs; the command
            then runs in that directory (``unidist-jobs/BATCH/JOB`` under the remote home).
        name: the job's name in the batch (letters, digits and ``._-:@``; default: its
            1-based position, ``0001``...). It names the job's result directory.
        repeat: run this job ``repeat`` times, as jobs ``NAME.1`` ... ``NAME.<repeat>``.

    Raises:
        ValueError: an empty command, an empty argument list, ``repeat`` < 1, a file that is
            not a non-empty string.
        InvalidName: ``name`` breaks the naming rule.
    """

    argv: tuple[str, ...] | str
    files: tuple[str, ...] = ()
    name: str | None = None
    repeat: int = 1

    def __init__(
        self,
        argv: Sequence[str] | str,
        files: Iterable[str | os.PathLike[str]] = (),
        name: str | None = None,
        repeat: int = 1,
    ) -> None:
        if isinstance(argv, str):
            if not argv.strip():
                raise ValueError("a job's command must not be empty")
            command: tuple[str, ...] | str = argv
        else:
            command = tuple(argv)
            if not command:
                raise ValueError("a job's argv must not be empty")
            for arg in command:
                if not isinstance(arg, str):
                    raise TypeError(f"job argv items must be str, not {type(arg).__name__}")
        paths: list[str] = []
        for f in files if not isinstance(files, str) else (files,):
            path = os.fspath(f)
            if not isinstance(path, str) or not path:
                raise ValueError(f"job files must be non-empty paths, got {f!r}")
            paths.append(path)
        if name is not None:
            check_name(name, "job name")
        if isinstance(repeat, bool) or not isinstance(repeat, int):
            raise TypeError(f"repeat must be an int, not {type(repeat).__name__}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        object.__setattr__(self, "argv", command)
        object.__setattr__(self, "files", tuple(paths))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "repeat", repeat)

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object (the JSON-lines form :func:`parse_jobs` reads)."""
        out: dict[str, Any] = {"argv": self.argv if isinstance(self.argv, str) else list(self.argv)}
        if self.files:
            out["files"] = list(self.files)
        if self.name is not None:
            out["name"] = self.name
        if self.repeat != 1:
            out["repeat"] = self.repeat
        return out


@dataclass(frozen=True)
class Job:
    """One named job of a batch (a :class:`JobSpec` expanded by :func:`expand`)."""

    name: str
    argv: tuple[str, ...] | str
    files: tuple[str, ...] = field(default=())
    index: int = 0

    def command_json(self) -> Any:
        """The command as stored in the batch: a list, or the command-line string."""
        return self.argv if isinstance(self.argv, str) else list(self.argv)


def expand(specs: Iterable[JobSpec | Sequence[str] | str]) -> list[Job]:
    """The named jobs of ``specs`` in order: unnamed specs get their 1-based position
    (``0001``...), and a spec with ``repeat=N`` becomes ``NAME.1`` ... ``NAME.N``.

    A plain argv list or command string counts as ``JobSpec(it)``.

    Raises:
        ValueError: two jobs get the same name (the message names it).
    """
    items = [s if isinstance(s, JobSpec) else JobSpec(s) for s in specs]
    width = max(4, len(str(len(items))))
    jobs: list[Job] = []
    seen: set[str] = set()
    for position, spec in enumerate(items, 1):
        base = spec.name if spec.name is not None else f"{position:0{width}d}"
        names = [base] if spec.repeat == 1 else [f"{base}.{k}" for k in range(1, spec.repeat + 1)]
        for name in names:
            check_name(name, "job name")
            if name in seen:
                raise ValueError(f"two jobs are named {name!r}; job names must be unique")
            seen.add(name)
            jobs.append(Job(name, spec.argv, spec.files, len(jobs)))
    return jobs


def _from_json(obj: object, where: str) -> JobSpec:
    if isinstance(obj, str):
        return JobSpec(obj)
    if isinstance(obj, list):
        return JobSpec(obj)
    if not isinstance(obj, Mapping):
        raise TypeError(f"{where}: a JSON job must be an object, a list or a string")
    unknown = sorted(set(obj) - _JSON_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: argv, name, files, repeat)")
    if "argv" not in obj:
        raise ValueError(f'{where}: a JSON job needs "argv"')
    argv = obj["argv"]
    if not isinstance(argv, (str, list)):
        raise TypeError(f'{where}: "argv" must be a list of strings or a string')
    files = obj.get("files", [])
    if not isinstance(files, list):
        raise TypeError(f'{where}: "files" must be a list of paths')
    return JobSpec(argv, files, obj.get("name"), obj.get("repeat", 1))


def parse_jobs(lines: Iterable[str] | str, *, source: str = "<jobs>") -> list[JobSpec]:
    """Job specs from text: one job per line.

    A line is a JSON job when it is a JSON object or array: ``{"argv": [...], "name": ...,
    "files": [...], "repeat": N}`` (``argv`` may also be a command-line string) or a bare argv
    list. A line starting with ``{"`` or ``["`` that is not valid JSON is an error. Any other
    line is a shell command line, run by the remote shell as written (so ``[ -f x ] && ...``
    and ``{ a; b; } > out`` stay shell). Blank lines and lines starting with ``#`` are
    skipped.

    Raises:
        ValueError: a bad JSON line or job, naming ``source`` and the line number.
    """
    text_lines = lines.splitlines() if isinstance(lines, str) else lines
    specs: list[JobSpec] = []
    for number, raw in enumerate(text_lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        try:
            obj: Any = None
            if line[0] in "{[":
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    if _LOOKS_JSON.match(line):
                        raise ValueError(f"{where}: not valid JSON ({exc})") from None
            if isinstance(obj, (dict, list)):
                specs.append(_from_json(obj, where))
            else:
                specs.append(JobSpec(line))
        except (ValueError, TypeError, InvalidName) as exc:
            message = str(exc)
            raise ValueError(
                message if message.startswith(where) else f"{where}: {message}"
            ) from exc
    return specs


def load_jobs(path: str | os.PathLike[str]) -> list[JobSpec]:
    """Job specs from a file in the format of :func:`parse_jobs` (UTF-8).

    Raises:
        OSError: the file cannot be read.
        ValueError: a bad line, naming the file and line number.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_jobs(text, source=str(p))


def product_jobs(
    argv: Sequence[str] | str,
    *,
    name: str | None = None,
    files: Iterable[str] = (),
    repeat: int = 1,
    **params: Iterable[object],
) -> list[JobSpec]:
    """One job per combination of ``params`` (like :func:`itertools.product`), with
    ``{param}`` placeholders in ``argv``, ``name`` and ``files`` filled in by
    :meth:`str.format`.

    Example::

        product_jobs(["simulate", "--seed={seed}", "--size={size}"],
                     name="sim-{size}-{seed}", seed=range(10), size=["s", "l"])

    Raises:
        ValueError: no parameters, or a placeholder with no parameter of that name.
    """
    if not params:
        raise ValueError("product_jobs needs at least one parameter")
    keys = list(params)
    values = [list(v) for v in params.values()]
    file_templates = list(files)
    specs: list[JobSpec] = []
    for combo in itertools.product(*values):
        env = dict(zip(keys, combo, strict=True))
        try:
            command: Sequence[str] | str = (
                argv.format(**env) if isinstance(argv, str) else [a.format(**env) for a in argv]
            )
            job_name = None if name is None else name.format(**env)
            job_files = [f.format(**env) for f in file_templates]
        except KeyError as exc:
            raise ValueError(f"placeholder {{{exc.args[0]}}} has no parameter") from None
        specs.append(JobSpec(command, job_files, job_name, repeat))
    return specs
