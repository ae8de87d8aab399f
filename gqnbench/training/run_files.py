"""What a training run is on disk: its name and files, its config and request, and what to do with one that exists.

A run named ``<model>-<tag>-seed<k>`` under ``out_dir`` owns ``runs/<name>.json`` (the
``training_run`` results file), ``runs/<name>.pt`` (final weights), ``checkpoints/<name>.ckpt``
(the resume point), ``tensorboard/<name>/`` and, while a process writes it, ``runs/<name>.lock``.
:func:`existing_run` decides, before anything is built, whether a request reuses a finished
run, continues one from its checkpoint or starts over.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gqnbench.presets import Preset
from gqnbench.results import ResultsError, read_result

# A finished run is reused as it is; any other (interrupted, running, failed) is continued or retried.
FINISHED = ("completed", "diverged")


def run_name(model: str, tag: str, seed: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(tag)).strip("_") or "run"
    return f"{model}-{safe}-seed{seed}"


def run_lock_path(out_dir: str | Path, name: str) -> Path:
    """The lock file of run ``name`` under ``out_dir`` (held while a process writes the run)."""
    return Path(out_dir) / "runs" / f"{name}.lock"


@dataclass(frozen=True)
class RunPaths:
    out_dir: Path
    name: str

    @property
    def result(self) -> Path:
        return self.out_dir / "runs" / f"{self.name}.json"

    @property
    def weights(self) -> Path:
        return self.out_dir / "runs" / f"{self.name}.pt"

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "checkpoints" / f"{self.name}.ckpt"

    @property
    def tensorboard(self) -> Path:
        return self.out_dir / "tensorboard" / self.name

    @property
    def lock(self) -> Path:
        return run_lock_path(self.out_dir, self.name)


@dataclass
class TrainResult:
    """What ``train`` returns: the results file and its contents."""

    run_file: Path
    doc: dict[str, Any]
    skipped: bool = False  # True when a finished run with the same request was found and reused

    @property
    def status(self) -> str:
        return self.doc["status"]

    @property
    def final_val_nll(self) -> float:
        return float(self.doc["final"]["val_nll"])


class RunExistsError(ValueError):
    """The run already exists and this request would replace it: the caller must say ``fresh``."""


def row_label(row: Mapping[str, Any], field: str | None = None) -> str:
    """A sweep or time-to-target row in a few words: ``gqn z_channels=128 seed 0``, ``metagqn seed 2``."""
    setting = f" {(field or 'value').rsplit('.', 1)[-1]}={row['value']}" if "value" in row else ""
    return f"{row['model']}{setting} seed {row['seed']}"


def row_outcome(row: Mapping[str, Any]) -> str:
    """Why a run (a ``training_run`` document, or its row in a sweep or time to target) is not a result:
    where and why it diverged, else its status and error."""
    if row["status"] == "diverged":
        reason = f": {row['diverged_reason']}" if row.get("diverged_reason") else ""
        return f"diverged at step {row.get('diverged_step')}{reason}"
    return row["status"] + (f": {row['error']}" if row.get("error") else "")


class RunsFailed(RuntimeError):
    """Some runs of a command did not complete; raised after the results file listing them is written.

    ``failed`` rows raised an error (a full disk, another writer, a bad setting): they are not
    finished, and running the command again retries them (finished runs are reused). Diverged rows
    are finished: rerunning reproduces them. Either way the command exits 1.
    """

    def __init__(self, path: Path | None, rows: Sequence[Mapping[str, Any]], field: str | None = None) -> None:
        self.path = path
        self.rows = [dict(r) for r in rows]
        self.lines = [f"{row_label(r, field)}: {row_outcome(r)}" for r in self.rows]
        where = f" (results in {path})" if path is not None else ""
        super().__init__(f"{self.summary()}{where}: " + "; ".join(self.lines))

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows that raised an error (a rerun retries them)."""
        return [r for r in self.rows if r["status"] == "failed"]

    def summary(self) -> str:
        """``2 run(s) failed, 1 diverged``."""
        return f"{len(self.failed)} run(s) failed, {len(self.rows) - len(self.failed)} diverged"


def raise_if_not_completed(path: Path, rows: Sequence[Mapping[str, Any]], field: str | None = None) -> None:
    """:class:`RunsFailed` for the ``rows`` (of a written results file) that failed or diverged."""
    bad = [r for r in rows if r.get("status") in ("failed", "diverged")]
    if bad:
        raise RunsFailed(path, bad, field)


def run_config(preset: Preset, model: str) -> dict[str, Any]:
    return {
        "model": dataclasses.asdict(preset.model_config(model)),
        "train": dataclasses.asdict(preset.train),
        "data": dataclasses.asdict(preset.data),
    }


def json_safe(value: Any) -> Any:
    """A value as it reads back from a results file (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def _differences(doc: dict[str, Any], config: dict[str, Any], request: dict[str, Any]) -> str:
    """What differs between a recorded run and a new request, in a few words."""
    diffs = []
    old_request = doc.get("request") or {}
    for key, value in request.items():
        if old_request.get(key) != value:
            diffs.append(f"{key} {value} (recorded: {old_request.get(key)})")
    old_config = doc.get("config") or {}
    for section, values in config.items():
        old = old_config.get(section) or {}
        for key, value in (values or {}).items():
            if json_safe(old.get(key)) != json_safe(value):
                diffs.append(f"{section}.{key}={value} (recorded: {old.get(key)})")
    return ", ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "") or "a different configuration"


def existing_run(
    paths: RunPaths, config: dict[str, Any], request: dict[str, Any], resume: bool | None
) -> TrainResult | bool:
    """A finished run this request reuses (``skipped``), else whether to continue from the checkpoint.

    ``resume``: ``None`` reuses a finished run with the same request, continues an unfinished
    one and refuses (:class:`RunExistsError`) to replace a finished one; ``True`` continues
    whatever is there; ``False`` starts over. Nothing is removed here: a run that starts over
    replaces the old one's files only once it has started (:class:`~gqnbench.training.run_state.RunRecord`).
    """
    if resume is False:
        return False
    if not (paths.result.is_file() or paths.checkpoint.is_file()):
        return resume is True
    doc: dict[str, Any] = {}
    if paths.result.is_file():
        try:
            doc = read_result(paths.result, "training_run")
        except ResultsError as exc:
            if resume is None:
                raise RunExistsError(f"{exc}; pass --fresh to start this run over") from exc
    status = doc.get("status")
    if status in FINISHED and doc.get("config") == config and doc.get("request") == request:
        return TrainResult(paths.result, doc, skipped=True)
    if resume is None and status in FINISHED:
        raise RunExistsError(
            f"{paths.result} already holds a finished run ({status} at step {(doc.get('final') or {}).get('step')}); "
            f"this request differs: {_differences(doc, config, request)}. Pass --fresh to replace it, "
            "--resume to continue it with the new settings, or choose another --out or --tag"
        )
    return resume is True or paths.checkpoint.is_file()
