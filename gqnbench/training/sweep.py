"""Robustness sweep: train every model at every value of one config field, judge what learned.

Any preset field can be swept (``model.z_channels`` for the study's 3 / 32 / 128 latent
channels, ``train.lr_start``, ``gqn.num_layers``, ...). Each setting x seed is one
``training_run`` (tag ``sweep-<field>=<value>``) with its full curve.

**Learned** is :func:`gqnbench.judging.learned`, one criterion for every model: not
diverged, and the final validation MSE and foreground MSE both at most 0.9x the mean training
frame's (the reference predictor that ignores the scene). A weaker **improved** flag (not
diverged, final val MSE at most half the step-0 model's) separates a run that is on its way
from one that failed or blew up. With ``target_nll`` a run also reports ``reached_target``
(its final validation NLL <= target). ``reuse`` names the folder and tag of runs that already
exist for a model's default setting (the main job's seed-0 main runs): such a setting is not
trained again but read from there (same config and step count, so ``train`` finds it finished).

Summary per model: ``final_nll_spread`` (max - min of the final validation NLL over the
settings that did not diverge; the median over seeds of a setting is used), ``final_nll_median``,
``fraction_learned`` and ``fraction_improved`` (over the runs that trained; diverged ones count as
neither), ``diverged`` (count), ``runs`` (runs that trained) and ``failed``. Runs can be spread over
``processes`` worker processes (spawned, torch threads split evenly between them, flush-to-zero
on); finished runs are skipped on a re-run and killed ones resume from their checkpoints.

A run that raises (a full disk, another process writing it, a setting that cannot train) is
recorded with its error as ``failed`` and the sweep goes on; a failed run is not a result, so it
is in no fraction or median. A reused run is only read: one whose request differs from the
sweep's is a failed row, never continued (it belongs to another stage).

Writes a ``sweep`` results file (``sweep_<field>.json`` by default), then raises
:class:`~gqnbench.training.run_files.RunsFailed` when a run failed or diverged.
"""

from __future__ import annotations

import math
import os
import re
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gqnbench.config import replace_fields
from gqnbench.judging import LEARNED_CRITERION, final_ratios, learned
from gqnbench.presets import get_preset
from gqnbench.results import as_float, write_result
from gqnbench.training.executors import ClusterExecutor, raise_if_unfinished, unfinished_runs
from gqnbench.training.loop import TrainResult, train
from gqnbench.training.run_files import raise_if_not_completed
from gqnbench.training.runner import prepare_data, run_jobs, seed_list

IMPROVED_MSE_FRACTION = 0.5
# (folder, tag, seeds) of existing runs that stand in for each model's default setting.
Reuse = tuple[str | Path, str, Sequence[int]]


def field_value(preset_name: str, overrides: Mapping[str, Any], field: str, model: str) -> Any:
    """The typed value a ``section.field`` override ends up as for ``model``."""
    preset = get_preset(preset_name, overrides)
    section, name = field.split(".", 1)
    if section == "model" or section in preset.models:
        return getattr(preset.model_config(model), name)
    return getattr(getattr(preset, section), name)


def improved(doc: Mapping[str, Any]) -> bool:
    """The weaker criterion: not diverged and final val MSE <= IMPROVED_MSE_FRACTION x the step-0 model's."""
    if doc.get("status") == "diverged" or not doc.get("eval_curve"):
        return False
    mse = as_float(doc["final"]["val_mse"])
    start = as_float(doc["eval_curve"][0]["val_mse"])
    return math.isfinite(mse) and mse <= IMPROVED_MSE_FRACTION * start


def _size(value: Any) -> float:
    """A swept value as a number for ordering the runs (0 for non-numbers)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _job(job: dict[str, Any]) -> dict[str, Any]:
    """One training run of the sweep; never raises (errors are recorded)."""
    try:
        return _finished_row(_train(job), job)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad setting must not end the sweep
        return _failed_row(exc)


def _train(job: Mapping[str, Any]) -> TrainResult:
    """Train (or, when it already finished, read) the job's run; a reused run lives in its own ``run_dir``.

    A reused run is another stage's: it is read when it finished with the sweep's request, continued
    when unfinished, and never continued with another request (``resume=None`` refuses).
    """
    return train(
        get_preset(job["preset"], job["overrides"]),
        job["model"],
        job.get("run_dir", job["out_dir"]),
        tag=job["tag"],
        seed=job["seed"],
        steps=job["steps"],
        resume=None if "run_dir" in job else job["resume"],
        cache_root=job["cache_root"],
        progress=job["progress"],
    )


def _finished_row(result: TrainResult, job: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep's row for a run that trained to its end (or diverged): finals, criteria, where its file is."""
    doc = result.doc
    curve = [as_float(p["val_nll"]) for p in doc["eval_curve"]]
    return {
        "status": doc["status"],
        "final_val_nll": as_float(doc["final"]["val_nll"]),
        "final_val_mse": as_float(doc["final"]["val_mse"]),
        **{f"final_{k}": v for k, v in final_ratios(doc).items() if k != "val_nll"},
        "best_val_nll": float(np.nanmin(curve)) if curve else math.nan,
        "learned": learned(doc),
        "improved": improved(doc),
        "diverged": doc["status"] == "diverged",
        "diverged_step": doc.get("diverged_step"),
        "diverged_reason": doc.get("diverged_reason"),
        "total_wall_s": doc.get("total_wall_s"),
        "steps_per_s": doc.get("steps_per_s"),
        "skipped": result.skipped,
        "run_file": os.path.relpath(result.run_file, job["out_dir"]),
        "reused_main_run": "run_dir" in job,
    }


