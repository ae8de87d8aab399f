"""The study's Table 1 reproduced: parameter counts (two ways) and validation NLL at a fixed step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gqnbench.judging import (
    METAGQN_UNUSED_PRIOR_HEAD,
    METAGQN_USED_BY_OBJECTIVE,
    STUDY_BATCH,
    STUDY_CONSTANT,
    STUDY_CONTEXT_VIEWS,
    STUDY_IMAGE_SIZE,
    STUDY_MSE,
    STUDY_NLL,
    STUDY_PARAMS,
    STUDY_STEP,
)
from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.runs import curve_frame, main_runs, reference, run_info
from gqnbench.results import as_float
from gqnbench.schema.costs import CostsDoc, ParamCount

MODELS = ("gqn", "metagqn")


PAPER_SIZES = {"image_size": 64, "hidden_channels": 128, "r_channels": 256, "num_layers": 12}


def _scale(config: dict[str, Any] | None) -> str | None:
    if not isinstance(config, dict) or "image_size" not in config:
        return None
    size = config["image_size"]
    return (
        f"{size}x{size}, L={config.get('num_layers')}, hidden {config.get('hidden_channels')}, "
        f"r {config.get('r_channels')}, z {config.get('z_channels')}"
    )


def _param_sources(costs: CostsDoc) -> list[tuple[dict[str, ParamCount], str | None]]:
    """The parameter counts of a costs file with the preset each was counted at: its own, and
    (under ``reference``) the paper preset's."""
    sources = [(costs.params or {}, costs.preset)]
    if costs.reference is not None:
        sources.append((costs.reference.params or {}, costs.reference.preset))
    return sources


def _param_row(model: str, entry: ParamCount, source_preset: str | None, path: Path) -> dict[str, Any]:
    config = entry.config
    # The harness counts at paper size by default, even inside a cpu-preset costs file.
    paper_sized = config is not None and all(config.get(k) == v for k, v in PAPER_SIZES.items())
    total = float(entry.total)
    used = as_float(entry.used_by_objective)  # NaN when the file did not count the used parameters
    return {
        "model": model,
        "preset": "paper" if paper_sized else source_preset,
        "scale": _scale(config),
        "study_params": STUDY_PARAMS.get(model, math.nan),
        "total": total,
        "used_by_objective": used,
        "unused": total - used,
        "total_minus_study": total - STUDY_PARAMS.get(model, math.nan),
        "file": path,
    }


