"""The learning study: which small configuration learns, from ``learning_study`` results files.

One table per file (entry, model, steps reached, device, final MSE and foreground MSE relative
to the mean frame, with z sampled and at its mean, learned or not, steps/s) and one figure of
every entry's curve per model. The entries and their overrides are in
:mod:`gqnbench.training.learning_study`; ``gqnbench learning-study`` reproduces a file.
"""

from __future__ import annotations

import pandas as pd

from gqnbench.judging import LEARNED_FRACTION
from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.plotting import plt, sns
from gqnbench.results import as_float
from gqnbench.schema.study import LearningStudyDoc


def entries_frame(study: ResultFile) -> pd.DataFrame:
    rows = [
        {
            "entry": e.name,
            "description": e.description,
            "model": e.model,
            "steps": e.steps,
            "device": e.device,
            "mse_ratio": as_float(e.final.mse_ratio),
            "fg_ratio": as_float(e.final.fg_ratio),
            "mse_ratio_zmean": as_float(e.final.mse_ratio_zmean),
            "fg_ratio_zmean": as_float(e.final.fg_ratio_zmean),
            # Entries written before the judgement was stored count as not learned.
            "learned": bool(e.learned),
            "steps_per_s": as_float(e.steps_per_s),
            "status": e.status,
        }
        for e in study.as_(LearningStudyDoc).entries
    ]
    return pd.DataFrame(rows)


def curves_frame(study: ResultFile) -> pd.DataFrame:
    rows = [
        {"entry": e.name, "model": e.model, "step": p.step, "mse_ratio": as_float(p.mse_ratio)}
        for e in study.as_(LearningStudyDoc).entries
        for p in e.curve
    ]
    return pd.DataFrame(rows, columns=["entry", "model", "step", "mse_ratio"])


def _figure(curves: pd.DataFrame):
    models = list(dict.fromkeys(curves["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.6 * len(models), 4.0), sharey=True, squeeze=False)
    entries = list(dict.fromkeys(curves["entry"]))
    colours = dict(zip(entries, sns.color_palette("tab20", len(entries)).as_hex()))
    for ax, model in zip(axes[0], models):
        sub = curves[(curves["model"] == model) & (curves["step"] > 0)]
        sns.lineplot(data=sub, x="step", y="mse_ratio", hue="entry", palette=colours, ax=ax, lw=1)
        ax.axhline(1.0, color="#777", lw=1, ls="--")
        ax.axhline(LEARNED_FRACTION, color="#bbb", lw=0.8, ls="-.")
        ax.set_ylim(max(0.0, sub["mse_ratio"].min() - 0.05), min(1.3, max(1.05, sub["mse_ratio"].quantile(0.95))))
        ax.set_title(model_label(model))
        ax.set_xlabel("training step")
        ax.set_ylabel("validation MSE / mean frame's")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


INTRO = (
    "Each entry is a set of overrides (sizes, learning rate, batch, schedules, output head, latent "
    "initialisation, data size) trained for the same step budget; errors are relative to the mean training "
    "frame on the fixed validation episode (1.0 = the mean frame, below 0.9 on both = learned). Curves over "
    "steps do not depend on the device up to rounding, so the wide grid may run on a GPU and the chosen "
    "configuration is confirmed on the CPU by the main job itself."
)


def _caption(doc: LearningStudyDoc, frame: pd.DataFrame) -> str:
    devices = ", ".join(sorted({str(d) for d in frame["device"].dropna()})) or "?"
    return (
        f"Learning study on {devices} ({'bf16 autocast' if doc.amp == 'bf16' else 'fp32'}), up to "
        f"{F.fmt_int(doc.steps)} steps"
        + (f" or {F.fmt_int(doc.max_seconds)} s per run" if doc.max_seconds else "")
        + "; final errors relative to the mean frame (z sampled / z at the mean)"
    )


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entry": frame["entry"],
            "model": frame["model"].map(model_label),
            "steps": frame["steps"].map(F.fmt_int),
            "MSE ratio": frame["mse_ratio"].map(lambda v: F.fmt_sig(v, 3)),
            "fg MSE ratio": frame["fg_ratio"].map(lambda v: F.fmt_sig(v, 3)),
            "z mean: MSE / fg": [
                f"{F.fmt_sig(a, 3)} / {F.fmt_sig(b, 3)}"
                for a, b in zip(frame["mse_ratio_zmean"], frame["fg_ratio_zmean"])
            ],
            "learned": frame["learned"].map({True: "yes", False: "no"}),
            "steps/s": frame["steps_per_s"].map(lambda v: F.fmt_sig(v, 3)),
            "what": frame["description"],
        }
    )


def _study_blocks(study: ResultFile, suffix: str, ctx: ReportContext) -> list:
    """One study file's table and, when it has curves, its figure."""
    frame = entries_frame(study)
    caption = _caption(study.as_(LearningStudyDoc), frame)
    blocks = [ctx.table(f"learning_study{suffix}", frame, caption, [study.path], display=_display(frame))]
    curves = curves_frame(study)
    if not curves.empty:
        figure_caption = caption.replace("; final errors", "; validation MSE curves") + "."
        blocks.append(ctx.figure(f"learning_study{suffix}", _figure(curves), figure_caption, [study.path]))
    return blocks


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Learning study: which configuration learns on a CPU budget", "learning-study")
    studies = results.of_kind("learning_study")
    if not studies:
        section.blocks.append(Note("No learning_study results (run `gqnbench learning-study`)."))
        return section
    section.blocks.append(Paragraph(INTRO))
    for i, study in enumerate(studies):
        section.blocks += _study_blocks(study, "" if len(studies) == 1 else f"_{i}", ctx)
    return section
