"""The learning study: which small configuration learns scene structure within a CPU budget.

Each entry of :data:`STUDY_GRID` is a named set of preset overrides (image and core sizes, L,
batch, learning rate and its schedule, GQN's sigma schedule, output head, data set size). The
study trains every model at every entry for the same number of steps and records, at each
evaluation, the validation MSE and foreground MSE **relative to the mean training frame**
(the reference predictor that ignores the scene; below 1 means the model used the context).
The grid's entries spell out every size they depend on, so they keep their meaning when the
``cpu`` preset changes.

Writes a ``learning_study`` results file: ``preset, steps, eval_every, device, dtype,
entries [{name, description, model, overrides, status, steps, final {mse_ratio, fg_ratio,
mse_ratio_zmean, fg_ratio_zmean, val_nll}, curve [{step, mse_ratio, fg_ratio}], total_wall_s,
steps_per_s, run_file}]``. ``gqnbench learning-study`` runs it; the report has a section for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gqnbench.judging import final_ratios, learned, ratio_curve
from gqnbench.presets import get_preset
from gqnbench.results import write_result
from gqnbench.training.loop import train
from gqnbench.training.runner import prepare_data, run_jobs


@dataclass(frozen=True)
class StudyEntry:
    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ("gqn", "metagqn")


def _sizes(image: int, hidden: int, r: int, layers: int, batch: int, lr: float) -> dict[str, Any]:
    return {
        "model.image_size": image,
        "data.image_size": image,
        "model.hidden_channels": hidden,
        "model.r_channels": r,
        "model.num_layers": layers,
        "train.batch_size": batch,
        "train.lr_start": lr,
        "train.lr_end": lr,
        "train.lr_anneal_steps": 1,
        "gqn.z_channels": 3,
        "metagqn.z_channels": 32,
        "gqn.sigma_anneal_steps": 3000,
        "model.output_head": "raw",
        "model.latent_logvar_bias": None,
    }


BASE16 = _sizes(16, 32, 32, 4, 32, 1e-3)

STUDY_GRID: tuple[StudyEntry, ...] = (
    StudyEntry("s16-base", "16x16, hidden 32, r 32, L 4, batch 32, lr 1e-3 constant, raw head", BASE16),
    StudyEntry("s16-lr2e-3", "as s16-base, lr 2e-3", {**BASE16, "train.lr_start": 2e-3, "train.lr_end": 2e-3}),
    StudyEntry("s16-lr5e-4", "as s16-base, lr 5e-4", {**BASE16, "train.lr_start": 5e-4, "train.lr_end": 5e-4}),
    StudyEntry(
        "s16-lr2e-3-anneal",
        "as s16-base, lr 2e-3 annealed linearly to 2e-4 over 6,000 steps",
        {**BASE16, "train.lr_start": 2e-3, "train.lr_end": 2e-4, "train.lr_anneal_steps": 6000},
    ),
    StudyEntry("s16-batch16", "as s16-base, batch 16", {**BASE16, "train.batch_size": 16}),
    StudyEntry("s16-h64", "as s16-base, hidden 64, r 64", {**BASE16, "model.hidden_channels": 64, "model.r_channels": 64}),
    StudyEntry("s16-L6", "as s16-base, L 6", {**BASE16, "model.num_layers": 6}),
    StudyEntry("s16-sigmoid", "as s16-base, sigmoid output head", {**BASE16, "model.output_head": "sigmoid"}),
    StudyEntry(
        "s16-sigma1500", "as s16-base, GQN sigma 2.0 -> 0.7 over 1,500 steps", {**BASE16, "gqn.sigma_anneal_steps": 1500}, ("gqn",)
    ),
    StudyEntry("s16-z64", "as s16-base, metagqn z 64", {**BASE16, "metagqn.z_channels": 64}, ("metagqn",)),
    StudyEntry(
        "s16-logvar-4", "as s16-base, latent log-variance bias initialised to -4", {**BASE16, "model.latent_logvar_bias": -4.0}
    ),
    StudyEntry(
        "s16-logvar-8", "as s16-base, latent log-variance bias initialised to -8", {**BASE16, "model.latent_logvar_bias": -8.0}
    ),
    StudyEntry("s16-data3000", "as s16-base, 3,000 generated scenes", {**BASE16, "data.generate_scenes": 3000}),
    StudyEntry("s32-h32", "32x32 (cores 8x8), hidden 32, r 32, L 4, batch 32, lr 1e-3", _sizes(32, 32, 32, 4, 32, 1e-3)),
    StudyEntry("s32-h64-b16", "32x32, hidden 64, r 64, L 6, batch 16, lr 1e-3", _sizes(32, 64, 64, 6, 16, 1e-3)),
)


def study_entries(names: Sequence[str] | None = None) -> list[StudyEntry]:
    if not names:
        return list(STUDY_GRID)
    known = {e.name: e for e in STUDY_GRID}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown study entries {unknown}; entries: {', '.join(known)}")
    return [known[n] for n in names]


def _job(job: dict[str, Any]) -> dict[str, Any]:
    preset = get_preset(job["preset"], job["overrides"])
    result = train(
        preset,
        job["model"],
        job["out_dir"],
        tag=f"study-{job['name']}",
        steps=job["steps"],
        resume=True,
        cache_root=job["cache_root"],
        max_seconds=job["max_seconds"],
        progress=False,
    )
    doc = result.doc
    return {
        "name": job["name"],
        "description": job["description"],
        "model": job["model"],
        "overrides": job["overrides"],
        "status": doc["status"],
        "steps": doc["final"]["step"],
        "final": final_ratios(doc),
        "learned": learned(doc),
        "curve": ratio_curve(doc),
        "total_wall_s": doc.get("total_wall_s"),
        "steps_per_s": doc.get("steps_per_s"),
        "device": doc.get("device"),
        "run_file": str(Path(result.run_file).relative_to(job["out_dir"])),
    }


def _study_settings(eval_every: int, val_scenes: int, device: str, amp: str) -> dict[str, Any]:
    """The overrides every run of the study shares (evaluation, device, precision); they win over an entry's."""
    return {
        "train.eval_every": eval_every,
        "train.checkpoint_every": max(eval_every, 1000),
        "data.val_scenes": val_scenes,
        "train.device": device,
        "train.amp": amp,
        "train.tensorboard": False,
    }


