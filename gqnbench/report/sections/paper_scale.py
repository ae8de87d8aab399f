"""The study's configuration learning on one GPU: the ``paper-short`` recipe's runs, curves, samples and claims.

The study's sizes (64x64, L = 12, 128 hidden channels, 256-channel r, batch 36, the paper's z per
model) trained for minutes on one GPU, both models side by side, with the schedules compressed
to the run (``gqnbench.presets.compressed_schedules``). This section reads the ``training_run``
and ``samples`` files of that preset only (``ci/gpu_session.sh`` writes them under
``results/gpu/``); without them it says that no GPU run exists, and shows no number.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from gqnbench.judging import LEARNED_FRACTION, STUDY_NLL, STUDY_PARAMS, STUDY_STEP
from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.plotting import palette_for, plt
from gqnbench.report.runs import curve_frame, reference, roughness, training_doc
from gqnbench.report.sections.curves import ratio_axis
from gqnbench.report.sections.samples import PAPER_SCALE_PRESET, decode_scenes, prediction_grid, prediction_mse
from gqnbench.results import as_float
from gqnbench.schema.study import SamplesDoc

# The recipe's preset name in gqnbench.presets (the report imports no presets; a test keeps them equal).
PRESET = PAPER_SCALE_PRESET

NO_RUN = (
    "**No GPU run of the paper-scale recipe exists yet.** This section shows the study's configuration "
    "(64x64, L = 12, 128 hidden channels, 256-channel r, batch 36) trained on one GPU once a device session "
    "has run `ci/gpu_session.sh`, which trains both models side by side with "
    "`gqnbench train --preset paper-short` and writes its results under `results/gpu/`. Until then there "
    "are no numbers here: none are estimated or carried over from smaller presets."
)


def paper_runs(results: ResultSet) -> list[ResultFile]:
    """The recipe's training runs."""
    return [r for r in results.of_kind("training_run") if training_doc(r).preset == PRESET]


def is_paper_scale(samples: ResultFile) -> bool:
    """Whether a samples file shows the recipe's models (this section draws it, not "Sample predictions")."""
    return samples.as_(SamplesDoc).preset == PRESET


def runs_frame(runs: list[ResultFile]) -> pd.DataFrame:
    """One row per run: what it trained, how far, how fast, and where it ended relative to the mean frame."""
    rows = []
    for run in runs:
        doc = training_doc(run)
        cfg = doc.config
        model, train = cfg.model, cfg.train or {}
        last = doc.eval_curve[-1] if doc.eval_curve else None
        base = reference(run)
        mse = as_float(last.val_mse) if last else math.nan
        fg = as_float(last.val_fg_mse) if last else math.nan
        ratio = mse / base["val_mse"] if base["val_mse"] else math.nan
        fg_ratio = fg / base["val_fg_mse"] if base["val_fg_mse"] else math.nan
        rows.append(
            {
                "model": doc.model,
                "status": doc.status,
                "stop_reason": doc.stop_reason,
                "steps": doc.final.step,
                "planned_steps": train.get("steps"),
                "wall_s": doc.total_wall_s,
                "steps_per_s": doc.steps_per_s,
                "device": doc.device,
                "dtype": doc.dtype,
                "fast_path": train.get("fast_path"),
                "image_size": model.get("image_size"),
                "num_layers": model.get("num_layers"),
                "hidden_channels": model.get("hidden_channels"),
                "r_channels": model.get("r_channels"),
                "z_channels": model.get("z_channels"),
                "batch": train.get("batch_size"),
                "lr": train.get("lr_start"),
                "generated_scenes": (cfg.data or {}).get("generate_scenes"),
                "val_nll": as_float(doc.final.val_nll),
                "mse_ratio": ratio,
                "fg_ratio": fg_ratio,
                "learned": doc.status != "diverged" and ratio <= LEARNED_FRACTION and fg_ratio <= LEARNED_FRACTION,
                "roughness_nats": roughness(as_float(p.val_nll) for p in doc.eval_curve),
                "file": run.path,
            }
        )
    return pd.DataFrame(rows)


def _intro(frame: pd.DataFrame) -> Paragraph:
    first = frame.iloc[0]
    stops = "; ".join(
        f"{model_label(r.model)} {F.fmt_int(r.steps)} of {F.fmt_int(r.planned_steps)} steps"
        + (" (stopped by the time budget)" if r.stop_reason == "time_budget" else "")
        for r in frame.itertuples()
    )
    return Paragraph(
        f"The study's configuration, not a reduced one: {first.image_size}x{first.image_size} images, L = "
        f"{first.num_layers}, {first.hidden_channels} hidden channels, {first.r_channels}-channel r, batch "
        f"{first.batch}, z = {' / '.join(str(z) for z in frame['z_channels'])} channels "
        f"({' / '.join(model_label(m) for m in frame['model'])}), on `{first.device}` in {first.dtype} with the "
        f"step's fast path `{first.fast_path}`; both models trained at the same time as two processes on one GPU. "
        f"Constant learning rate {first.lr:g} and GQN's pixel sigma annealed 2.0 -> 0.7 over the first 60% of "
        f"the planned steps (the paper's schedules compressed to the run, as the cpu preset does), on "
        f"{F.fmt_int(first.generated_scenes)} embedded scenes (9:1 train/validation). Trained: {stops}. "
        f"That is {F.fmt_pct(frame['steps'].max() / STUDY_STEP)} of the study's {F.fmt_int(STUDY_STEP)} steps, "
        "so the NLLs here are not the study's final ones; compare the ratios to the mean frame."
    )


