"""The study's Figures 6 and 7: validation NLL curves per model, and per latent size (or any swept field).

Each curve is the median over seeds with a band from the lowest to the highest seed
(seaborn ``errorbar=("pi", 100)``); x is training steps as in the study.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gqnbench.judging import LEARNED_FRACTION
from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.plotting import palette_for, plt, sns
from gqnbench.report.runs import curve_frame, main_runs, reference
from gqnbench.schema.training import SweepDoc, TimeToTargetDoc

BAND = ("pi", 100)  # min-max over seeds


def median_curves(curves: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median, min and max val NLL, and median MSE ratios, per step and group (the numbers behind a figure)."""
    grouped = curves.groupby([*by, "step"])
    out = grouped["val_nll"].agg(val_nll_median="median", val_nll_min="min", val_nll_max="max", seeds="count")
    ratios = grouped[["mse_ratio", "fg_ratio"]].median().add_suffix("_median")
    return out.join(ratios).reset_index()


def _target_ratio(results: ResultSet) -> float | None:
    """The first time-to-target file's target as a ratio to the mean frame; None when none set one."""
    for ttt in results.of_kind("time_to_target"):
        ratio = ttt.as_(TimeToTargetDoc).target_mse_ratio
        if ratio is not None:
            return float(ratio)
    return None


def _nearest_ratio(runs: list[ResultFile], key: str) -> float | None:
    values = {
        round(reference(r, "nearest_context")[key] / reference(r)[key], 4)
        for r in runs
        if reference(r)[key] and np.isfinite(reference(r, "nearest_context")[key])
    }
    return values.pop() if len(values) == 1 else None


