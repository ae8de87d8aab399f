"""Time to a target validation NLL, MLPerf style (SPEC section 8).

For every model and seed: train until the validation NLL first reaches ``target_nll`` or
the budget (steps and/or seconds) runs out. ``wall_s`` is the wall clock from the first
training step to the evaluation that first reached the target, evaluation time included
(checkpoint writes excluded); ``steps`` is the number of updates at that evaluation, so the
resolution is ``train.eval_every``. A run that misses the target within its budget, or
diverges first, is **not reached**: ``reached`` false, ``steps`` null and ``wall_s`` inf. It
is never dropped, and it enters the median as infinity, so a model's median is infinite
when at least half of its seeds miss (the median of an even count with exactly half missing
averages a finite value with infinity). A run that raised (a full disk, another process
writing it) is **failed**, with its error: it measured nothing, so it is in no median and no
count but ``failed``, and running the command again retries it.

Writes a ``time_to_target`` results file: ``preset, target_nll, target_source, budget
{steps, seconds}, runs [{model, seed, reached, steps, wall_s, status, run_file, error}], summary
{model: {median_wall_s, median_steps, reached, total, failed}}``; the curves stay in each run's
``training_run`` file (``runs/<model>-ttt-seed<k>.json``). Then raises
:class:`~gqnbench.training.run_files.RunsFailed` when a run failed or diverged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gqnbench.config import replace_fields
from gqnbench.presets import Preset, get_preset
from gqnbench.results import as_float, write_result
from gqnbench.training.budgets import DEFAULT_TARGETS, MseRatioTarget, Target, default_target, resolve_target
from gqnbench.training.data_source import TrainingData, load_training_data
from gqnbench.training.executors import ClusterExecutor, raise_if_unfinished, unfinished_runs
from gqnbench.training.loop import train
from gqnbench.training.run_files import raise_if_not_completed
from gqnbench.training.runner import run_jobs, seed_list


def first_reach(
    eval_curve: Sequence[Mapping[str, Any]],
    target_nll: float,
    budget_steps: int | None = None,
    budget_seconds: float | None = None,
) -> tuple[bool, int | None, float]:
    """(reached, steps, wall_s) of the first evaluation at or below the target within budget."""
    for point in eval_curve:
        nll, step, wall = as_float(point["val_nll"]), int(point["step"]), as_float(point["wall_s"])
        if budget_steps is not None and step > budget_steps:
            break
        if budget_seconds is not None and wall > budget_seconds:
            break
        if math.isfinite(nll) and nll <= target_nll:
            return True, step, wall
    return False, None, math.inf


def median_with_misses(values: Sequence[float]) -> float:
    """Median where a miss is +inf (so it is infinite once at least half are missing)."""
    if not values:
        return math.inf
    return float(np.median(np.asarray(values, dtype=np.float64)))


def summarize(
    runs: Sequence[Mapping[str, Any]], models: Sequence[str], unfinished: Sequence[Mapping[str, Any]] = ()
) -> dict[str, dict[str, Any]]:
    """Per-model medians over the ``runs`` that trained; failed ones and ``unfinished`` (cluster jobs not
    done) are only counted."""
    summary = {}
    for model in models:
        mine = [r for r in runs if r["model"] == model and r.get("status") != "failed"]
        summary[model] = {
            "median_wall_s": median_with_misses([r["wall_s"] for r in mine]),
            "median_steps": median_with_misses([r["steps"] if r["reached"] else math.inf for r in mine]),
            "reached": sum(r["reached"] for r in mine),
            "total": len(mine),
            "unfinished": sum(u["model"] == model for u in unfinished),
            "failed": sum(r["model"] == model and r.get("status") == "failed" for r in runs),
        }
    return summary


def _jobs(models: Sequence[str], seeds: int | Sequence[int], **settings: Any) -> list[dict[str, Any]]:
    """One job per model x seed, models outermost; ``settings`` are the same for every job."""
    return [{"model": model, "seed": seed, **settings} for model in models for seed in seed_list(seeds)]


def _job(job: dict[str, Any]) -> dict[str, Any]:
    """One model x seed: train to the target or the end of the budget; the row for ``runs`` (never raises:
    an error is recorded as a failed row)."""
    try:
        return _trained_row(job)
    except Exception as exc:  # noqa: BLE001 - one failed run must not cost the others
        row = {"model": job["model"], "seed": job["seed"], "reached": False, "steps": None, "wall_s": None}
        return {**row, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "run_file": None}


def _trained_row(job: dict[str, Any]) -> dict[str, Any]:
    """The row of a run that trained to its end (or diverged): whether and when it reached the target."""
    result = train(
        job["preset"],
        job["model"],
        job["out_dir"],
        tag="ttt",
        seed=job["seed"],
        steps=job["budget_steps"],
        resume=job["resume"],
        data=job["data"],
        cache_root=job["cache_root"],
        target_nll=job["target_nll"] if job["stop_at_target"] else None,
        max_seconds=job["budget_seconds"],
        progress=job["progress"],
    )
    curve = result.doc["eval_curve"]
    reached, steps, wall = first_reach(curve, job["target_nll"], job["budget_steps"], job["budget_seconds"])
    return {
        "model": job["model"],
        "seed": job["seed"],
        "reached": reached,
        "steps": steps,
        "wall_s": wall,
        "status": result.doc["status"],
        "diverged_step": result.doc.get("diverged_step"),
        "diverged_reason": result.doc.get("diverged_reason"),
        "best_val_nll": min((as_float(p["val_nll"]) for p in curve), default=math.nan),
        "steps_per_s": result.doc.get("steps_per_s"),
        "run_file": str(Path(result.run_file).relative_to(job["out_dir"])),
    }


_PRESET_DEFAULT = "preset default (gqnbench.training.budgets)"
# A seconds budget alone still needs a step cap; one this large lets the clock decide (the file says null).
_NO_STEP_CAP = 10**9


def _preset_with(preset: str | Preset, overrides: Mapping[str, Any] | None) -> Preset:
    """The preset by name or object, with ``overrides`` applied (an object is looked up again by name)."""
    if isinstance(preset, str):
        return get_preset(preset, overrides)
    return get_preset(preset.name, overrides) if overrides else preset


def _target_and_source(preset_name: str, target: Target | None) -> tuple[Target, str]:
    """The target to train to and where it came from; a given target equal to the preset's counts as the default."""
    if target is None:
        return default_target(preset_name), _PRESET_DEFAULT
    return target, _PRESET_DEFAULT if target == DEFAULT_TARGETS.get(preset_name) else "given"


