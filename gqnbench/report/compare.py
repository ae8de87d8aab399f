"""Compare two result sets metric by metric: the one comparison engine of gqnbench.

Used by ``python -m gqnbench.report --baseline`` (the report's comparison section) and by the
nightly regression gate (:mod:`gqnbench.nightly.gate`, which layers its own rules on these
rows instead of comparing again)::

    current = collect_metrics(load_results(["reports/today/results"]))
    baseline = collect_metrics(load_results(["reports/yesterday/results"]))
    rows = compare_rows(current, baseline, threshold={"time": 0.05, "ratio": 0.05, "memory": 0.10})
    table = compare_metrics(current, baseline, threshold=0.05)   # the same rows as a DataFrame

Metric keys and categories come from :mod:`gqnbench.report.metrics`. All metrics are
lower-is-better. A regression is ``current > baseline * (1 + threshold)``; infinity against a
finite baseline is a regression, finite against an infinite baseline an improvement, both
infinite unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gqnbench.report.deltas import paired, pct_change, presence
from gqnbench.report.metrics import Metric, collect_metrics

__all__ = ["COMPARISON_COLUMNS", "Comparison", "Metric", "collect_metrics", "compare_metrics", "compare_rows",
           "compare_values", "regressions"]  # fmt: skip

# A fraction (0.05 = 5 %), a mapping from category to fraction (with an optional "default"), or
# a function of the metric (the nightly gate's per-benchmark overrides).
Threshold = float | Mapping[str, float] | Callable[[Metric], float]

COMPARISON_COLUMNS = [
    "key",
    "category",
    "unit",
    "current",
    "baseline",
    "delta_pct",
    "threshold_pct",
    "status",
    "regression",
    "current_spread",
    "baseline_spread",
    "current_source",
    "baseline_source",
]
STATUS_ORDER = {"regression": 0, "improved": 1, "ok": 2, "new": 3, "missing": 4}


@dataclass(frozen=True)
class Comparison:
    """One metric key of either set: both sides' metrics, the change and its status.

    ``status`` is ``regression``, ``improved``, ``ok``, ``new`` (only in current) or
    ``missing`` (only in baseline).
    """

    key: str
    category: str
    unit: str
    current: Metric | None
    baseline: Metric | None
    delta_pct: float
    threshold_pct: float
    status: str

    @property
    def regression(self) -> bool:
        return self.status == "regression"

    @property
    def current_value(self) -> float:
        return self.current.value if self.current else math.nan

    @property
    def baseline_value(self) -> float:
        return self.baseline.value if self.baseline else math.nan


def _threshold(threshold: Threshold, metric: Metric) -> float:
    if callable(threshold):
        return float(threshold(metric))
    if isinstance(threshold, Mapping):
        return float(threshold.get(metric.category, threshold.get("default", 0.05)))
    return float(threshold)


def compare_values(current: float, baseline: float, threshold: float) -> tuple[float, str]:
    """(delta %, status) for one lower-is-better metric; status is regression / improved / ok."""
    if math.isnan(current) or math.isnan(baseline):
        return math.nan, "ok"
    if math.isinf(current) or math.isinf(baseline):
        if math.isinf(current) and math.isinf(baseline):
            return math.nan, "ok"
        return (math.inf, "regression") if math.isinf(current) else (-100.0, "improved")
    if baseline == 0:
        return (math.nan, "ok") if current == 0 else (math.inf, "regression")
    delta = pct_change(current, baseline)
    if delta > threshold * 100.0:
        return delta, "regression"
    if delta < -threshold * 100.0:
        return delta, "improved"
    return delta, "ok"


def compare_rows(
    current: Mapping[str, Metric], baseline: Mapping[str, Metric], threshold: Threshold = 0.05
) -> list[Comparison]:
    """One :class:`Comparison` per metric key in either set, in key order."""
    rows = []
    for key, cur, base in paired(current, baseline):
        ref = cur or base
        thr = _threshold(threshold, ref)
        delta, status = math.nan, presence(cur, base)
        if status is None:
            delta, status = compare_values(cur.value, base.value, thr)
        rows.append(Comparison(key, ref.category, ref.unit, cur, base, delta, thr * 100.0, status))
    return rows


def compare_metrics(
    current: Mapping[str, Metric], baseline: Mapping[str, Metric], threshold: Threshold = 0.05
) -> pd.DataFrame:
    """:func:`compare_rows` as a table (columns: :data:`COMPARISON_COLUMNS`), regressions first, then by key.

    ``threshold`` categories: ``time``, ``ratio``, ``memory``, ``nll``, ``mse``, ``time_to_target``,
    ``time_to_target_steps``; ``regression`` is the boolean gate.
    """
    records = [
        {
            "key": r.key,
            "category": r.category,
            "unit": r.unit,
            "current": r.current_value,
            "baseline": r.baseline_value,
            "delta_pct": r.delta_pct,
            "threshold_pct": r.threshold_pct,
            "status": r.status,
            "regression": r.regression,
            "current_spread": r.current.spread if r.current else None,
            "baseline_spread": r.baseline.spread if r.baseline else None,
            "current_source": r.current.source if r.current else None,
            "baseline_source": r.baseline.source if r.baseline else None,
        }
        for r in compare_rows(current, baseline, threshold)
    ]
    frame = pd.DataFrame(records, columns=COMPARISON_COLUMNS)
    if len(frame):
        frame = frame.sort_values(["status", "key"], key=lambda s: s.map(STATUS_ORDER) if s.name == "status" else s)
        frame = frame.reset_index(drop=True)
    frame["regression"] = frame["regression"].astype(bool) if len(frame) else pd.Series(dtype=bool)
    return frame


def regressions(table: pd.DataFrame) -> list[str]:
    """Human-readable lines for the regressed rows of :func:`compare_metrics`' table."""
    lines = []
    for row in table[table["regression"]].itertuples(index=False):
        delta = "∞" if np.isinf(row.delta_pct) else f"{row.delta_pct:+.1f}%"
        lines.append(f"{row.key}: {row.current:.6g} {row.unit} vs baseline {row.baseline:.6g} {row.unit} ({delta})")
    return lines
