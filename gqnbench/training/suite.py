"""The training part of the one-command suite: time to target, the z sweep and samples, on a budget.

``run_suite_training(preset, out_dir)`` runs what :data:`gqnbench.training.budgets.SUITE_BUDGETS`
says for the preset, in this order, each resumable and skipping what is already done:

1. time to target for both models (``time_to_target.json``; runs ``runs/<model>-ttt-seed<k>``);
2. the robustness sweep over ``model.z_channels`` = 3 / 32 / 128 for both models
   (``sweep_model.z_channels.json``);
3. prediction samples from the seed-0 time-to-target weights of each model (``samples.json``).

Returns the paths of the three results files. Meant for ``gqnbench run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gqnbench.presets import MODEL_NAMES, get_preset
from gqnbench.training.budgets import SuiteBudget, suite_budget
from gqnbench.training.loop import run_name
from gqnbench.training.samples import write_samples
from gqnbench.training.sweep import run_sweep
from gqnbench.training.time_to_target import run_time_to_target


def run_suite_training(
    preset: str,
    out_dir: str | Path,
    *,
    models: Sequence[str] = MODEL_NAMES,
    budget: SuiteBudget | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Time to target, z sweep and samples at ``preset`` within its suite budget."""
    budget = budget or suite_budget(preset)
    out_dir = Path(out_dir)
    overrides = budget.overrides()
    ttt = run_time_to_target(
        preset,
        models,
        budget.target,
        budget.ttt_seeds,
        processes=budget.processes,
        budget_steps=budget.ttt_budget_steps,
        stop_at_target=budget.ttt_stop_at_target,
        out_dir=out_dir,
        threads=budget.threads,
        overrides=overrides,
        cache_root=cache_root,
        progress=progress,
    )
    sweep = run_sweep(
        preset,
        models,
        budget.sweep_field,
        list(budget.sweep_values),
        budget.sweep_seeds,
        out_dir=out_dir,
        steps=budget.sweep_steps,
        processes=budget.processes,
        reuse=(out_dir, "ttt", (0,)) if budget.sweep_reuses_main_runs else None,
        threads=budget.threads,
        overrides=overrides,
        cache_root=cache_root,
        progress=progress,
    )
    weights = {m: out_dir / "runs" / f"{run_name(m, 'ttt', 0)}.pt" for m in models}
    samples = write_samples(get_preset(preset, overrides), weights, out_dir / "samples.json", cache_root=cache_root)
    return {"time_to_target": ttt, "sweep": sweep, "samples": samples}
