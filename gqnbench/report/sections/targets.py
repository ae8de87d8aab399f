"""Time to target (MLPerf style): per model and seed, not-reached runs shown as such, medians over seeds.

A run that missed the target within its budget counts as infinite (SPEC section 8): it is
listed as "not reached (∞)" and enters the median as infinity, never dropped. A run that failed
with an error measured nothing: it is left out here and listed under "Failed and unfinished runs".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultSet
from gqnbench.report.plotting import palette_for, plt
from gqnbench.report.runs import curve_frame, median_inf, referenced_runs
from gqnbench.results import as_float
from gqnbench.schema.training import Budget, TimeToTargetDoc


def seeds_frame(results: ResultSet) -> pd.DataFrame:
    """One row per model x seed of every time_to_target file; not reached -> steps and wall_s = inf."""
    rows = []
    for ttt in results.of_kind("time_to_target"):
        doc = ttt.as_(TimeToTargetDoc)
        for entry in doc.runs:
            if entry.status == "failed":
                continue
            rows.append(
                {
                    "model": entry.model,
                    "seed": entry.seed,
                    "preset": doc.preset,
                    "target_nll": as_float(doc.target_nll),
                    "reached": entry.reached,
                    "steps": as_float(entry.steps) if entry.reached else math.inf,
                    "wall_s": as_float(entry.wall_s) if entry.reached else math.inf,
                    "run_file": entry.run_file,
                    "file": ttt.path,
                }
            )
    columns = ["model", "seed", "preset", "target_nll", "reached", "steps", "wall_s", "run_file", "file"]
    return pd.DataFrame(rows, columns=columns)


def summary_frame(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per model (and preset/target): seeds, how many reached, median steps and wall seconds (inf kept)."""
    rows = []
    for (model, preset, target), group in seeds.groupby(["model", "preset", "target_nll"], sort=False, dropna=False):
        rows.append(
            {
                "model": model,
                "preset": preset,
                "target_nll": target,
                "seeds": len(group),
                "reached": int(group["reached"].sum()),
                "median_steps": median_inf(group["steps"]),
                "median_wall_s": median_inf(group["wall_s"]),
            }
        )
    return pd.DataFrame(rows)


def _figure(seeds: pd.DataFrame, budget_s: float | None):
    labels = [model_label(m) for m in dict.fromkeys(seeds["model"])]
    colours = palette_for(labels)
    finite = seeds.loc[np.isfinite(seeds["wall_s"]), "wall_s"]
    edge = max([*finite, budget_s or 0.0, 1.0]) * 1.08
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.7 * len(labels)))
    for y, (model, group) in enumerate(seeds.groupby("model", sort=False)):
        label = model_label(model)
        hit = group[np.isfinite(group["wall_s"])]
        miss = group[~np.isfinite(group["wall_s"])]
        ax.scatter(hit["wall_s"], [y] * len(hit), color=colours[label], s=45, zorder=3)
        if len(miss):
            ax.scatter([edge] * len(miss), [y] * len(miss), marker=">", color="#999", s=60, zorder=3)
            ax.annotate(
                f"{len(miss)} not reached (∞)", (edge, y + 0.22), ha="right", va="bottom", fontsize=8, color="#666"
            )
        med = median_inf(group["wall_s"])
        if math.isfinite(med):
            ax.plot([med, med], [y - 0.25, y + 0.25], color="black", lw=2)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.set_xlim(0, edge * 1.03)
    if budget_s:
        ax.axvline(budget_s, color="#999", ls="--", lw=1)
    ax.set_xlabel("wall-clock seconds to the target NLL (evaluation included)")
    return fig


def _finite_budget(budget: Budget) -> dict[str, float]:
    """The budget's limits that were set (no limit is None or infinite)."""
    limits = {"steps": budget.steps, "seconds": budget.seconds}
    return {k: v for k, v in limits.items() if v is not None and math.isfinite(v)}


def _intro(doc: TimeToTargetDoc) -> Paragraph:
    budget_text = ", ".join(f"{F.fmt_int(v)} {k}" for k, v in _finite_budget(doc.budget).items())
    ratio = (
        f"(= {doc.target_mse_ratio:.2f}x the mean training frame's MSE on the same validation "
        "episode, so only a model that uses the scene reaches it; `gqnbench/training/budgets.py` says how "
        "the fraction was chosen) "
        if doc.target_mse_ratio is not None
        else ""
    )
    return Paragraph(
        f"MLPerf-style time to a validation NLL of **{F.fmt_float(doc.target_nll)}** nats "
        + ratio
        + f"(preset `{doc.preset}`; budget {budget_text or 'not recorded'}): wall clock from the first "
        "training step until the validation NLL first reaches the target, evaluation time included. A run that "
        "misses the target within its budget counts as infinite and enters the median as such."
    )


