"""The answer first: did the models learn, and what this run says about each of the study's three claims.

**Did they learn?** Per model, over the main runs: the final validation MSE and foreground MSE
relative to the mean training frame (the reference predictor that ignores the scene), beside
the nearest context view (the reference that copies the closest context image), and how many
seeds meet the one "learned" criterion (:mod:`gqnbench.training.judging`: both ratios <= 0.9).

**The claims** (SPEC section 1), each judged from the numbers with a rule written here:

1. *The proposed model reaches a lower validation NLL.* Final validation NLL of the main runs at
   the last step every model reached. Holds when every metagqn seed ends below every GQN seed;
   does not hold when every GQN seed ends below every metagqn seed; otherwise the seed ranges
   overlap and the run cannot tell.
2. *Its validation curve is more stable.* The total rise of each main run's validation curve (sum
   of the increases between evaluations, in units of the mean frame's MSE). Same rule on the seed
   ranges.
3. *It learns at z = 3, 32 and 128, where GQN fails at 128.* From the latent-size sweep: holds when
   metagqn learned at every setting and GQN did not learn at 128; does not hold when metagqn failed
   at a setting or GQN learned at 128; cannot tell without a run at every setting.

A claim whose runs did not learn (both models at the mean-frame level) is never judged: the
verdict is then "cannot tell at this scale".
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.inputs import ResultSet
from gqnbench.report.runs import curve_frame, main_runs, reference, roughness
from gqnbench.report.study import LEARNED_FRACTION, model_label

HOLDS, FAILS, UNKNOWN = "holds", "does not hold", "cannot tell at this scale"


def learning_frame(results: ResultSet) -> pd.DataFrame:
    """Per model: seeds, final MSE and foreground MSE relative to the mean frame (median, min, max),
    the nearest context view's ratios, and the number of seeds that learned."""
    runs, _ = main_runs(results)
    rows = []
    for run in runs:
        curves = curve_frame([run])
        if curves.empty:
            continue
        last = curves.sort_values("step").iloc[-1]
        base, nearest = reference(run), reference(run, "nearest_context")
        rows.append(
            {
                "model": run.doc["model"],
                "seed": run.doc.get("seed"),
                "step": int(last["step"]),
                "status": run.doc.get("status"),
                "mse_ratio": last["mse_ratio"],
                "fg_ratio": last["fg_ratio"],
                "nearest_mse_ratio": nearest["val_mse"] / base["val_mse"] if base["val_mse"] else math.nan,
                "nearest_fg_ratio": nearest["val_fg_mse"] / base["val_fg_mse"] if base["val_fg_mse"] else math.nan,
                "final_val_nll": last["val_nll"],
                "rise_nats": roughness(curves.sort_values("step")["val_nll"]),
                # The same rise in units of the mean frame's MSE, so it reads at any image size.
                "rise_ratio": roughness(curves.sort_values("step")["mse_ratio"]),
                "file": run.path,
            }
        )
    per_run = pd.DataFrame(rows)
    if per_run.empty:
        return per_run
    per_run["learned"] = (
        (per_run["status"] != "diverged")
        & (per_run["mse_ratio"] <= LEARNED_FRACTION)
        & (per_run["fg_ratio"] <= LEARNED_FRACTION)
    )
    return per_run


def _range(values: pd.Series, digits: int = 3) -> str:
    values = values.dropna()
    if values.empty:
        return F.MISSING
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.median():.{digits}f} ({values.min():.{digits}f}–{values.max():.{digits}f})"


def _separated(lower: pd.Series, higher: pd.Series) -> bool:
    """Every value of ``lower`` is below every value of ``higher``."""
    return bool(len(lower) and len(higher) and lower.max() < higher.min())


def _compare(per_run: pd.DataFrame, column: str) -> str:
    gqn = per_run.loc[per_run["model"] == "gqn", column].dropna()
    meta = per_run.loc[per_run["model"] == "metagqn", column].dropna()
    if gqn.empty or meta.empty:
        return UNKNOWN
    if _separated(meta, gqn):
        return HOLDS
    if _separated(gqn, meta):
        return FAILS
    return UNKNOWN