def _step_cap(preset: Preset, budget_steps: int | None, budget_seconds: float | None) -> int:
    """The step budget: as given, else the preset's steps, else (a seconds budget alone) no cap."""
    if budget_steps is not None:
        return budget_steps
    return preset.train.steps if budget_seconds is None else _NO_STEP_CAP


def _target_fields(spec: Target, source: str, data: TrainingData, image_size: int) -> dict[str, Any]:
    """The target as the results file records it: NLL and MSE ratio on this data, source, mean-frame reference."""
    base = data.baseline
    nll = resolve_target(spec, base.constant, base.mse, image_size)
    ratio = (
        spec.ratio if isinstance(spec, MseRatioTarget) else (nll - base.constant) / (0.5 * 3 * image_size**2) / base.mse
    )
    return {
        "target_nll": nll,
        "target_mse_ratio": ratio,
        "target_source": source + (f" ({spec.describe()})" if isinstance(spec, MseRatioTarget) else ""),
        "mean_frame": {"val_nll": base.nll, "val_mse": base.mse},
        "nll_constant": base.constant,
    }


def run_time_to_target(
    preset: str | Preset,
    models: Sequence[str],
    target_nll: Target | None = None,
    seeds: int | Sequence[int] = 3,
    *,
    processes: int = 1,
    budget_steps: int | None = None,
    budget_seconds: float | None = None,
    out_dir: str | Path,
    resume: bool = True,
    isolate: bool = True,
    threads: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    data: TrainingData | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
    file_name: str = "time_to_target.json",
    stop_at_target: bool = True,
    executor: ClusterExecutor | None = None,
) -> Path:
    """Train every model x seed to ``target_nll`` (None: the preset's default) and write the summary.

    ``target_nll``: an NLL, or a :class:`~gqnbench.training.budgets.MseRatioTarget` resolved on the
    validation episode (recorded as ``target_mse_ratio``). ``processes`` > 1 trains that many runs
    side by side, each in its own process with ``threads`` threads (each run's clock is its own).

    ``seeds``: a count (0..n-1) or explicit seeds. ``budget_steps`` defaults to the preset's
    ``train.steps`` when no budget is given; ``budget_seconds`` stops a run once its wall clock
    passes it. With ``resume`` a finished run with the same request is reused and a killed one
    continues from its checkpoint. ``isolate`` (default) trains in a fresh worker process (see
    :mod:`gqnbench.training.runner`) with ``threads`` torch threads (default: all cores):
    timings do not depend on what this process did before.
    By default runs go one at a time (``processes=1``).
    ``stop_at_target=False`` trains every run to the end of its budget (the time to target is
    still the first evaluation at the target), so all seeds give full curves to one step.
    ``executor``: one cluster job per run, concurrently (:mod:`gqnbench.training.executors`);
    the file then summarises the runs that finished, lists the others under ``unfinished_runs``
    and :class:`~gqnbench.training.executors.RunsUnfinished` is raised after writing it.
    :class:`~gqnbench.training.run_files.RunsFailed` is raised after writing it when a run failed
    or diverged.
    """
    preset = _preset_with(preset, overrides)
    spec, source = _target_and_source(preset.name, target_nll)
    budget_steps = _step_cap(preset, budget_steps, budget_seconds)
    replace_fields(preset.train, {"steps": budget_steps}, "train.")  # out of range: bad input, not failed runs
    out_dir = Path(out_dir)
    loaded = data or load_training_data(preset.data, cache_root)  # generates the data set once, here
    target = _target_fields(spec, source, loaded, preset.data.image_size)
    jobs = _jobs(
        models,
        seeds,
        preset=preset,
        out_dir=out_dir,
        target_nll=target["target_nll"],
        budget_steps=budget_steps,
        budget_seconds=budget_seconds,
        resume=resume,
        cache_root=cache_root,
        progress=progress,
        data=data,  # handed to the jobs as is (pickled into the worker when isolated)
        stop_at_target=stop_at_target,
    )
    kw = {"processes": processes, "isolate": isolate, "threads": threads, "executor": executor}
    results = run_jobs(_job, jobs, progress=progress, desc="time to target", out_dir=out_dir, **kw)
    runs = [r for r in results if not r.get("unfinished")]
    unfinished = unfinished_runs(jobs, results)
    document = {
        "preset": preset.name,
        **target,
        "eval_every": preset.train.eval_every,
        "budget": {"steps": budget_steps if budget_steps < _NO_STEP_CAP else None, "seconds": budget_seconds},
        "stop_at_target": stop_at_target,
        "runs": runs,
        "unfinished_runs": unfinished,
        "summary": summarize(runs, models, unfinished),
    }
    path = write_result(out_dir / file_name, "time_to_target", document)
    raise_if_unfinished(path, results, out_dir)
    raise_if_not_completed(path, runs)
    return path