def _failed_row(exc: Exception) -> dict[str, Any]:
    """The sweep's row for a run that raised: the error and a short traceback, counted as neither learned nor improved."""
    return {
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(limit=5),
        "final_val_nll": math.nan,
        "best_val_nll": math.nan,
        "learned": False,
        "improved": False,
        "diverged": False,
        "diverged_step": None,
        "run_file": None,
    }


def _summary(
    runs: list[dict[str, Any]],
    models: Sequence[str],
    target_nll: float | None,
    unfinished: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Per-model summary of the ``runs`` that trained; failed ones and ``unfinished`` (cluster jobs not done) are only counted."""
    out: dict[str, Any] = {}
    for model in models:
        failed = [r for r in runs if r["model"] == model and r["status"] == "failed"]
        mine = [r for r in runs if r["model"] == model and r["status"] != "failed"]
        per_value: dict[str, list[float]] = {}
        for r in mine:
            if not r["diverged"] and math.isfinite(r["final_val_nll"]):
                per_value.setdefault(repr(r["value"]), []).append(r["final_val_nll"])
        finals = [float(np.median(v)) for v in per_value.values()]
        entry = {
            "final_nll_spread": (max(finals) - min(finals)) if finals else math.nan,
            "final_nll_median": float(np.median(finals)) if finals else math.nan,
            "fraction_learned": (sum(r["learned"] for r in mine) / len(mine)) if mine else math.nan,
            "fraction_improved": (sum(r["improved"] for r in mine) / len(mine)) if mine else math.nan,
            "diverged": sum(bool(r["diverged"]) for r in mine),
            "failed": len(failed),
            "runs": len(mine),
            "unfinished": sum(u["model"] == model for u in unfinished),
        }
        if target_nll is not None:
            entry["fraction_reached_target"] = (
                (sum(bool(r.get("reached_target")) for r in mine) / len(mine)) if mine else math.nan
            )
        out[model] = entry
    return out


def reuse_location(reuse: Reuse | None, is_default: bool, seed: int) -> dict[str, Any]:
    """Where an existing run stands in for a setting: ``{"run_dir", "tag"}``, or ``{}`` to train it in the sweep.

    Only the model's default setting, for the seeds ``reuse`` lists, is read from ``reuse``'s folder and tag.
    """
    if reuse is not None and is_default and seed in reuse[2]:
        return {"run_dir": Path(reuse[0]), "tag": reuse[1]}
    return {}


def _sweep_jobs(
    preset: str,
    models: Sequence[str],
    field: str,
    values: Sequence[Any],
    seeds: Sequence[int],
    base: Mapping[str, Any],
    reuse: Reuse | None,
    settings: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One job per model x value x seed (in that nesting); ``settings`` are the same for every job."""
    jobs = []
    for model in models:
        for value in values:
            overrides = {**base, field: value}
            typed = field_value(preset, overrides, field, model)  # also validates the field name early
            is_default = typed == field_value(preset, base, field, model)
            for seed in seeds:
                jobs.append(
                    {
                        "preset": preset,
                        "overrides": overrides,
                        "model": model,
                        "value": typed,
                        "seed": seed,
                        "tag": f"sweep-{field}={typed}",
                        **settings,
                        **reuse_location(reuse, is_default, seed),
                    }
                )
    return jobs


def _run_largest_first(jobs: Sequence[dict[str, Any]], **run_options: Any) -> list[dict[str, Any]]:
    """:func:`run_jobs` over ``jobs``, largest swept value first; the results come back in the jobs' order.

    z = 128 is the slowest run: starting the large values first lets parallel workers finish together.
    """
    order = sorted(range(len(jobs)), key=lambda i: -_size(jobs[i]["value"]))
    in_order = run_jobs(_job, [jobs[i] for i in order], **run_options)
    results: list[dict[str, Any]] = [{}] * len(jobs)
    for i, result in zip(order, in_order):
        results[i] = result
    return results


def run_rows(
    jobs: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]], target_nll: float | None
) -> list[dict[str, Any]]:
    """The ``runs`` rows: model, value and seed of each finished job with its result (and ``reached_target``)."""
    rows = []
    for job, result in zip(jobs, results):
        if result.get("unfinished"):
            continue  # listed under unfinished_runs instead
        row = {"model": job["model"], "value": job["value"], "seed": job["seed"], **result}
        if target_nll is not None:
            row["reached_target"] = math.isfinite(result["final_val_nll"]) and result["final_val_nll"] <= target_nll
        rows.append(row)
    return rows


