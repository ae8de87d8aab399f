"""Find and load the results files a report is built from, with one clear error per bad file.

Inputs are files or folders; folders are scanned recursively for ``*.json``. A file is either a
gqnbench results file (``kind`` + ``schema``) of a kind the package defines, checked against
that kind's typed schema (:mod:`gqnbench.schema`), or pytest-benchmark's JSON (``machine_info``
+ ``benchmarks``). Other JSON found while scanning a folder is listed as ignored; the same file
named explicitly, invalid JSON anywhere, an unknown ``kind`` or a field that does not match the
schema raise :class:`ReportInputError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gqnbench.results import ResultsError, load_result_with_dict
from gqnbench.schema import PACKAGE_KINDS, ResultsDoc

KNOWN_KINDS = PACKAGE_KINDS
PYTEST_BENCHMARK = "pytest_benchmark"
_D = TypeVar("_D", bound=ResultsDoc)

# Files a results folder may hold that are not results: torch.profiler traces and memory timelines
# (the profile results file names them); never parsed while scanning.
NOT_RESULTS_SUFFIXES = (".pt.trace.json", "memory_timeline.json")


class ReportInputError(ResultsError):
    """A results file the report cannot use; the message names the file and the problem."""


@dataclass(frozen=True)
class ResultFile:
    """One loaded results file: its resolved path, its kind, its JSON and its typed document.

    Sections read ``typed`` (via :meth:`as_`); ``doc`` is the JSON as written, for the
    comparison engine and for pytest-benchmark JSON, which has no typed schema here.
    """

    path: Path
    kind: str
    doc: dict[str, Any]
    typed: ResultsDoc | None = None

    def as_(self, model: type[_D]) -> _D:
        """The typed document as ``model`` (e.g. ``run.as_(TrainingRunDoc).eval_curve``)."""
        if not isinstance(self.typed, model):
            raise TypeError(f"{self.path}: a {self.kind!r} file, not a {model.__name__}")
        return self.typed

    @property
    def environment(self) -> dict[str, Any]:
        """Where the file was measured (open-ended, as ``capture_environment`` wrote it); pytest-benchmark
        JSON has no such envelope (its machine_info is read by the environment section)."""
        return self.typed.environment if self.typed is not None else {}


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
    kind = doc["kind"]
    if kind not in KNOWN_KINDS:
        raise _fail(
            path, f"unknown results kind {kind!r}; the report reads {', '.join(KNOWN_KINDS)} and pytest-benchmark"
        )
    try:
        doc, typed = load_result_with_dict(path)
    except ResultsError as exc:
        raise ReportInputError(str(exc)) from exc
    return ResultFile(path, kind, doc, typed)


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