def params_frame(results: ResultSet) -> pd.DataFrame:
    """Parameter counts from every costs file: model, preset, scale, total, used_by_objective, study's count.

    The preset is ``paper`` when the entry's ``config`` has the paper's sizes, else the preset of
    the part of the file it was counted under (the file's, or ``reference``'s). The study's count
    is NaN for a model the study did not have.
    """
    rows = [
        _param_row(model, entry, preset, costs.path)
        for costs in results.of_kind("costs")
        for params, preset in _param_sources(costs.as_(CostsDoc))
        for model, entry in params.items()
    ]
    columns = [
        "model", "preset", "scale", "study_params", "total", "used_by_objective", "unused", "total_minus_study", "file",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def nll_step(curves: pd.DataFrame) -> int | None:
    """The fixed step of the NLL comparison: the last eval step that every model reached."""
    if curves.empty:
        return None
    last_per_model = curves.groupby("model")["step"].max()
    candidate = int(last_per_model.min())
    # Cadences may differ between models: take the largest step every model evaluated at.
    shared = set.intersection(*(set(g["step"]) for _, g in curves.groupby("model")))
    shared = [s for s in shared if s <= candidate]
    return int(max(shared)) if shared else None


def _study_rows() -> list[dict[str, Any]]:
    """The study's own Table 1 rows (35,000 steps at 64x64): no seeds, so no range."""
    return [
        {
            "source": "study",
            "model": model,
            "step": STUDY_STEP,
            "preset": "paper",
            "image_size": STUDY_IMAGE_SIZE,
            "batch_size": STUDY_BATCH,
            "context_views": STUDY_CONTEXT_VIEWS,
            "seeds": math.nan,
            "val_nll_median": STUDY_NLL[model],
            "val_nll_min": math.nan,
            "val_nll_max": math.nan,
            "val_mse_median": STUDY_MSE[model],
            "nll_constant": STUDY_CONSTANT,
        }
        for model in MODELS
    ]


def _the_one(values: set[Any]) -> Any:
    """The value all seeds share, or NaN when they differ (a median over mixed sizes has no one constant)."""
    return values.pop() if len(values) == 1 else math.nan


def _ours_row(model: str, group: pd.DataFrame, infos: dict[Path, dict[str, Any]], step: int) -> dict[str, Any]:
    """One model's row at ``step``: median and range over its seeds; scale from its first run."""
    first = infos[group["file"].iloc[0]]
    return {
        "source": "ours",
        "model": model,
        "step": step,
        "preset": first["preset"],
        "image_size": _the_one({infos[f]["image_size"] for f in group["file"]}),
        "batch_size": first["batch_size"],
        "context_views": first["val_context"],
        "seeds": int(group["seed"].nunique()),
        "val_nll_median": float(np.median(group["val_nll"])),
        "val_nll_min": float(group["val_nll"].min()),
        "val_nll_max": float(group["val_nll"].max()),
        "val_mse_median": float(np.median(group["val_mse"])),
        "mse_ratio_median": float(np.median(group["mse_ratio"])),
        "fg_ratio_median": float(np.median(group["fg_ratio"])),
        "nll_constant": _the_one({round(infos[f]["nll_constant"], 6) for f in group["file"]}),
    }


def nll_frame(runs: list[ResultFile]) -> tuple[pd.DataFrame, int | None]:
    """Validation NLL at the fixed step: the study's rows and ours (median and range over seeds)."""
    rows = _study_rows()
    curves = curve_frame(runs)
    step = nll_step(curves)
    if step is None:
        return pd.DataFrame(rows), None
    infos = {r.path: run_info(r) for r in runs}
    at_step = curves[curves["step"] == step]
    rows += [_ours_row(model, group, infos, step) for model, group in at_step.groupby("model", sort=False)]
    rows += _reference_rows(runs, step)
    return pd.DataFrame(rows), step


def _reference_rows(runs: list[ResultFile], step: int) -> list[dict[str, Any]]:
    """The two reference predictors on the same validation episode, as rows beside the models."""
    if not runs:
        return []
    info = run_info(runs[0])
    base = reference(runs[0])
    rows = []
    for name, label in (("mean_image", "mean training frame"), ("nearest_context", "nearest context view")):
        ref = reference(runs[0], name)
        if not math.isfinite(ref["val_mse"]):
            continue
        rows.append(
            {
                "source": "reference",
                "model": label,
                "step": step,
                "preset": info["preset"],
                "image_size": info["image_size"],
                "batch_size": info["batch_size"],
                "context_views": info["val_context"],
                "seeds": math.nan,
                "val_nll_median": ref["val_nll"],
                "val_nll_min": math.nan,
                "val_nll_max": math.nan,
                "val_mse_median": ref["val_mse"],
                "mse_ratio_median": ref["val_mse"] / base["val_mse"],
                "fg_ratio_median": ref["val_fg_mse"] / base["val_fg_mse"] if base["val_fg_mse"] else math.nan,
                "nll_constant": info["nll_constant"],
            }
        )
    return rows


def _params_display(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": frame["model"].map(model_label),
            "counted at preset": frame["preset"].fillna(F.MISSING),
            "sizes": frame["scale"].fillna(F.MISSING),
            "study's count": frame["study_params"].map(F.fmt_int),
            "ours: all parameters": frame["total"].map(F.fmt_int),
            "ours: used by the objective": frame["used_by_objective"].map(F.fmt_int),
            "ours: never used": frame["unused"].map(F.fmt_int),
            "ours (all) − study": frame["total_minus_study"].map(F.fmt_int),
        }
    )