def _summary_table(seeds: pd.DataFrame, ctx: ReportContext, files: list) -> object:
    summary = summary_frame(seeds)
    return ctx.table(
        "time_to_target_summary",
        summary,
        "Time to target: median over seeds",
        files,
        display=pd.DataFrame(
            {
                "model": summary["model"].map(model_label),
                "target NLL": summary["target_nll"].map(F.fmt_float),
                "reached / seeds": [f"{r} / {n}" for r, n in zip(summary["reached"], summary["seeds"])],
                "median steps": summary["median_steps"].map(lambda v: F.fmt_until(v, 0)),
                "median wall time (s)": summary["median_wall_s"].map(F.fmt_until),
            }
        ),
    )


def _seeds_table(seeds: pd.DataFrame, ctx: ReportContext, files: list) -> object:
    return ctx.table(
        "time_to_target_seeds",
        seeds.drop(columns=["file"]),
        "Time to target per model and seed",
        files,
        display=pd.DataFrame(
            {
                "model": seeds["model"].map(model_label),
                "seed": seeds["seed"].astype(str),
                "steps": seeds["steps"].map(lambda v: F.fmt_until(v, 0)),
                "wall time (s)": seeds["wall_s"].map(F.fmt_until),
                "run": seeds["run_file"].fillna(F.MISSING),
            }
        ),
    )


SEEDS_CAPTION = "Time to target per seed (dots); black bar = median over seeds; arrows at the right = not reached (∞)."
CURVES_CAPTION = (
    "Every seed's validation curve against its own wall clock (MSE relative to the mean frame; dotted = "
    "the target); a dot marks the evaluation that first reached the target."
)


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Time to target", "time-to-target")
    seeds = seeds_frame(results)
    if seeds.empty:
        section.blocks.append(Note("No time_to_target results: this section is omitted."))
        return section
    files = list(dict.fromkeys(seeds["file"]))
    first = results.by_path(files[0]).as_(TimeToTargetDoc)
    section.blocks.append(_intro(first))
    section.blocks.append(_summary_table(seeds, ctx, files))
    section.blocks.append(_seeds_table(seeds, ctx, files))
    budget_s = _finite_budget(first.budget).get("seconds")
    section.blocks.append(ctx.figure("time_to_target", _figure(seeds, budget_s), SEEDS_CAPTION, files))
    curves, run_files = _seed_curves(results)
    if not curves.empty:
        figure = _curves_figure(curves, first.target_mse_ratio)
        section.blocks.append(ctx.figure("time_to_target_curves", figure, CURVES_CAPTION, [*files, *run_files]))
    return section


def _seed_curves(results: ResultSet) -> tuple[pd.DataFrame, list]:
    runs, _ = referenced_runs(results, "time_to_target")
    return curve_frame(runs), [r.path for r in runs]


def _curves_figure(curves: pd.DataFrame, target: float | None):
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    labels = list(dict.fromkeys(curves["label"]))
    colours = palette_for(labels)
    for (label, seed), group in curves.groupby(["label", "seed"], sort=False):
        group = group.sort_values("step")
        ax.plot(
            group["wall_s"], group["mse_ratio"], color=colours[label], lw=1, alpha=0.8, label=f"{label} seed {seed}"
        )
        if target is not None:
            hit = group[group["mse_ratio"] <= target]
            if len(hit):
                ax.scatter(hit["wall_s"].iloc[:1], hit["mse_ratio"].iloc[:1], color=colours[label], s=25, zorder=4)
    trained = curves.loc[curves["step"] > 0, "mse_ratio"].dropna()
    if len(trained):
        ax.set_ylim(max(0.0, min(trained.min(), 1.0) - 0.05), max(1.15, min(trained.quantile(0.98), 1.6)))
    ax.axhline(1.0, color="#777", lw=1, ls="--")
    if target is not None:
        ax.axhline(target, color="#2a9d8f", lw=1, ls=":")
    ax.set_xlabel("wall clock since the first step (s)")
    ax.set_ylabel("validation MSE / mean frame's")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
