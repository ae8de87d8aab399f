"""Robustness: per swept setting, final NLL, learned or not, divergence; per model, spread and fraction learned.

The study's claim: GQN fails at 128 latent channels while the proposed model learns at 3, 32
and 128. "Learned" is the sweep writer's judgement (final MSE and foreground MSE at most 0.9x
the mean training frame's, :mod:`gqnbench.judging`); the spread is the range of final
NLL over every run of the model. The verdict in words is the claims section's rule.

A run that failed with an error (status ``failed``) trained nothing: it is counted apart, in no
"learned" fraction and no median (the failures section lists it with its error). A diverged run
did train, and did not learn: it stays in the fractions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section, status_cell
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultSet
from gqnbench.report.runs import curve_frame, main_runs, roughness
from gqnbench.report.sections.claims import sweep_claim
from gqnbench.results import as_float
from gqnbench.schema.training import SweepDoc, SweepRun, SweepSummary


def settings_frame(results: ResultSet) -> pd.DataFrame:
    """One row per sweep x model x value: seeds that trained, final/best NLL medians, learned, diverged and failed counts."""
    rows = []
    for sweep in results.of_kind("sweep"):
        doc = sweep.as_(SweepDoc)
        runs = pd.DataFrame([r.model_dump() for r in doc.runs])
        for col in ("final_val_nll", "best_val_nll", "final_mse_ratio", "final_fg_ratio"):
            runs[col] = runs[col].map(as_float) if col in runs else np.nan
        for col in ("learned", "diverged"):
            runs[col] = runs[col].fillna(False).astype(bool) if col in runs else False
        for (model, value), every in runs.groupby(["model", "value"], sort=False):
            # A failed run trained nothing: counted apart. Medians over the runs that completed: a
            # diverged run is counted, not averaged in.
            group = every[every["status"] != "failed"]
            ok = group[~group["diverged"] & group["status"].eq("completed")]
            rows.append(
                {
                    "field": doc.field,
                    "model": model,
                    "value": value,
                    "seeds": len(group),
                    "failed": len(every) - len(group),
                    "final_val_nll_median": float(ok["final_val_nll"].median()),
                    "best_val_nll_median": float(ok["best_val_nll"].median()),
                    "mse_ratio_median": float(ok["final_mse_ratio"].median()),
                    "fg_ratio_median": float(ok["final_fg_ratio"].median()),
                    "learned": int(group["learned"].sum()),
                    "diverged": int(group["diverged"].sum()),
                    "diverged_steps": ", ".join(
                        str(int(s)) for s in group.get("diverged_step", pd.Series(dtype=float)).dropna()
                    ),
                    "file": sweep.path,
                }
            )
    return pd.DataFrame(rows)


def _fallback_summary(own: list[SweepRun]) -> dict[str, float]:
    """The sweep writer's summary definitions, for files that lack a summary (gqnbench.training.sweep);
    ``own`` are the runs that trained (not failed)."""
    per_value: dict[str, list[float]] = {}
    for r in own:
        final = as_float(r.final_val_nll)
        if not r.diverged and np.isfinite(final):
            per_value.setdefault(repr(r.value), []).append(final)
    finals = [float(np.median(v)) for v in per_value.values()]
    return {
        "final_nll_spread": max(finals) - min(finals) if finals else np.nan,
        "final_nll_median": float(np.median(finals)) if finals else np.nan,
        "fraction_learned": sum(r.learned for r in own) / len(own) if own else np.nan,
        "diverged": sum(r.diverged for r in own),
    }


def _summary_row(field: str, model: str, every: list[SweepRun], written: SweepSummary | None) -> dict:
    own = [r for r in every if r.status != "failed"]
    row = {"field": field, "model": model, "settings": len({repr(r.value) for r in every}), "runs": len(own)}
    row["failed"] = len(every) - len(own)
    for key, value in _fallback_summary(own).items():
        stored = getattr(written, key) if written is not None else None
        row[key] = as_float(stored) if stored is not None else value
    row["fraction_reached_target"] = as_float(written.fraction_reached_target if written is not None else None)
    return row


def summary_frame(results: ResultSet) -> pd.DataFrame:
    """Per sweep x model: spread and median of the final NLL over settings, fraction learned, diverged runs.

    Values come from the sweep file's ``summary``; a missing one is recomputed with the writer's
    definitions (spread and median over the per-setting medians of non-diverged runs).
    """
    rows = []
    for sweep in results.of_kind("sweep"):
        doc = sweep.as_(SweepDoc)
        summary = doc.summary or {}
        for model in dict.fromkeys(r.model for r in doc.runs):
            own = [r for r in doc.runs if r.model == model]
            rows.append({**_summary_row(doc.field, model, own, summary.get(model)), "file": sweep.path})
    return pd.DataFrame(rows)


def stability_frame(results: ResultSet) -> pd.DataFrame:
    """The study's stability claim, measured on the main runs: how much each curve goes back up."""
    runs, _ = main_runs(results)
    curves = curve_frame(runs)
    rows = []
    for (model, seed), group in curves.groupby(["model", "seed"], sort=False):
        nll = group.sort_values("step")["val_nll"].to_numpy()
        rows.append({"model": model, "seed": seed, "rise_nats": roughness(nll), "file": group["file"].iloc[0]})
    frame = pd.DataFrame(rows, columns=["model", "seed", "rise_nats", "file"])
    if frame.empty:
        return frame
    return (
        frame.groupby("model", sort=False)
        .agg(seeds=("seed", "count"), rise_median=("rise_nats", "median"), rise_max=("rise_nats", "max"))
        .reset_index()
    )