def _nll_display(frame: pd.DataFrame) -> pd.DataFrame:
    def scale(row: pd.Series) -> str:
        size = F.fmt_int(row["image_size"])
        return f"{row['preset']}, {size}x{size}, batch {F.fmt_int(row['batch_size'])}"

    def spread(row: pd.Series) -> str:
        if pd.isna(row["val_nll_min"]):
            return F.MISSING
        return f"{F.fmt_float(row['val_nll_min'])} – {F.fmt_float(row['val_nll_max'])}"

    return pd.DataFrame(
        {
            "model": frame["model"].map(model_label),
            "source": frame["source"],
            "step": frame["step"].map(F.fmt_int),
            "scale": frame.apply(scale, axis=1),
            "context views": frame["context_views"].map(F.fmt_int),
            "seeds": frame["seeds"].map(F.fmt_int),
            "val NLL (nats/image), median": frame["val_nll_median"].map(F.fmt_float),
            "min – max over seeds": frame.apply(spread, axis=1),
            "per-pixel MSE": frame["val_mse_median"].map(lambda v: F.fmt_sig(v, 4)),
            "MSE / mean frame": frame.get("mse_ratio_median", pd.Series(math.nan, index=frame.index)).map(
                lambda v: F.fmt_sig(v, 3)
            ),
            "fg MSE / mean frame": frame.get("fg_ratio_median", pd.Series(math.nan, index=frame.index)).map(
                lambda v: F.fmt_sig(v, 3)
            ),
            "NLL constant (nats)": frame["nll_constant"].map(F.fmt_float),
            "NLL − constant": (frame["val_nll_median"] - frame["nll_constant"]).map(F.fmt_float),
        }
    )


def _summary_display(params: pd.DataFrame, nll: pd.DataFrame) -> pd.DataFrame:
    rows = []
    # The study's two models, then one row per other model measured (a plugin: no study numbers).
    measured = [*params["model"], *nll.loc[nll["source"] == "ours", "model"]]
    for model in (*MODELS, *(m for m in dict.fromkeys(measured) if m not in MODELS)):
        p = params[params["model"] == model]
        p = p[p["preset"] == "paper"] if (p["preset"] == "paper").any() else p
        ours = nll[(nll["source"] == "ours") & (nll["model"] == model)]
        rows.append(
            {
                "model": model_label(model),
                "parameters (study)": F.fmt_int(STUDY_PARAMS.get(model, math.nan)),
                "parameters (ours: all / used)": (
                    f"{F.fmt_int(p['total'].iloc[0])} / {F.fmt_int(p['used_by_objective'].iloc[0])}"
                    if len(p)
                    else F.MISSING
                ),
                "val NLL (study, 35,000 steps, 64x64)": F.fmt_sci(STUDY_NLL.get(model, math.nan)),
                "val NLL (ours)": F.fmt_float(ours["val_nll_median"].iloc[0]) if len(ours) else F.MISSING,
                "per-pixel MSE (study / ours)": (
                    f"{F.fmt_sig(STUDY_MSE.get(model, math.nan), 3)} / "
                    + (F.fmt_sig(ours["val_mse_median"].iloc[0], 3) if len(ours) else F.MISSING)
                ),
            }
        )
    return pd.DataFrame(rows)


def _mean_image_text(runs: list[ResultFile]) -> str:
    """A sentence on the mean-frame baseline (the best prediction that ignores the scene), when recorded."""
    found = {(round(ref["val_nll"], 3), round(ref["val_mse"], 6)) for ref in map(reference, runs)}
    if len(found) != 1:
        return ""
    nll, mse = found.pop()
    return (
        f"For scale: predicting the mean training frame for every query (ignoring the scene) scores NLL "
        f"{F.fmt_float(nll)} (MSE {F.fmt_sig(mse, 3)}) on the same validation set. "
    )


