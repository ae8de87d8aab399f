"""The answer first: did the models learn, and what this run says about each of the study's three claims.

**Did they learn?** Per model, over the main runs: the final validation MSE and foreground MSE
relative to the mean training frame (the reference predictor that ignores the scene), beside
the nearest context view (the reference that copies the closest context image), and how many
seeds meet the one "learned" criterion (:mod:`gqnbench.judging`: both ratios <= 0.9).

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

from gqnbench.judging import LEARNED_FRACTION
from gqnbench.report import formatting as F
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section
from gqnbench.report.formatting import model_label
from gqnbench.report.inputs import ResultFile, ResultSet
from gqnbench.report.runs import curve_frame, main_runs, reference, roughness, training_doc
from gqnbench.schema.training import SweepDoc

HOLDS, FAILS, UNKNOWN = "holds", "does not hold", "cannot tell at this scale"


def _learning_row(run: ResultFile) -> dict[str, Any] | None:
    """A main run's last evaluation relative to the mean frame, its curve's rises, and the nearest
    context view's ratios; None for a run without evaluations."""
    curves = curve_frame([run]).sort_values("step")
    if curves.empty:
        return None
    doc = training_doc(run)
    last = curves.iloc[-1]
    base, nearest = reference(run), reference(run, "nearest_context")
    return {
        "model": doc.model,
        "seed": doc.seed,
        "step": int(last["step"]),
        "status": doc.status,
        "mse_ratio": last["mse_ratio"],
        "fg_ratio": last["fg_ratio"],
        "nearest_mse_ratio": nearest["val_mse"] / base["val_mse"] if base["val_mse"] else math.nan,
        "nearest_fg_ratio": nearest["val_fg_mse"] / base["val_fg_mse"] if base["val_fg_mse"] else math.nan,
        "final_val_nll": last["val_nll"],
        "rise_nats": roughness(curves["val_nll"]),
        # The same rise in units of the mean frame's MSE, so it reads at any image size.
        "rise_ratio": roughness(curves["mse_ratio"]),
        "file": run.path,
    }


def learned(per_run: pd.DataFrame) -> pd.Series:
    """The one "learned" rule: not diverged, final MSE and foreground MSE both within the margin."""
    return (
        (per_run["status"] != "diverged")
        & (per_run["mse_ratio"] <= LEARNED_FRACTION)
        & (per_run["fg_ratio"] <= LEARNED_FRACTION)
    )


