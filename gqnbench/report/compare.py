"""Compare two result sets metric by metric: median, baseline median, delta %, regression flag.

Pure functions, reusable outside the report (the nightly CI gate)::

    current = collect_metrics(load_results(["reports/today"]))
    baseline = collect_metrics(load_results(["ci/baselines/cpu"]))
    table = compare_metrics(current, baseline, threshold={"time": 0.05, "memory": 0.10, "default": 0.05})
    regressed = table[table["regression"]]

Metric keys are stable names built from what identifies a measurement, so two commits, two
GPUs or two configs line up:

- ``bench/<pytest fullname>``                 median seconds (category ``time``); with
  ``/peak_memory`` peak bytes (``memory``)
- ``throughput/<model>/<preset>/<mode>/b<batch>/<dtype>/<eager|compiled>[/<device>]`` median
  seconds (``time``); with ``/peak_memory`` (``memory``)
- ``val_nll/<model>/<preset>``, ``val_mse/<model>/<preset>``: median final validation NLL and
  MSE of the main runs (``nll``, ``mse``); the NLL carries a constant, so gate on the MSE
- ``time_to_target/<model>/<preset>``: median wall seconds, infinity when most seeds missed
  (``time_to_target``); ``.../steps`` the median steps (``time_to_target_steps``)

All metrics are lower-is-better. A regression is ``current > baseline * (1 + threshold)``;
infinity against a finite baseline is a regression, finite against an infinite baseline an
improvement, both infinite unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gqnbench.report.deltas import paired, pct_change, presence
from gqnbench.report.inputs import PYTEST_BENCHMARK, ResultSet
from gqnbench.report.runs import main_runs, median_inf, run_info
from gqnbench.results import as_float

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


@dataclass(frozen=True)
class Metric:
    """One comparable number: lower is better. ``spread`` is IQR/median where known (noise)."""

    key: str
    category: str
    value: float
    unit: str
    spread: float | None = None
    source: str | None = None


def _dtype(value: object) -> str:
    text = str(value).removeprefix("torch.")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(text, text)


def _add(out: dict[str, Metric], metric: Metric) -> None:
    # Duplicate keys (e.g. the same benchmark saved twice) keep the first: inputs are read in a stable order.
    out.setdefault(metric.key, metric)


def collect_metrics(results: ResultSet) -> dict[str, Metric]:
    """Every comparable metric of a result set, keyed by its stable name (see the module docstring)."""
    out: dict[str, Metric] = {}
    for f in results.of_kind(PYTEST_BENCHMARK):
        for bench in f.doc["benchmarks"]:
            stats = bench["stats"]
            median = as_float(stats["median"])
            iqr = as_float(stats.get("iqr"))
            key = f"bench/{bench['fullname']}"
            _add(out, Metric(key, "time", median, "s", iqr / median if median else None, str(f.path)))
            mem = (bench.get("extra_info") or {}).get("peak_memory_bytes")
            if mem is not None:
                _add(out, Metric(f"{key}/peak_memory", "memory", as_float(mem), "bytes", None, str(f.path)))
    for f in results.of_kind("costs"):
        for row in f.doc.get("throughput") or []:
            device = row.get("device")
            key = "throughput/{}/{}/{}/b{}/{}/{}".format(
                row.get("model"),
                row.get("preset", f.doc.get("preset")),
                row.get("mode"),
                row.get("batch"),
                _dtype(row.get("dtype")),
                "compiled" if row.get("compiled") else "eager",
            ) + (f"/{device}" if device else "")
            median = as_float(row.get("median_s"))
            iqr = as_float(row.get("iqr_s"))
            _add(
                out,
                Metric(key, "time", median, "s", iqr / median if median and not math.isnan(iqr) else None, str(f.path)),
            )
            if row.get("peak_memory_bytes") is not None:
                _add(
                    out,
                    Metric(
                        f"{key}/peak_memory", "memory", as_float(row["peak_memory_bytes"]), "bytes", None, str(f.path)
                    ),
                )
    runs, _ = main_runs(results)
    by_group: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        info = run_info(run)
        by_group.setdefault((info["model"], str(info["preset"])), []).append(info)
    for (model, preset), infos in by_group.items():
        src = ", ".join(str(i["file"]) for i in infos)
        _add(
            out,
            Metric(
                f"val_nll/{model}/{preset}", "nll", median_inf(i["final_val_nll"] for i in infos), "nats", None, src
            ),
        )
        _add(
            out,
            Metric(f"val_mse/{model}/{preset}", "mse", median_inf(i["final_val_mse"] for i in infos), "", None, src),
        )
    for f in results.of_kind("time_to_target"):
        preset = f.doc.get("preset")
        for model in dict.fromkeys(r["model"] for r in f.doc["runs"]):
            own = [r for r in f.doc["runs"] if r["model"] == model]
            walls = [as_float(r.get("wall_s")) if r["reached"] else math.inf for r in own]
            steps = [as_float(r.get("steps")) if r["reached"] else math.inf for r in own]
            _add(
                out,
                Metric(f"time_to_target/{model}/{preset}", "time_to_target", median_inf(walls), "s", None, str(f.path)),
            )
            _add(
                out,
                Metric(
                    f"time_to_target/{model}/{preset}/steps",
                    "time_to_target_steps",
                    median_inf(steps),
                    "steps",
                    None,
                    str(f.path),
                ),
            )
    return out


def _threshold(threshold: float | Mapping[str, float], category: str) -> float:
    if isinstance(threshold, Mapping):
        return float(threshold.get(category, threshold.get("default", 0.05)))
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


def compare_metrics(
    current: Mapping[str, Metric],
    baseline: Mapping[str, Metric],
    threshold: float | Mapping[str, float] = 0.05,
) -> pd.DataFrame:
    """One row per metric key in either set (columns: :data:`COMPARISON_COLUMNS`).

    ``threshold`` is a fraction (0.05 = 5 %), or a mapping from category (``time``, ``memory``,
    ``nll``, ``mse``, ``time_to_target``, ``time_to_target_steps``) to a fraction with an
    optional ``default``. ``status`` is ``regression``, ``improved``, ``ok``, ``new`` (only in
    current) or ``missing`` (only in baseline); ``regression`` is the boolean gate. Rows are
    sorted: regressions first, then by key.
    """
    rows = []
    for key, cur, base in paired(current, baseline):
        ref = cur or base
        thr = _threshold(threshold, ref.category)
        row = {
            "key": key,
            "category": ref.category,
            "unit": ref.unit,
            "current": cur.value if cur else math.nan,
            "baseline": base.value if base else math.nan,
            "delta_pct": math.nan,
            "threshold_pct": thr * 100.0,
            "current_spread": cur.spread if cur else None,
            "baseline_spread": base.spread if base else None,
            "current_source": cur.source if cur else None,
            "baseline_source": base.source if base else None,
        }
        row["status"] = presence(cur, base)
        if row["status"] is None:
            row["delta_pct"], row["status"] = compare_values(cur.value, base.value, thr)
        row["regression"] = row["status"] == "regression"
        rows.append(row)
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if len(frame):
        order = {"regression": 0, "improved": 1, "ok": 2, "new": 3, "missing": 4}
        frame = frame.sort_values(["status", "key"], key=lambda s: s.map(order) if s.name == "status" else s)
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