def _summary_table(results: ResultSet, ctx: ReportContext, sweep_files: list) -> object:
    summary = summary_frame(results)
    return ctx.table(
        "robustness_summary",
        summary.drop(columns=["file"]),
        "Robustness summary per model",
        sweep_files,
        display=pd.DataFrame(
            {
                "swept field": summary["field"],
                "model": summary["model"].map(model_label),
                "settings / runs": [
                    f"{s} settings, {r} runs" + (f" (+{f} failed)" if f else "")
                    for s, r, f in zip(summary["settings"], summary["runs"], summary["failed"])
                ],
                "fraction of runs that learn": summary["fraction_learned"].map(F.fmt_pct),
                "fraction at target NLL": summary["fraction_reached_target"].map(F.fmt_pct),
                "diverged runs": summary["diverged"].map(F.fmt_int),
                "final NLL median": summary["final_nll_median"].map(F.fmt_float),
                "final NLL spread (max − min)": summary["final_nll_spread"].map(F.fmt_float),
            }
        ),
    )


def _claim_paragraphs(results: ResultSet) -> list[Paragraph]:
    """What "learned" means, and the study's claim judged on the sweeps."""
    sweeps = [s.as_(SweepDoc) for s in results.of_kind("sweep")]
    out = []
    criteria = {s.learned_criterion for s in sweeps} - {None}
    if criteria:
        out.append(Paragraph("*Learned* means: " + "; ".join(sorted(map(str, criteria))) + "."))
    shown, verdict = sweep_claim(results)
    seeds = sorted({len(s.seeds or []) for s in sweeps})
    out.append(
        Paragraph(
            f"**The study's claim** (the proposed model learns at z = 3, 32 and 128, GQN fails at 128): "
            f"**{verdict}** at this scale. {shown} ({', '.join(map(str, seeds))} seed(s) per setting, every "
            "setting with the same step budget as the main runs)."
        )
    )
    return out


def _settings_table(settings: pd.DataFrame, ctx: ReportContext, sweep_files: list) -> object:
    return ctx.table(
        "robustness_settings",
        settings.drop(columns=["file"]),
        "Per setting: final and best validation NLL (median over seeds), runs that learned / diverged",
        sweep_files,
        display=pd.DataFrame(
            {
                "model": settings["model"].map(model_label),
                "setting": [f"{f.rsplit('.', 1)[-1]} = {v}" for f, v in zip(settings["field"], settings["value"])],
                "final NLL": settings["final_val_nll_median"].map(F.fmt_float),
                "MSE / mean frame": settings["mse_ratio_median"].map(lambda v: F.fmt_sig(v, 3)),
                "fg MSE / mean frame": settings["fg_ratio_median"].map(lambda v: F.fmt_sig(v, 3)),
                "best NLL": settings["best_val_nll_median"].map(F.fmt_float),
                "learned": [
                    status_cell(f"{a} / {n} ({f} failed, not counted)", "warn") if f else f"{a} / {n}"
                    for a, n, f in zip(settings["learned"], settings["seeds"], settings["failed"])
                ],
                "diverged": [
                    status_cell(f"diverged: {d} (step {s})", "warn") if d else "0"
                    for d, s in zip(settings["diverged"], settings["diverged_steps"])
                ],
            }
        ),
    )


STABILITY = (
    "**Stability** (the study says the proposed model's validation curve is more stable): the total "
    "rise of each main run's validation NLL curve, i.e. the sum of every increase between consecutive "
    "evaluations, in nats. 0 means the curve only goes down."
)


def _stability_blocks(results: ResultSet, stability: pd.DataFrame, ctx: ReportContext) -> list:
    runs, _ = main_runs(results)
    table = ctx.table(
        "stability",
        stability,
        "Validation-curve stability of the main runs (sum of increases, nats)",
        [r.path for r in runs],
        display=pd.DataFrame(
            {
                "model": stability["model"].map(model_label),
                "seeds": stability["seeds"].map(F.fmt_int),
                "median total rise (nats)": stability["rise_median"].map(F.fmt_float),
                "worst seed (nats)": stability["rise_max"].map(F.fmt_float),
            }
        ),
    )
    return [Paragraph(STABILITY), table]


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Robustness", "robustness")
    settings = settings_frame(results)
    stability = stability_frame(results)
    if settings.empty and stability.empty:
        section.blocks.append(Note("No sweep results and no training runs: this section is omitted."))
        return section
    if settings.empty:
        section.blocks.append(Note("No sweep results: the per-setting robustness tables are omitted."))
    else:
        sweep_files = list(dict.fromkeys(settings["file"]))
        section.blocks.append(_summary_table(results, ctx, sweep_files))
        section.blocks += _claim_paragraphs(results)
        section.blocks.append(_settings_table(settings, ctx, sweep_files))
    if not stability.empty:
        section.blocks += _stability_blocks(results, stability, ctx)
    return section
