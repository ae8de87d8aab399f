"""The study's Figures 6 and 7: validation NLL curves per model, and per latent size (or any swept field).

Each curve is the median over seeds with a band from the lowest to the highest seed
(seaborn ``errorbar=("pi", 100)``); x is training steps as in the study.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.plotting import palette_for, plt, sns
from gqnbench.report.runs import curve_frame, main_runs
from gqnbench.report.study import model_label
from gqnbench.results import as_float

BAND = ("pi", 100)  # min-max over seeds


def median_curves(curves: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median, min and max val NLL per step and group (the numbers behind a figure), as a table."""
    grouped = curves.groupby([*by, "step"])["val_nll"]
    out = grouped.agg(val_nll_median="median", val_nll_min="min", val_nll_max="max", seeds="count").reset_index()
    return out


def _target(results: ResultSet) -> float | None:
    for ttt in results.of_kind("time_to_target"):
        if ttt.doc.get("target_nll") is not None:
            return as_float(ttt.doc["target_nll"])
    return None


def figure6(results: ResultSet, ctx: ReportContext) -> list:
    runs, how = main_runs(results)
    curves = curve_frame(runs)
    if curves.empty:
        return [Note("No training runs: Figure 6 (validation NLL curves of both models) is omitted.")]
    labels = list(dict.fromkeys(curves["label"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    sns.lineplot(
        data=curves,
        x="step",
        y="val_nll",
        hue="label",
        estimator="median",
        errorbar=BAND,
        palette=palette_for(labels),
        ax=ax,
    )
    baselines = {
        round(as_float(((r.doc.get("baselines") or {}).get("mean_image") or {}).get("val_nll")), 3) for r in runs
    }
    if len(baselines) == 1 and np.isfinite(base := baselines.pop()):
        # The mean-frame prediction ignores the scene: a model must end well below it.
        ax.axhline(base, color="#777", lw=1, ls="--")
        ax.annotate(
            f"mean-image baseline {base:,.1f}",
            (0.01, base),  # left, so it never sits on the target's label at the right
            xycoords=("axes fraction", "data"),
            ha="left",
            va="bottom",
            fontsize=8,
            color="#555",
        )
    target = _target(results)
    if target is not None:
        ax.axhline(target, color="#2a9d8f", lw=1, ls=":")
        ax.annotate(
            f"target {target:,.1f}",
            (0.99, target),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=8,
            color="#2a9d8f",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("validation NLL (nats / image)")
    ax.legend(title=None)
    seeds = curves.groupby("model")["seed"].nunique()
    caption = (
        "Figure 6 equivalent: validation NLL of both models over training steps; line = median over seeds "
        f"({', '.join(f'{model_label(m)}: {n}' for m, n in seeds.items())}), band = min–max over seeds."
    )
    fig_block = ctx.figure("figure6_val_nll", fig, caption, [r.path for r in runs])
    table = median_curves(curves, ["model"])
    tab_block = ctx.table(
        "figure6_val_nll",
        table,
        "Figure 6 data: median and range of the validation NLL per step",
        [r.path for r in runs],
        display=pd.DataFrame(
            {
                "model": table["model"].map(model_label),
                "step": table["step"].map(F.fmt_int),
                "median NLL": table["val_nll_median"].map(F.fmt_float),
                "min": table["val_nll_min"].map(F.fmt_float),
                "max": table["val_nll_max"].map(F.fmt_float),
                "seeds": table["seeds"].map(F.fmt_int),
            }
        )
        .groupby("model", sort=False)
        .tail(3),
    )
    tab_block.caption += " (last 3 steps per model shown; all steps in the CSV)"
    return [Paragraph(f"Runs: {how}."), fig_block, tab_block]


def sweep_curves(results: ResultSet, sweep: ResultFile) -> tuple[pd.DataFrame, list[str]]:
    """Long-form curves of one sweep's runs with their swept value; and the run files it could not find."""
    frames, missing = [], []
    for entry in sweep.doc["runs"]:
        run = results.resolve_reference(entry.get("run_file"), sweep)
        if run is None:
            missing.append(str(entry.get("run_file")))
            continue
        frame = curve_frame([run])
        frame["value"] = entry["value"]
        frame["diverged"] = bool(entry.get("diverged"))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(), missing
    return pd.concat(frames, ignore_index=True), missing


def _value_label(field: str, value) -> str:
    short = field.rsplit(".", 1)[-1]
    short = {"z_channels": "z"}.get(short, short)
    return f"{short} = {value}"


def figure7(results: ResultSet, ctx: ReportContext) -> list:
    sweeps = results.of_kind("sweep")
    if not sweeps:
        return [Note("No sweep results: Figure 7 (curves per latent size) is omitted.")]
    blocks: list = []
    for i, sweep in enumerate(sweeps):
        field = sweep.doc["field"]
        curves, missing = sweep_curves(results, sweep)
        if curves.empty:
            blocks.append(Note(f"Sweep over `{field}`: none of its run files were found; only the summary is shown."))
            continue
        values = list(sweep.doc.get("values") or sorted(curves["value"].unique()))
        curves["setting"] = [_value_label(field, v) for v in curves["value"]]
        order = [_value_label(field, v) for v in values]
        models = list(dict.fromkeys(curves["model"]))
        fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.9), sharey=True, squeeze=False)
        colours = dict(zip(order, sns.color_palette("Dark2", len(order)).as_hex()))
        for ax, model in zip(axes[0], models):
            sub = curves[curves["model"] == model]
            sns.lineplot(
                data=sub,
                x="step",
                y="val_nll",
                hue="setting",
                hue_order=order,
                estimator="median",
                errorbar=BAND,
                palette=colours,
                ax=ax,
            )
            # A diverged run's last finite point, so its early end reads as a failure, not a short run.
            ends = sub[sub["diverged"]].sort_values("step").groupby("file").tail(1)
            if len(ends):
                ax.scatter(ends["step"], ends["val_nll"], marker="x", color="black", s=40, zorder=5, label="diverged")
            ax.set_title(model_label(model))
            ax.set_xlabel("training step")
            ax.set_ylabel("validation NLL (nats / image)")
            ax.legend(title=None, fontsize=8)
        target = sweep.doc.get("target_nll")
        if target is not None:
            for ax in axes[0]:
                ax.axhline(as_float(target), color="#2a9d8f", lw=1, ls=":")
        name = "figure7_sweep" if len(sweeps) == 1 else f"figure7_sweep_{i}"
        caption = (
            f"Figure 7 equivalent: validation NLL per `{field}` setting and model; median over seeds, band = "
            "min–max; × marks the last evaluation of a diverged run"
            + (f"; dotted line = target {as_float(target):,.1f}" if target is not None else "")
            + "."
        )
        sources = [sweep.path, *dict.fromkeys(curves["file"])]
        blocks.append(ctx.figure(name, fig, caption, sources))
        if missing:
            blocks.append(Note(f"{len(missing)} run file(s) of this sweep were not found: {', '.join(missing[:5])}."))
    return blocks


def build_figure6(results: ResultSet, ctx: ReportContext) -> Section:
    return Section("Validation NLL curves (the study's Figure 6)", "figure6", figure6(results, ctx))


def build_figure7(results: ResultSet, ctx: ReportContext) -> Section:
    return Section("Curves per latent size (the study's Figure 7)", "figure7", figure7(results, ctx))
