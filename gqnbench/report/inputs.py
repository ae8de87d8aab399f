"""Find and load the results files a report is built from, with one clear error per bad file.

Inputs are files or folders; folders are scanned recursively for ``*.json``. A file is either a
gqnbench results file (``kind`` + ``schema``, read with :func:`gqnbench.results.read_result`)
of a kind the report knows, or pytest-benchmark's JSON (``machine_info`` + ``benchmarks``).
Other JSON found while scanning a folder is listed as ignored; the same file named explicitly,
invalid JSON anywhere, an unknown ``kind`` or a missing required field raise
:class:`ReportInputError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gqnbench.results import ResultsError, read_result

KNOWN_KINDS = ("training_run", "time_to_target", "sweep", "samples", "costs", "main_job", "profile", "learning_study")
PYTEST_BENCHMARK = "pytest_benchmark"

# Required top-level fields (and their JSON type) per kind; nested lists are checked below.
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "training_run": {"model": str, "eval_curve": list},
    "time_to_target": {"runs": list},
    "sweep": {"field": str, "runs": list},
    "samples": {"scenes": list},
    "costs": {},
    "main_job": {"stages": dict},
    "learning_study": {"entries": list},
    "profile": {"cases": list},
}
# Required fields of each item of a list field.
_REQUIRED_ITEMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "training_run": ("eval_curve", ("step", "val_nll")),
    "time_to_target": ("runs", ("model", "seed", "reached")),
    "sweep": ("runs", ("model", "value")),
    "samples": ("scenes", ("context", "query", "predictions")),
    "learning_study": ("entries", ("name", "model")),
    "profile": ("cases", ("model", "dtype", "phases")),
}
# Files a results folder may hold that are not results: torch.profiler traces and memory timelines
# (the profile results file names them); never parsed while scanning.
NOT_RESULTS_SUFFIXES = (".pt.trace.json", "memory_timeline.json")


class ReportInputError(ResultsError):
    """A results file the report cannot use; the message names the file and the problem."""


@dataclass(frozen=True)
class ResultFile:
    """One loaded results file: its resolved path, its kind and its JSON document."""

    path: Path
    kind: str
    doc: dict[str, Any]

    @property
    def environment(self) -> dict[str, Any]:
        env = self.doc.get("environment")
        return env if isinstance(env, dict) else {}


@dataclass
class ResultSet:
    """Every results file of one report input (or of its baseline), in a stable order."""

    files: list[ResultFile] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[ResultFile]:
        return [f for f in self.files if f.kind == kind]

    def by_path(self, path: Path) -> ResultFile | None:
        path = path.resolve()
        for f in self.files:
            if f.path == path:
                return f
        return None

    def resolve_reference(self, ref: str | None, origin: ResultFile) -> ResultFile | None:
        """The loaded file a ``run_file`` field points to, or None when it was not loaded.

        Writers may store references relative to their own folder, to a parent output folder
        or as absolute paths, so try each, then fall back to a unique file-name match.
        """
        if not ref:
            return None
        ref_path = Path(ref)
        candidates = [ref_path] if ref_path.is_absolute() else []
        if not ref_path.is_absolute():
            candidates += [parent / ref_path for parent in list(origin.path.parents)[:4]]
            candidates.append(Path.cwd() / ref_path)
        for candidate in candidates:
            found = self.by_path(candidate)
            if found is not None:
                return found
        same_name = [f for f in self.files if f.path.name == ref_path.name and f.kind == "training_run"]
        return same_name[0] if len(same_name) == 1 else None

    def __bool__(self) -> bool:
        return bool(self.files)


def _fail(path: Path, message: str) -> ReportInputError:
    return ReportInputError(f"{path}: {message}")


def _check_fields(path: Path, kind: str, doc: dict[str, Any]) -> None:
    for name, typ in _REQUIRED[kind].items():
        if name not in doc:
            raise _fail(path, f"{kind} results file has no field {name!r}")
        if not isinstance(doc[name], typ):
            raise _fail(path, f"{kind} field {name!r} should be {typ.__name__}, found {type(doc[name]).__name__}")
    if kind in _REQUIRED_ITEMS:
        list_name, keys = _REQUIRED_ITEMS[kind]
        for i, item in enumerate(doc[list_name]):
            if not isinstance(item, dict):
                raise _fail(path, f"{kind} field {list_name!r}[{i}] should be an object, found {type(item).__name__}")
            missing = [k for k in keys if k not in item]
            if missing:
                raise _fail(path, f"{kind} field {list_name!r}[{i}] has no {', '.join(map(repr, missing))}")


def _check_pytest_benchmark(path: Path, doc: dict[str, Any]) -> None:
    if not isinstance(doc["benchmarks"], list):
        raise _fail(path, "pytest-benchmark JSON: 'benchmarks' should be a list")
    for i, bench in enumerate(doc["benchmarks"]):
        stats = bench.get("stats") if isinstance(bench, dict) else None
        if not isinstance(stats, dict) or "median" not in stats or "fullname" not in bench:
            raise _fail(path, f"pytest-benchmark JSON: benchmarks[{i}] has no 'fullname' or 'stats.median'")


def load_file(path: str | os.PathLike, explicit: bool = True) -> ResultFile | None:
    """Load one file; ``None`` for unrelated JSON met while scanning (``explicit=False``)."""
    path = Path(path).resolve()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise _fail(path, "results file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from exc
    if isinstance(doc, dict) and "machine_info" in doc and "benchmarks" in doc:
        _check_pytest_benchmark(path, doc)
        return ResultFile(path, PYTEST_BENCHMARK, doc)
    if not isinstance(doc, dict) or "kind" not in doc or "schema" not in doc:
        if explicit:
            raise _fail(path, "neither a gqnbench results file (no 'kind'/'schema') nor pytest-benchmark JSON")
        return None
    try:
        doc = read_result(path)
    except ReportInputError:
        raise
    except ResultsError as exc:
        raise ReportInputError(str(exc)) from exc
    kind = doc["kind"]
    if kind not in KNOWN_KINDS:
        raise _fail(
            path, f"unknown results kind {kind!r}; the report reads {', '.join(KNOWN_KINDS)} and pytest-benchmark"
        )
    _check_fields(path, kind, doc)
    return ResultFile(path, kind, doc)


def _scan(folder: Path, exclude: list[Path]) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root).resolve()
        # Skip the report's own output folder and hidden folders (.git, .benchmarks caches stay visible).
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") or d == ".benchmarks" if (root_path / d).resolve() not in exclude
        )
        found += [
            root_path / name
            for name in sorted(files)
            if name.endswith(".json") and not name.endswith(NOT_RESULTS_SUFFIXES)
        ]
    return found


def load_results(paths: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()) -> ResultSet:
    """Load every results file under ``paths`` (files or folders), skipping the ``exclude`` folders."""
    excluded = [Path(p).resolve() for p in exclude]
    results = ResultSet()
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            targets = [(p, False) for p in _scan(path, excluded)]
        elif path.exists():
            targets = [(path.resolve(), True)]
        else:
            raise ReportInputError(f"{path}: no such results file or folder")
        for target, explicit in targets:
            if target in seen:
                continue
            seen.add(target)
            loaded = load_file(target, explicit=explicit)
            if loaded is None:
                results.ignored.append(target)
            else:
                results.files.append(loaded)
    return results