def _intro(nll: pd.DataFrame, step: int | None) -> Paragraph:
    ours = nll[nll["source"] == "ours"]
    scale_note = ""
    if len(ours):
        row = ours.iloc[0]
        scale_note = (
            f" Our NLL is the median over {F.fmt_int(row['seeds'])} seeds at step {F.fmt_int(step)} of the "
            f"`{row['preset']}` preset ({F.fmt_int(row['image_size'])}x{F.fmt_int(row['image_size'])} images, "
            f"batch {F.fmt_int(row['batch_size'])}, {F.fmt_int(row['context_views'])} context views), not the study's "
            f"{STUDY_STEP:,} steps at {STUDY_IMAGE_SIZE}x{STUDY_IMAGE_SIZE}."
        )
    return Paragraph("The study's Table 1 (Shepard-Metzler, 7 parts) next to what this suite measured." + scale_note)


WHY_TWO_COUNTS = (
    "**Why two counts.** *All parameters* counts every parameter of the module; *used by the objective* "
    "counts those that receive a gradient from one training step. For GQN the two agree. The study's "
    f"{STUDY_PARAMS['metagqn']:,} for the proposed model includes a prior head (η_π, "
    f"{METAGQN_UNUSED_PRIOR_HEAD:,} parameters) that the authors' code keeps but the proposed objective "
    f"never uses (there is no KL term), so only {METAGQN_USED_BY_OBJECTIVE:,} parameters are trained. "
    "Ours shows the unused head when the model was built with `include_unused_prior_head`."
)


def _params_blocks(params: pd.DataFrame, ctx: ReportContext) -> list:
    if params.empty:
        return [Note("No parameter counts (costs.json `params`): the parameter rows are omitted.")]
    raw = params.drop(columns=["file"])
    table = ctx.table(
        "table1_params", raw, "Parameters, counted two ways", params["file"], display=_params_display(params)
    )
    return [table, Paragraph(WHY_TWO_COUNTS)]


def _constant_paragraph(nll: pd.DataFrame, runs: list[ResultFile], how: str) -> Paragraph:
    """Why NLLs at different image sizes differ by a constant, and which runs are ours."""
    ours = nll[nll["source"] == "ours"]
    sizes = sorted({int(s) for s in ours["image_size"].dropna()})
    size_text = ", ".join(
        f"{s}x{s}: {3 * s * s:,} × ½ln(2π) = {3 * s * s * 0.5 * math.log(2 * math.pi):,.1f}" for s in sizes
    )
    return Paragraph(
        "The NLL is the study's metric: a unit-variance Gaussian over all pixel values in [0, 1], in nats "
        "per image, so NLL = constant + ½ · (number of values) · MSE. The constant depends on the image size: "
        f"at 64x64 it is 12,288 × ½ln(2π) = {STUDY_CONSTANT:,.1f}"
        + (f"; ours at {size_text}" if size_text else "")
        + ". NLLs at different image sizes are therefore not comparable; the **per-pixel MSE is**. "
        + _mean_image_text(runs)
        + f"Our runs: {how}."
    )


def _nll_blocks(nll: pd.DataFrame, step: int | None, runs: list[ResultFile], how: str, ctx: ReportContext) -> list:
    if step is None:
        return [Note("No training runs: the validation NLL rows are omitted.")]
    caption = f"Validation NLL at a fixed step (study: {STUDY_STEP:,}; ours: {step:,})"
    table = ctx.table("table1_nll", nll, caption, [r.path for r in runs], display=_nll_display(nll))
    return [table, _constant_paragraph(nll, runs, how)]


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("Table 1: the study's numbers beside ours", "table1")
    params = params_frame(results)
    runs, how = main_runs(results)
    nll, step = nll_frame(runs)
    if params.empty and step is None:
        section.blocks.append(Note("No costs.json (parameter counts) and no training runs: Table 1 is omitted."))
        return section
    summary_sources = [*params["file"], *(r.path for r in runs)] or []
    section.blocks.append(_intro(nll, step))
    summary = _summary_display(params, nll)
    section.blocks.append(ctx.table("table1_summary", summary, "Table 1 (compact, as in the study)", summary_sources))
    section.blocks += _params_blocks(params, ctx)
    section.blocks += _nll_blocks(nll, step, runs, how, ctx)
    return section