def _summary_table(frame: pd.DataFrame, ctx: ReportContext) -> Any:
    display = pd.DataFrame(
        {
            "model": frame["model"].map(model_label),
            "status": frame["status"],
            "steps": frame["steps"].map(F.fmt_int),
            "wall (s)": frame["wall_s"].map(lambda v: F.fmt_float(v, 0)),
            "steps/s": frame["steps_per_s"].map(lambda v: F.fmt_float(v, 1)),
            "val NLL (nats/image)": frame["val_nll"].map(lambda v: F.fmt_float(v, 1)),
            "MSE / mean frame": frame["mse_ratio"].map(lambda v: F.fmt_float(v, 3)),
            "foreground MSE / mean frame": frame["fg_ratio"].map(lambda v: F.fmt_float(v, 3)),
            f"learned (both <= {LEARNED_FRACTION})": frame["learned"].map(lambda v: F.fmt_bool(v)),
        }
    )
    caption = "Paper-scale runs on one GPU: where each model ended (z sampled, 3 context views)"
    return ctx.table("paper_scale_runs", frame.drop(columns=["file"]), caption, frame["file"], display=display)


def _curves(runs: list[ResultFile], ctx: ReportContext) -> Any:
    curves = curve_frame(runs)
    labels = list(dict.fromkeys(curves["label"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for ax, (column, title) in zip(axes[0], (("mse_ratio", "MSE"), ("fg_ratio", "foreground MSE"))):
        ratio_axis(ax, curves, column, "label", palette_for(labels), labels)
        ax.set_ylabel(f"validation {title} / mean frame's")
    fig.tight_layout()
    caption = (
        "Paper-scale validation curves on one GPU, relative to the mean training frame (below 1: the context is used)"
    )
    return ctx.figure("paper_scale_curves", fig, caption, [r.path for r in runs])


def _claims(frame: pd.DataFrame, ctx: ReportContext) -> Any:
    by = {r.model: r for r in frame.itertuples()}
    gqn, meta = by.get("gqn"), by.get("metagqn")

    def cell(row: Any, value: str) -> str:
        return value if row is not None else F.MISSING

    lower = None
    if gqn is not None and meta is not None and math.isfinite(gqn.val_nll) and math.isfinite(meta.val_nll):
        lower = "proposed" if meta.val_nll < gqn.val_nll else "GQN"
    steadier = None
    if gqn is not None and meta is not None:
        steadier = "proposed" if meta.roughness_nats < gqn.roughness_nats else "GQN"
    rows = [
        {
            "claim": "parameters (the study's count)",
            "GQN": F.fmt_int(STUDY_PARAMS["gqn"]),
            "proposed": F.fmt_int(STUDY_PARAMS["metagqn"]),
            "at this scale": "the same layouts (counted in Costs)",
        },
        {
            "claim": f"validation NLL (study: at {F.fmt_int(STUDY_STEP)} steps)",
            "GQN": cell(
                gqn, f"{F.fmt_float(gqn.val_nll, 1) if gqn else ''} (study {F.fmt_float(STUDY_NLL['gqn'], 0)})"
            ),
            "proposed": cell(
                meta, f"{F.fmt_float(meta.val_nll, 1) if meta else ''} (study {F.fmt_float(STUDY_NLL['metagqn'], 0)})"
            ),
            "at this scale": "lower: " + lower if lower else "not comparable (one model missing)",
        },
        {
            "claim": "a steadier validation curve (sum of its rises, nats)",
            "GQN": cell(gqn, F.fmt_float(gqn.roughness_nats, 1) if gqn else ""),
            "proposed": cell(meta, F.fmt_float(meta.roughness_nats, 1) if meta else ""),
            "at this scale": "steadier: " + steadier if steadier else F.MISSING,
        },
        {
            "claim": f"learns scene structure (MSE and foreground MSE <= {LEARNED_FRACTION}x the mean frame's)",
            "GQN": cell(gqn, F.fmt_bool(gqn.learned) if gqn else ""),
            "proposed": cell(meta, F.fmt_bool(meta.learned) if meta else ""),
            "at this scale": "within the device budget",
        },
        {
            "claim": "latent channels 3 / 32 / 128 (GQN fails at 128)",
            "GQN": F.MISSING,
            "proposed": F.MISSING,
            "at this scale": "not run at this scale (the latent sweep runs at the cpu preset)",
        },
    ]
    table = pd.DataFrame(rows)
    caption = "The study's claims at this scale (one seed each: a reading of one run, not a median)"
    return ctx.table("paper_scale_claims", table, caption, frame["file"], display=table)


def _samples(results: ResultSet, ctx: ReportContext) -> list:
    blocks: list = []
    for i, samples in enumerate(f for f in results.of_kind("samples") if is_paper_scale(f)):
        scenes = decode_scenes(samples)
        if not scenes:
            continue
        doc = samples.as_(SamplesDoc)
        caption = (
            f"Paper-scale predictions after {F.fmt_int(doc.step)} steps ({doc.z or 'z not recorded'}): context "
            "views, the true query, each model's prediction and the two reference predictors"
        )
        name = "paper_scale_samples" + (f"_{i}" if i else "")
        blocks.append(ctx.figure(name, prediction_grid(scenes, prediction_mse(scenes)), caption, [samples.path]))
    return blocks


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("The study's configuration on one GPU", "paper-scale")
    runs = paper_runs(results)
    if not runs:
        section.blocks.append(Note(NO_RUN))
        return section
    frame = runs_frame(runs)
    section.blocks += [_intro(frame), _summary_table(frame, ctx), _curves(runs, ctx), _claims(frame, ctx)]
    section.blocks += _samples(results, ctx)
    return section