def _sweep_rows(results: ResultSet) -> tuple[dict[tuple[str, int], list[bool]], dict[tuple[str, int], list[float]]]:
    """Per (model, z): whether each run learned, and each run's final MSE relative to the mean frame."""
    learned: dict[tuple[str, int], list[bool]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    for sweep in results.of_kind("sweep"):
        if sweep.doc.get("field") != "model.z_channels":
            continue
        for r in sweep.doc["runs"]:
            if r.get("status") in ("completed", "diverged"):
                key = (r["model"], int(r["value"]))
                learned.setdefault(key, []).append(bool(r.get("learned")))
                if r.get("final_mse_ratio") is not None:
                    ratios.setdefault(key, []).append(float(r["final_mse_ratio"]))
    return learned, ratios


def sweep_claim(results: ResultSet) -> tuple[str, str]:
    rows, ratios = _sweep_rows(results)
    if not rows:
        return "no latent-size sweep in these results", UNKNOWN
    values = sorted({v for _, v in rows})

    def cell(model: str, value: int) -> str:
        got = rows.get((model, value))
        if not got:
            return f"z={value}: no run"
        r = ratios.get((model, value))
        return f"z={value}: {sum(got)}/{len(got)}" + (f" ({pd.Series(r).median():.3f})" if r else "")

    shown = "; ".join(
        f"{model_label(m)} learned at " + ", ".join(cell(m, v) for v in values) for m in ("metagqn", "gqn")
    ) + " (in brackets: final MSE / mean frame's, median over seeds)"
    needed = [("metagqn", v) for v in (3, 32, 128)] + [("gqn", 128)]
    if any(k not in rows for k in needed):
        return shown, UNKNOWN
    meta_all = all(all(rows[("metagqn", v)]) for v in (3, 32, 128))
    gqn_fails = not any(rows[("gqn", 128)])
    if meta_all and gqn_fails:
        return shown, HOLDS
    if not meta_all and not any(any(rows[("metagqn", v)]) for v in (3, 32, 128)):
        return shown + " (metagqn learned at no setting)", UNKNOWN
    return shown, FAILS


def claims_frame(results: ResultSet) -> pd.DataFrame:
    """The study's three claims: what the study says, what this run shows, and the verdict."""
    per_run = learning_frame(results)
    rows: list[dict[str, Any]] = []
    nobody_learned = per_run.empty or not per_run["learned"].any()

    def judged(verdict: str) -> str:
        return UNKNOWN if nobody_learned else verdict

    if per_run.empty:
        nll_shown = stab_shown = "no main training runs in these results"
    else:
        step = int(per_run["step"].min())

        def by_model(column: str, digits: int) -> str:
            parts = []
            for m in ("metagqn", "gqn"):
                own = per_run.loc[per_run["model"] == m, column]
                parts.append(f"{model_label(m)} {_range(own, digits)} ({len(own)} seeds)")
            return "; ".join(parts)

        nll_shown = f"final validation NLL at step {step:,}, median (min–max): {by_model('final_val_nll', 1)}"
        stab_shown = (
            "total rise of the validation curve (sum of its increases, in units of the mean frame's MSE), median "
            f"(min–max): {by_model('rise_ratio', 3)}"
        )
    rows.append(
        {
            "claim": "1. The proposed model reaches a lower validation NLL than GQN",
            "study": "11,353 vs 11,439 nats at 35,000 steps (64x64)",
            "this run": nll_shown,
            "verdict": judged(_compare(per_run, "final_val_nll")) if not per_run.empty else UNKNOWN,
        }
    )
    rows.append(
        {
            "claim": "2. Its validation curve is more stable",
            "study": "Figure 6: GQN's curve rises and falls, the proposed model's falls steadily",
            "this run": stab_shown,
            "verdict": judged(_compare(per_run, "rise_ratio")) if not per_run.empty else UNKNOWN,
        }
    )
    shown, verdict = sweep_claim(results)
    rows.append(
        {
            "claim": "3. It learns at z = 3, 32 and 128; GQN fails at 128",
            "study": "Figure 7: GQN learns at 3 and 32, fails early at 128; the proposed model learns at all three",
            "this run": shown,
            "verdict": judged(verdict),
        }
    )
    return pd.DataFrame(rows)


def _learning_display(per_run: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for model, group in per_run.groupby("model", sort=False):
        rows.append(
            {
                "model": model_label(model),
                "seeds learned": f"{int(group['learned'].sum())} / {len(group)}",
                "final step": F.fmt_int(group["step"].max()),
                "MSE / mean frame": _range(group["mse_ratio"]),
                "foreground MSE / mean frame": _range(group["fg_ratio"]),
                "nearest context view (MSE / fg)": (
                    f"{group['nearest_mse_ratio'].median():.3f} / {group['nearest_fg_ratio'].median():.3f}"
                ),
            }
        )
    return pd.DataFrame(rows)


def build(results: ResultSet, ctx: ReportContext) -> Section:
    section = Section("The answer: did the models learn, and the study's claims", "claims")
    per_run = learning_frame(results)
    if per_run.empty:
        section.blocks.append(Note("No main training runs in these results: nothing to judge."))
        return section
    files = list(dict.fromkeys(per_run["file"]))
    learned = per_run.groupby("model")["learned"].all()
    section.blocks.append(
        Paragraph(
            "Ratios are to the **mean training frame** (always predicting the average image; 1.0 = no scene "
            "knowledge, an untrained model starts near 2). A run has *learned* when its final MSE and its MSE on "
            f"foreground pixels are both at most {LEARNED_FRACTION}x the mean frame's. The nearest context view "
            "copies the context image whose camera is closest to the query's. "
            + (
                "Every main run of every model learned."
                if bool(learned.all())
                else "**Not every run learned**: the claims below are judged only where runs learned."
            )
        )
    )
    section.blocks.append(
        ctx.table(
            "learning_summary",
            per_run.drop(columns=["file"]),
            "Did the models learn? Final validation errors relative to the mean frame, median (min–max) over seeds",
            files,
            display=_learning_display(per_run),
        )
    )
    claims = claims_frame(results)
    sources = files + [s.path for s in results.of_kind("sweep")]
    section.blocks.append(
        ctx.table("claims", claims, "The study's claims and what this run shows", sources, display=claims)
    )
    scale = per_run["step"].max()
    section.blocks.append(
        Paragraph(
            f"What this run does not show: the study trained 35,000 steps at 64x64 with batch 36; these runs end at "
            f"{int(scale):,} steps at the size of their preset, so a verdict here is about this scale only, and "
            "absolute NLLs are not comparable with the study's (compare MSE ratios)."
        )
    )
    counts = per_run.groupby("model").size()
    if (counts < 3).any():
        section.blocks.append(Note("Fewer than 3 seeds for some model: seed ranges are thin."))
    return section
