"""The --baseline section: every shared metric with current and baseline medians, delta and a regression flag."""

from __future__ import annotations

import math

import pandas as pd

from gqnbench.report import formatting as F
from gqnbench.report.compare import collect_metrics, compare_metrics
from gqnbench.report.context import ReportContext
from gqnbench.report.document import Note, Paragraph, Section, status_cell
from gqnbench.report.inputs import ResultSet


def _value(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return F.MISSING
    if unit == "s":
        return (
            F.fmt_until(value, 4)
            if math.isinf(value)
            else f"{value * 1e3:,.2f} ms"
            if value < 10
            else f"{value:,.1f} s"
        )
    if unit == "bytes":
        return f"{F.mib(value):,.1f} MiB"
    if unit == "steps":
        return F.fmt_until(value, 0)
    if unit == "nats":
        return F.fmt_float(value, 2)
    return F.fmt_sig(value, 4)


def _status(status: str, delta: float) -> str:
    if status == "regression":
        return status_cell("REGRESSION", "bad")
    if status == "improved":
        return status_cell("improved", "ok")
    if status == "missing":
        return status_cell("missing in current", "warn")
    return {"ok": "ok", "new": "new (no baseline)"}[status]


def display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metric": table["key"],
            "current": [_value(v, u) for v, u in zip(table["current"], table["unit"])],
            "baseline": [_value(v, u) for v, u in zip(table["baseline"], table["unit"])],
            "delta": [
                F.MISSING if math.isnan(d) else ("+∞%" if math.isinf(d) else f"{d:+.1f}%") for d in table["delta_pct"]
            ],
            "threshold": table["threshold_pct"].map(lambda t: f"{t:.0f}%"),
            "spread (IQR/median)": table["current_spread"].map(F.fmt_pct),
            "status": [_status(s, d) for s, d in zip(table["status"], table["delta_pct"])],
        }
    )


def build(current: ResultSet, baseline: ResultSet, ctx: ReportContext, threshold: float) -> Section:
    section = Section("Comparison with the baseline", "comparison")
    table = compare_metrics(collect_metrics(current), collect_metrics(baseline), threshold)
    if table.empty:
        section.blocks.append(Note("Neither the results nor the baseline hold comparable metrics."))
        return section
    n_reg = int(table["regression"].sum())
    n_shared = int(table["status"].isin(["regression", "improved", "ok"]).sum())
    section.blocks.append(
        Paragraph(
            f"**{n_reg} regression(s)** among {n_shared} metrics present in both sets (threshold {threshold * 100:.0f}%: "
            "a median more than this much higher than the baseline's is flagged; all metrics are lower-is-better). "
            "Compare on medians against a pinned baseline, and read deltas smaller than the spread as noise."
        )
    )
    sources = [f.path for f in current.files] + [f.path for f in baseline.files]
    section.blocks.append(ctx.table("comparison", table, "Current vs baseline", sources, display=display(table)))
    return section