def ratio_axis(ax, curves: pd.DataFrame, column: str, hue: str, palette, order=None) -> None:
    """One panel of errors relative to the mean frame, its y-axis set by the trained part of the curves."""
    sns.lineplot(
        data=curves, x="step", y=column, hue=hue, hue_order=order, estimator="median", errorbar=BAND,
        palette=palette, ax=ax,
    )  # fmt: skip
    trained = curves.loc[curves["step"] > 0, column].dropna()
    if len(trained):
        # The untrained first point (about 2x) would squash the learning into a flat line at the bottom.
        # The mean-frame line (1.0) stays in view.
        ax.set_ylim(max(0.0, min(trained.min(), 1.0) - 0.05), max(1.15, min(trained.quantile(0.98), 1.6)))
    ax.axhline(1.0, color="#777", lw=1, ls="--")
    ax.annotate("mean frame", (0.99, 1.0), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
    ax.axhline(LEARNED_FRACTION, color="#bbb", lw=0.8, ls="-.")
    ax.set_xlabel("training step")


def _mark(ax, value: float, text: str, colour: str, x: float, align: str, valign: str) -> None:
    """A dotted horizontal reference line with its label at axes-fraction ``x``."""
    ax.axhline(value, color=colour, lw=1, ls=":")
    ax.annotate(
        text, (x, value), xycoords=("axes fraction", "data"), ha=align, va=valign, fontsize=8, color=colour,
    )  # fmt: skip


def _figure6_plot(curves: pd.DataFrame, runs: list[ResultFile], target: float | None):
    """MSE (and, when recorded, foreground MSE) relative to the mean frame, with the reference lines."""
    labels = list(dict.fromkeys(curves["label"]))
    has_fg = curves["fg_ratio"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_fg else 1, figsize=(11 if has_fg else 6.5, 4.2), squeeze=False)
    panels = [("mse_ratio", "val_mse", "validation MSE / mean frame's")]
    if has_fg:
        panels.append(("fg_ratio", "val_fg_mse", "foreground MSE / mean frame's"))
    for ax, (column, key, ylabel) in zip(axes[0], panels):
        ratio_axis(ax, curves, column, "label", palette_for(labels))
        nearest = _nearest_ratio(runs, key)
        if nearest is not None and nearest < ax.get_ylim()[1]:
            _mark(ax, nearest, f"nearest context view {nearest:.2f}", "#e76f51", 0.01, "left", "bottom")
        if target is not None and column == "mse_ratio":
            _mark(ax, target, f"time-to-target {target:.2f}", "#2a9d8f", 0.99, "right", "top")
        ax.set_ylabel(ylabel)
        ax.legend(title=None)
    return fig


def _figure6_caption(curves: pd.DataFrame) -> str:
    seeds = curves.groupby("model")["seed"].nunique()
    return (
        "Figure 6 equivalent: validation errors of both models over training steps, relative to the mean training "
        "frame (dashed, 1.0; dash-dot = the 'learned' margin); line = median over seeds "
        f"({', '.join(f'{model_label(m)}: {n}' for m, n in seeds.items())}), band = min–max over seeds; the y-axis "
        "starts where training has left the untrained start (about 2x). The NLL per step is in the table."
    )


def _figure6_display(table: pd.DataFrame) -> pd.DataFrame:
    """The last three steps per model, formatted (the CSV has every step)."""
    return (
        pd.DataFrame(
            {
                "model": table["model"].map(model_label),
                "step": table["step"].map(F.fmt_int),
                "median NLL": table["val_nll_median"].map(F.fmt_float),
                "min": table["val_nll_min"].map(F.fmt_float),
                "max": table["val_nll_max"].map(F.fmt_float),
                "MSE / mean frame": table["mse_ratio_median"].map(lambda v: F.fmt_sig(v, 3)),
                "fg MSE / mean frame": table["fg_ratio_median"].map(lambda v: F.fmt_sig(v, 3)),
                "seeds": table["seeds"].map(F.fmt_int),
            }
        )
        .groupby("model", sort=False)
        .tail(3)
    )


def figure6(results: ResultSet, ctx: ReportContext) -> list:
    """The main runs' validation curves relative to the mean frame, and the NLL per step as a table."""
    runs, how = main_runs(results)
    curves = curve_frame(runs)
    if curves.empty:
        return [Note("No training runs: Figure 6 (validation curves of both models) is omitted.")]
    sources = [r.path for r in runs]
    fig = _figure6_plot(curves, runs, _target_ratio(results))
    fig_block = ctx.figure("figure6_val_nll", fig, _figure6_caption(curves), sources)
    table = median_curves(curves, ["model"])
    caption = "Figure 6 data: median and range of the validation NLL per step"
    tab_block = ctx.table("figure6_val_nll", table, caption, sources, display=_figure6_display(table))
    tab_block.caption += " (last 3 steps per model shown; all steps in the CSV)"
    return [Paragraph(f"Runs: {how}."), fig_block, tab_block]


def sweep_curves(results: ResultSet, sweep: ResultFile) -> tuple[pd.DataFrame, list[str]]:
    """Long-form curves of one sweep's runs with their swept value; and the run files it could not find."""
    frames, missing = [], []
    for entry in sweep.as_(SweepDoc).runs:
        if entry.status == "failed":
            continue  # trained nothing to draw; listed under "Failed and unfinished runs"
        run = results.resolve_reference(entry.run_file, sweep)
        if run is None:
            missing.append(str(entry.run_file))
            continue
        frame = curve_frame([run])
        frame["value"] = entry.value
        frame["diverged"] = entry.diverged
        frames.append(frame)
    if not frames:
        return pd.DataFrame(), missing
    return pd.concat(frames, ignore_index=True), missing


def _value_label(field: str, value) -> str:
    short = field.rsplit(".", 1)[-1]
    short = {"z_channels": "z"}.get(short, short)
    return f"{short} = {value}"


def _figure7_plot(curves: pd.DataFrame, order: list[str]):
    """One panel per model: MSE relative to the mean frame per setting, diverged runs' ends marked."""
    models = list(dict.fromkeys(curves["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.9), sharey=True, squeeze=False)
    colours = dict(zip(order, sns.color_palette("Dark2", len(order)).as_hex()))
    for ax, model in zip(axes[0], models):
        sub = curves[curves["model"] == model]
        ratio_axis(ax, sub, "mse_ratio", "setting", colours, order)
        # A diverged run's last finite point, so its early end reads as a failure, not a short run.
        ends = sub[sub["diverged"]].sort_values("step").groupby("file").tail(1)
        if len(ends):
            ax.scatter(ends["step"], ends["mse_ratio"], marker="x", color="black", s=40, zorder=5, label="diverged")
        ax.set_title(model_label(model))
        ax.set_ylabel("validation MSE / mean frame's")
        ax.legend(title=None, fontsize=8)
    return fig


def _figure7_blocks(results: ResultSet, sweep: ResultFile, name: str, ctx: ReportContext) -> list:
    """One sweep's figure, or a note when none of its run files was loaded; a note on missing ones."""
    doc = sweep.as_(SweepDoc)
    curves, missing = sweep_curves(results, sweep)
    if curves.empty:
        return [Note(f"Sweep over `{doc.field}`: none of its run files were found; only the summary is shown.")]
    values = list(doc.values or sorted(curves["value"].unique()))
    curves["setting"] = [_value_label(doc.field, v) for v in curves["value"]]
    fig = _figure7_plot(curves, [_value_label(doc.field, v) for v in values])
    caption = (
        f"Figure 7 equivalent: validation MSE relative to the mean training frame per `{doc.field}` setting and "
        "model; median over seeds, band = min–max; dashed = mean frame, dash-dot = the 'learned' margin; "
        "× marks the last evaluation of a diverged run."
    )
    blocks: list = [ctx.figure(name, fig, caption, [sweep.path, *dict.fromkeys(curves["file"])])]
    if missing:
        blocks.append(Note(f"{len(missing)} run file(s) of this sweep were not found: {', '.join(missing[:5])}."))
    return blocks


def figure7(results: ResultSet, ctx: ReportContext) -> list:
    """Validation curves per setting of each sweep (the latent size in the study's Figure 7)."""
    sweeps = results.of_kind("sweep")
    if not sweeps:
        return [Note("No sweep results: Figure 7 (curves per latent size) is omitted.")]
    blocks: list = []
    for i, sweep in enumerate(sweeps):
        name = "figure7_sweep" if len(sweeps) == 1 else f"figure7_sweep_{i}"
        blocks += _figure7_blocks(results, sweep, name, ctx)
    return blocks


def build_figure6(results: ResultSet, ctx: ReportContext) -> Section:
    return Section("Validation curves (the study's Figure 6)", "figure6", figure6(results, ctx))


def build_figure7(results: ResultSet, ctx: ReportContext) -> Section:
    return Section("Curves per latent size (the study's Figure 7)", "figure7", figure7(results, ctx))