def learning_frame(results: ResultSet) -> pd.DataFrame:
    """Per model: seeds, final MSE and foreground MSE relative to the mean frame (median, min, max),
    the nearest context view's ratios, and the number of seeds that learned."""
    runs, _ = main_runs(results)
    per_run = pd.DataFrame([row for row in map(_learning_row, runs) if row is not None])
    if per_run.empty:
        return per_run
    per_run["learned"] = learned(per_run)
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
    """HOLDS when every metagqn seed is below every GQN seed in ``column``, FAILS when the reverse,
    otherwise (overlap, or a model without runs) UNKNOWN."""
    if per_run.empty:
        return UNKNOWN
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
    """Per (model, z): whether each run learned, and each run's final MSE relative to the mean frame
    (runs that did not record the ratio are left out of the ratios, not counted as 0)."""
    learned: dict[tuple[str, int], list[bool]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    for sweep in results.of_kind("sweep"):
        doc = sweep.as_(SweepDoc)
        if doc.field != "model.z_channels":
            continue
        for r in doc.runs:
            if r.status in ("completed", "diverged"):
                key = (r.model, int(r.value))
                learned.setdefault(key, []).append(r.learned)
                if r.final_mse_ratio is not None:
                    ratios.setdefault(key, []).append(float(r.final_mse_ratio))
    return learned, ratios


# Claim 3's settings: metagqn must learn at each; GQN must fail at the largest.
CLAIM3_SETTINGS = (3, 32, 128)


def sweep_verdict(learned: dict[tuple[str, int], list[bool]]) -> tuple[str, str]:
    """Claim 3's verdict from whether each (model, z) run learned, and a note on an UNKNOWN verdict.

    HOLDS when metagqn learned in every run at z = 3, 32 and 128 and GQN in no run at 128;
    UNKNOWN without a run at each of those settings, or when metagqn learned at none of them
    (the runs are too short to tell); FAILS otherwise.
    """
    needed = [("metagqn", v) for v in CLAIM3_SETTINGS] + [("gqn", 128)]
    if any(k not in learned for k in needed):
        return UNKNOWN, ""
    meta_all = all(all(learned[("metagqn", v)]) for v in CLAIM3_SETTINGS)
    if meta_all and not any(learned[("gqn", 128)]):
        return HOLDS, ""
    if not any(any(learned[("metagqn", v)]) for v in CLAIM3_SETTINGS):
        return UNKNOWN, " (metagqn learned at no setting)"
    return FAILS, ""


def _sweep_shown(learned: dict[tuple[str, int], list[bool]], ratios: dict[tuple[str, int], list[float]]) -> str:
    """Per model and z: seeds learned / seeds run, and the median final MSE ratio where recorded."""
    values = sorted({v for _, v in learned})

    def cell(model: str, value: int) -> str:
        got = learned.get((model, value))
        if not got:
            return f"z={value}: no run"
        r = ratios.get((model, value))
        return f"z={value}: {sum(got)}/{len(got)}" + (f" ({pd.Series(r).median():.3f})" if r else "")

    return (
        "; ".join(f"{model_label(m)} learned at " + ", ".join(cell(m, v) for v in values) for m in ("metagqn", "gqn"))
        + " (in brackets: final MSE / mean frame's, median over seeds)"
    )


def sweep_claim(results: ResultSet) -> tuple[str, str]:
    """Claim 3 from the latent-size sweep: what this run shows, and the verdict."""
    learned, ratios = _sweep_rows(results)
    if not learned:
        return "no latent-size sweep in these results", UNKNOWN
    verdict, note = sweep_verdict(learned)
    return _sweep_shown(learned, ratios) + note, verdict


# The study's three claims: what the claim is and what the study measured.
CLAIMS = (
    ("1. The proposed model reaches a lower validation NLL than GQN", "11,353 vs 11,439 nats at 35,000 steps (64x64)"),
    (
        "2. Its validation curve is more stable",
        "Figure 6: GQN's curve rises and falls, the proposed model's falls steadily",
    ),
    (
        "3. It learns at z = 3, 32 and 128; GQN fails at 128",
        "Figure 7: GQN learns at 3 and 32, fails early at 128; the proposed model learns at all three",
    ),
)


def _by_model(per_run: pd.DataFrame, column: str, digits: int) -> str:
    """``column`` per model, metagqn first: median (min–max) and the number of seeds."""
    parts = []
    for m in ("metagqn", "gqn"):
        own = per_run.loc[per_run["model"] == m, column]
        parts.append(f"{model_label(m)} {_range(own, digits)} ({len(own)} seeds)")
    return "; ".join(parts)


def _curve_claims_shown(per_run: pd.DataFrame) -> tuple[str, str]:
    """What this run shows for claims 1 (final NLL) and 2 (rise of the curve)."""
    if per_run.empty:
        return ("no main training runs in these results",) * 2
    step = int(per_run["step"].min())
    nll = f"final validation NLL at step {step:,}, median (min–max): {_by_model(per_run, 'final_val_nll', 1)}"
    stability = (
        "total rise of the validation curve (sum of its increases, in units of the mean frame's MSE), median "
        f"(min–max): {_by_model(per_run, 'rise_ratio', 3)}"
    )
    return nll, stability


def judged(verdict: str, anyone_learned: bool) -> str:
    """A claim is judged only when some run learned; at the mean-frame level nothing can be told."""
    return verdict if anyone_learned else UNKNOWN


def claims_frame(results: ResultSet) -> pd.DataFrame:
    """The study's three claims: what the study says, what this run shows, and the verdict."""
    per_run = learning_frame(results)
    anyone_learned = not per_run.empty and bool(per_run["learned"].any())
    nll_shown, stability_shown = _curve_claims_shown(per_run)
    sweep_shown, sweep_verdict = sweep_claim(results)
    shown_and_verdict = [
        (nll_shown, _compare(per_run, "final_val_nll")),
        (stability_shown, _compare(per_run, "rise_ratio")),
        (sweep_shown, sweep_verdict),
    ]
    rows = [
        {"claim": claim, "study": study, "this run": shown, "verdict": judged(verdict, anyone_learned)}
        for (claim, study), (shown, verdict) in zip(CLAIMS, shown_and_verdict)
    ]
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


def _learning_intro(per_run: pd.DataFrame) -> Paragraph:
    """What the ratios mean, the "learned" rule, and whether every main run met it."""
    every = bool(per_run.groupby("model")["learned"].all().all())
    return Paragraph(
        "Ratios are to the **mean training frame** (always predicting the average image; 1.0 = no scene "
        "knowledge, an untrained model starts near 2). A run has *learned* when its final MSE and its MSE on "
        f"foreground pixels are both at most {LEARNED_FRACTION}x the mean frame's. The nearest context view "
        "copies the context image whose camera is closest to the query's. "
        + (
            "Every main run of every model learned."
            if every
            else "**Not every run learned**: the claims below are judged only where runs learned."
        )
    )


def _scale_paragraph(per_run: pd.DataFrame) -> Paragraph:
    """Why a verdict here speaks for this scale only."""
    return Paragraph(
        f"What this run does not show: the study trained 35,000 steps at 64x64 with batch 36; these runs end at "
        f"{int(per_run['step'].max()):,} steps at the size of their preset, so a verdict here is about this scale "
        "only, and absolute NLLs are not comparable with the study's (compare MSE ratios)."
    )


def build(results: ResultSet, ctx: ReportContext) -> Section:
    """The report's first section: did the main runs learn, and the verdict on each claim."""
    section = Section("The answer: did the models learn, and the study's claims", "claims")
    per_run = learning_frame(results)
    if per_run.empty:
        section.blocks.append(Note("No main training runs in these results: nothing to judge."))
        return section
    files = list(dict.fromkeys(per_run["file"]))
    section.blocks.append(_learning_intro(per_run))
    caption = "Did the models learn? Final validation errors relative to the mean frame, median (min–max) over seeds"
    section.blocks.append(
        ctx.table(
            "learning_summary", per_run.drop(columns=["file"]), caption, files, display=_learning_display(per_run)
        )
    )
    claims = claims_frame(results)
    sources = files + [s.path for s in results.of_kind("sweep")]
    section.blocks.append(
        ctx.table("claims", claims, "The study's claims and what this run shows", sources, display=claims)
    )
    section.blocks.append(_scale_paragraph(per_run))
    if (per_run.groupby("model").size() < 3).any():
        section.blocks.append(Note("Fewer than 3 seeds for some model: seed ranges are thin."))
    return section