def sweep_file_name(field: str) -> str:
    """``sweep_<field>.json`` with anything a file name should not hold replaced by ``_``."""
    return "sweep_" + re.sub(r"[^A-Za-z0-9_.=+-]+", "_", field) + ".json"


def run_sweep(
    preset: str,
    models: Sequence[str],
    field: str,
    values: Sequence[Any],
    seeds: int | Sequence[int] = 1,
    *,
    out_dir: str | Path,
    steps: int | None = None,
    target_nll: float | None = None,
    processes: int = 1,
    isolate: bool = True,
    threads: int | None = None,
    resume: bool = True,
    overrides: Mapping[str, Any] | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
    file_name: str | None = None,
    executor: ClusterExecutor | None = None,
    reuse: Reuse | None = None,
) -> Path:
    """Train ``models`` x ``values`` of ``field`` x ``seeds`` and write the ``sweep`` results file.

    ``processes`` runs in parallel; ``isolate`` (default) runs them in fresh worker processes
    even when ``processes`` is 1 (see :mod:`gqnbench.training.runner`) with ``threads`` torch
    threads each (default: cores / processes). ``executor``: one cluster job per run instead
    (:mod:`gqnbench.training.executors`); the file then summarises the runs that finished, lists
    the others under ``unfinished_runs`` and :class:`~gqnbench.training.executors.RunsUnfinished`
    is raised after writing it. ``reuse=(folder, tag, seeds)``: a model's default setting, for those
    seeds, is the existing run ``<folder>/runs/<model>-<tag>-seed<k>`` (trained there if missing).
    After writing the file, :class:`~gqnbench.training.run_files.RunsFailed` is raised when a run
    failed or diverged (the file lists it; a rerun retries the failed ones).
    """
    if "." not in field:
        raise ValueError(f"sweep field {field!r} needs a section, e.g. model.z_channels or train.lr_start")
    out_dir = Path(out_dir)
    base = dict(overrides or {})
    if steps is not None:  # a step count out of range is bad input here, not a failed row per run
        replace_fields(get_preset(preset, base).train, {"steps": steps}, "train.")
    seed_ids = seed_list(seeds)
    # A per-run progress bar only when runs go one at a time: parallel bars would overwrite each other.
    per_run = {"steps": steps, "resume": resume, "out_dir": out_dir, "cache_root": cache_root}
    per_run["progress"] = progress and processes <= 1
    jobs = _sweep_jobs(preset, models, field, values, seed_ids, base, reuse, per_run)
    prepare_data(preset, jobs, cache_root)
    kw = {"processes": processes, "isolate": isolate, "threads": threads, "executor": executor}
    results = _run_largest_first(jobs, progress=progress, desc=f"sweep {field}", out_dir=out_dir, **kw)
    runs = run_rows(jobs, results, target_nll)
    unfinished = unfinished_runs(jobs, results)
    document = {
        "preset": preset,
        "field": field,
        "values": [job["value"] for job in jobs if job["model"] == models[0] and job["seed"] == seed_ids[0]],
        "seeds": seed_ids,
        "steps": steps if steps is not None else get_preset(preset, base).train.steps,
        "overrides": base,
        "target_nll": target_nll,
        "learned_criterion": LEARNED_CRITERION,
        "improved_criterion": f"not diverged and final val MSE <= {IMPROVED_MSE_FRACTION} x the step-0 val MSE",
        "runs": runs,
        "unfinished_runs": unfinished,
        "summary": _summary(runs, models, target_nll, unfinished),
    }
    path = write_result(out_dir / (file_name or sweep_file_name(field)), "sweep", document)
    raise_if_unfinished(path, results, out_dir)
    raise_if_not_completed(path, runs, field)
    return path