def study_jobs(
    preset: str,
    entries: Sequence[StudyEntry],
    models: Sequence[str],
    overrides: Mapping[str, Any] | None,
    settings: Mapping[str, Any],
    shared: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One job per entry x model the entry is for (entries outermost).

    A run's overrides are ``overrides`` (``--set``), then the entry's, then the study ``settings``,
    later ones winning; ``shared`` (steps, folders, time cap) is the same for every job.
    """
    return [
        {
            "preset": preset,
            "name": e.name,
            "description": e.description,
            "model": m,
            "overrides": {**(overrides or {}), **e.overrides, **settings},
            **shared,
        }
        for e in entries
        for m in models
        if m in e.models
    ]


def run_learning_study(
    preset: str,
    out_dir: str | Path,
    *,
    entries: Sequence[StudyEntry] | None = None,
    models: Sequence[str] = ("gqn", "metagqn"),
    steps: int = 6000,
    eval_every: int = 250,
    val_scenes: int = 120,
    device: str = "auto",
    amp: str = "off",
    processes: int = 1,
    threads: int | None = None,
    max_seconds: float | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Train every model at every study entry for ``steps`` steps (or ``max_seconds``); write ``learning_study.json``.

    ``overrides`` (``--set``) change the preset under every entry; an entry's own fields win.
    """
    out_dir = Path(out_dir)
    shared = {"steps": steps, "out_dir": out_dir, "cache_root": cache_root, "max_seconds": max_seconds}
    settings = _study_settings(eval_every, val_scenes, device, amp)
    jobs = study_jobs(preset, entries or STUDY_GRID, models, overrides, settings, shared)
    prepare_data(preset, jobs, cache_root)
    rows = run_jobs(_job, jobs, processes=processes, progress=progress, desc="learning study", threads=threads)
    document = {
        "preset": preset,
        "overrides": dict(overrides or {}),
        "steps": steps,
        "eval_every": eval_every,
        "val_scenes": val_scenes,
        "amp": amp,
        "max_seconds": max_seconds,
        "reference": "mean training frame (ratios below 1 beat it)",
        "entries": rows,
    }
    return write_result(out_dir / "learning_study.json", "learning_study", document)
