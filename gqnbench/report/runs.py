"""Training runs as tables: run descriptions, eval curves in long form, and which runs are "main".

The main runs are the default-configuration runs the study's Table 1 and Figure 6 compare:
those a time_to_target file points to; without one, the training runs no sweep points to;
failing that, every training run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd

from gqnbench.judging import image_values, nll_constant
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.results import as_float
from gqnbench.schema.training import FinalEval, Metrics, SweepDoc, TimeToTargetDoc, TrainingRunDoc


def training_doc(run: ResultFile) -> TrainingRunDoc:
    """The typed training_run document of ``run``."""
    return run.as_(TrainingRunDoc)


def image_size(run: ResultFile) -> int | None:
    """The run's image size from its model config, else its data config; None when neither records one."""
    config = training_doc(run).config
    size = config.model.get("image_size") or (config.data or {}).get("image_size")
    return int(size) if size else None


def run_info(run: ResultFile) -> dict[str, Any]:
    """One row describing a training run: identity, scale and outcome (None/NaN where not recorded)."""
    doc = training_doc(run)
    model, train, data = doc.config.model, doc.config.train or {}, doc.config.data or {}
    size = image_size(run)
    return {
        "model": doc.model,
        "preset": doc.preset,
        "tag": doc.tag,
        "seed": doc.seed,
        "z_channels": model.get("z_channels"),
        "image_size": size,
        "num_layers": model.get("num_layers"),
        "hidden_channels": model.get("hidden_channels"),
        "batch_size": train.get("batch_size"),
        "val_scenes": data.get("val_scenes"),
        "val_context": data.get("val_context"),
        "status": doc.status,
        "diverged_step": doc.diverged_step,
        "final_step": doc.final.step,
        "final_val_nll": as_float(doc.final.val_nll),
        "final_val_mse": as_float(doc.final.val_mse),
        "nll_constant": _nll_constant(doc.final, size),
        "device": doc.device or run.environment.get("device"),
        "dtype": doc.dtype or run.environment.get("dtype"),
        "file": run.path,
    }


def _nll_constant(final: FinalEval, size: int | None) -> float:
    # Older runs did not record the constant: recompute it from the image size when that is known.
    if final.nll_constant is not None:
        return float(final.nll_constant)
    return nll_constant(image_values(size)) if size else math.nan


ReferenceName = Literal["mean_image", "nearest_context"]


def reference(run: ResultFile, name: ReferenceName = "mean_image") -> dict[str, float]:
    """A reference predictor's validation numbers recorded in a run; NaN for a number (or a
    reference, ``nearest_context`` is optional) the run did not record."""
    ref: Metrics | None = getattr(training_doc(run).baselines, name)
    if ref is None:
        return {k: math.nan for k in ("val_nll", "val_mse", "val_fg_mse")}
    return {"val_nll": as_float(ref.val_nll), "val_mse": as_float(ref.val_mse), "val_fg_mse": as_float(ref.val_fg_mse)}


def _ratio(value: float | None, base: float) -> float:
    value = as_float(value)
    return value / base if base and math.isfinite(base) else math.nan


def curve_frame(runs: Iterable[ResultFile]) -> pd.DataFrame:
    """Every eval point of ``runs`` in long form: model, label, seed, step, wall_s, val_nll, val_mse,
    val_fg_mse and the MSE / foreground MSE relative to the run's mean-frame reference."""
    rows = []
    for run in runs:
        info = run_info(run)
        base = reference(run)
        for point in training_doc(run).eval_curve:
            rows.append(
                {
                    "model": info["model"],
                    "label": model_label(info["model"]),
                    "seed": info["seed"],
                    "z_channels": info["z_channels"],
                    "preset": info["preset"],
                    "step": point.step,
                    "wall_s": as_float(point.wall_s),
                    "val_nll": as_float(point.val_nll),
                    "val_mse": as_float(point.val_mse),
                    "val_fg_mse": as_float(point.val_fg_mse),
                    "mse_ratio": _ratio(point.val_mse, base["val_mse"]),
                    "fg_ratio": _ratio(point.val_fg_mse, base["val_fg_mse"]),
                    "file": run.path,
                }
            )
    columns = [
        "model", "label", "seed", "z_channels", "preset", "step", "wall_s",
        "val_nll", "val_mse", "val_fg_mse", "mse_ratio", "fg_ratio", "file",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


# The kinds whose ``runs`` entries point to training runs (``run_file``).
_RUN_LISTS: dict[str, type[TimeToTargetDoc] | type[SweepDoc]] = {"time_to_target": TimeToTargetDoc, "sweep": SweepDoc}


def referenced_runs(results: ResultSet, kind: Literal["time_to_target", "sweep"]) -> tuple[list[ResultFile], list[str]]:
    """Training runs that files of ``kind`` point to (``run_file``), and references that were not loaded."""
    found: list[ResultFile] = []
    missing: list[str] = []
    for origin in results.of_kind(kind):
        for entry in origin.as_(_RUN_LISTS[kind]).runs:
            run = results.resolve_reference(entry.run_file, origin)
            if run is None:
                if entry.run_file:
                    missing.append(entry.run_file)
            elif run not in found:
                found.append(run)
    return found, missing


def is_result(run: ResultFile) -> bool:
    """Whether a training run is a result: it completed (not diverged, failed, interrupted or running)."""
    return training_doc(run).status == "completed"


def failed_runs(results: ResultSet) -> list[ResultFile]:
    """Training runs that are not results (diverged, failed, interrupted, still running): listed, never compared."""
    return [r for r in results.of_kind("training_run") if not is_result(r)]


def main_runs(results: ResultSet) -> tuple[list[ResultFile], str]:
    """The runs behind Table 1 and Figure 6, and a sentence saying how they were chosen.

    Only completed runs: a diverged, failed, interrupted or still-running run is not a result (the
    report lists those in "Failed and unfinished runs")."""
    runs, how = _main_runs(results)
    kept = [r for r in runs if is_result(r)]
    if len(kept) < len(runs):
        how += f"; {len(runs) - len(kept)} diverged or unfinished run(s) left out (see Failed and unfinished runs)"
    return kept, how


def _main_runs(results: ResultSet) -> tuple[list[ResultFile], str]:
    runs = results.of_kind("training_run")
    from_ttt, _ = referenced_runs(results, "time_to_target")
    if from_ttt:
        return from_ttt, "the training runs of the time-to-target measurement (default configuration, one per seed)"
    in_sweeps, _ = referenced_runs(results, "sweep")
    rest = [r for r in runs if r not in in_sweeps]
    if rest:
        return rest, "all training runs that are not part of a sweep"
    return runs, "all training runs"


def median_inf(values: Iterable[Any]) -> float:
    """Median that keeps infinity (a not-reached run) and drops missing values (NaN/None)."""
    arr = np.array([as_float(v) for v in values], dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(np.median(arr)) if arr.size else math.nan


def roughness(nll: Iterable[float]) -> float:
    """Sum of the increases of a validation curve (nats): 0 for a curve that only goes down."""
    arr = np.asarray(list(nll), dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(np.clip(np.diff(arr), 0, None).sum()) if arr.size > 1 else 0.0
