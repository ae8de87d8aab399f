"""compare_metrics / compare_values: deltas, thresholds per category, infinity, new and missing metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gqnbench.report.compare import Metric, collect_metrics, compare_metrics, compare_rows, compare_values, regressions
from gqnbench.report.inputs import load_results

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def m(key: str, value: float, category: str = "time", unit: str = "s") -> Metric:
    return Metric(key, category, value, unit)


@pytest.mark.parametrize(
    ("current", "baseline", "delta", "status"),
    [
        (1.10, 1.00, 10.0, "regression"),
        (1.04, 1.00, 4.0, "ok"),
        (0.90, 1.00, -10.0, "improved"),
        (math.inf, 500.0, math.inf, "regression"),  # now misses the target
        (500.0, math.inf, -100.0, "improved"),  # now reaches it
        (math.inf, math.inf, math.nan, "ok"),
        (math.nan, 1.0, math.nan, "ok"),
    ],
)
def test_compare_values(current, baseline, delta, status):
    got_delta, got_status = compare_values(current, baseline, 0.05)
    assert got_status == status
    if math.isnan(delta):
        assert math.isnan(got_delta)
    else:
        assert got_delta == pytest.approx(delta)


def test_compare_metrics_thresholds_per_category_and_order():
    current = {
        "a": m("a", 1.08),
        "mem": m("mem", 1.08e9, "memory", "bytes"),
        "new": m("new", 1.0),
    }
    baseline = {"a": m("a", 1.0), "mem": m("mem", 1.0e9, "memory", "bytes"), "gone": m("gone", 2.0)}
    table = compare_metrics(current, baseline, threshold={"time": 0.05, "memory": 0.10})
    by_key = table.set_index("key")
    assert by_key.loc["a", "status"] == "regression" and by_key.loc["a", "threshold_pct"] == pytest.approx(5.0)
    assert by_key.loc["mem", "status"] == "ok" and by_key.loc["mem", "threshold_pct"] == pytest.approx(10.0)
    assert by_key.loc["new", "status"] == "new" and math.isnan(by_key.loc["new", "baseline"])
    assert by_key.loc["gone", "status"] == "missing" and not by_key.loc["gone", "regression"]
    assert list(table["key"]) == ["a", "mem", "new", "gone"]  # regressions first
    assert regressions(table) == ["a: 1.08 s vs baseline 1 s (+8.0%)"]


def test_a_result_set_compared_with_itself_has_no_regression():
    results = load_results([FIXTURES / "current"])
    metrics = collect_metrics(results)
    table = compare_metrics(metrics, metrics, 0.0)
    assert not table["regression"].any()
    assert set(table["status"]) == {"ok"}
    assert "val_mse/metagqn/cpu" in metrics and "time_to_target/gqn/cpu" in metrics
    assert metrics["time_to_target/gqn/cpu"].value == pytest.approx(491.4)
    assert metrics["bench/benchmarks/test_throughput.py::test_train_step[gqn-float32-eager]"].spread == pytest.approx(
        (0.39 * 1.01 - 0.39 * 0.99) / 0.39, rel=1e-6
    )


def test_compare_rows_take_a_threshold_per_metric_and_keep_both_metrics():
    current = {"a": Metric("a", "time", 1.08, "s", group="g1"), "b": Metric("b", "time", 1.08, "s", group="g2")}
    baseline = {"a": m("a", 1.0), "b": m("b", 1.0)}
    rows = compare_rows(current, baseline, lambda metric: 0.05 if metric.group == "g1" else 0.10)
    assert [(r.key, r.status, r.threshold_pct) for r in rows] == [("a", "regression", 5.0), ("b", "ok", 10.0)]
    assert rows[0].current is current["a"] and rows[0].baseline is baseline["a"]
    assert rows[0].delta_pct == pytest.approx(8.0) and rows[0].regression


def test_collected_metrics_carry_what_the_gate_reads():
    metrics = collect_metrics(load_results([FIXTURES / "current"]))
    bench = metrics["bench/benchmarks/test_throughput.py::test_train_step[gqn-float32-eager]"]
    assert bench.rounds == 5 and bench.group == "train-gqn-cpu-b16" and bench.cv == pytest.approx(0.0192, abs=1e-4)
    nll = metrics["val_nll/gqn/cpu"]  # median of three seeds: the setup names them, so the gate can tell a change
    assert nll.setup == "2000 steps, seed 0, 1, 2" and nll.nll_constant == pytest.approx(2822.979)
