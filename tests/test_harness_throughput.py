"""Throughput rows: median/IQR, images/s = batch/median, FLOP/s and MFU bookkeeping, compile accounting."""

from __future__ import annotations

import pytest

from gqnbench.harness.common import StepSpec, Timing, UnsupportedCase, prepare_step, time_calls
from gqnbench.harness.flops import step_flops
from gqnbench.harness.throughput import matmul_peak, measure_interleaved, measure_throughput, throughput_matrix


@pytest.fixture(scope="module")
def peaks():
    return matmul_peak("cpu", ("fp32", "bf16"), n=256, rounds=3)


def test_matmul_peak_is_the_fastest_call_and_plausible(peaks):
    assert peaks["n"] == 256
    for dtype in ("fp32", "bf16"):
        # The fastest call: never slower than the median call (a noisy host must not lower the peak).
        assert peaks[f"{dtype}_flop_per_s"] >= peaks[f"{dtype}_flop_per_s_median"]
        # 2 n^3 FLOP in at least a microsecond and at most a second on any CPU this runs on.
        assert 2 * 256**3 / 1.0 < peaks[f"{dtype}_flop_per_s"] < 2 * 256**3 / 1e-6


@pytest.mark.parametrize("mode", ["train", "infer"])
@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_row_bookkeeping(model, mode, peaks):
    spec = StepSpec(model, "tiny", mode=mode, batch=3, num_queries=2 if mode == "infer" else 1)
    row = measure_throughput(spec, rounds=3, warmup=1, peaks=peaks)
    assert row["median_s"] > 0 and row["iqr_s"] >= 0
    assert row["q1_s"] <= row["median_s"] <= row["q3_s"]
    images = 3 * spec.num_queries
    assert row["images_per_s"] == pytest.approx(images / row["median_s"])
    assert row["flop_per_step"] == step_flops(model, "tiny", mode, 3, num_queries=spec.num_queries)
    assert row["flop_per_s"] == pytest.approx(row["flop_per_step"] / row["median_s"])
    assert row["mfu"] == pytest.approx(row["flop_per_s"] / peaks["fp32_flop_per_s"])
    assert row["compile_s"] is None and row["graph_breaks"] is None
    assert len(row["times_s"]) == 3
    assert 0 < row["timer_overhead_s"] < row["median_s"]


def test_bf16_row_uses_the_bf16_peak(peaks):
    row = measure_throughput(StepSpec("metagqn", "tiny", dtype="bf16", batch=2), rounds=2, warmup=1, peaks=peaks)
    assert row["mfu"] == pytest.approx(row["flop_per_s"] / peaks["bf16_flop_per_s"])


def test_compiled_row_records_compile_time_and_graph_breaks():
    # aot_eager exercises dynamo + AOTAutograd (graph capture, breaks, backward) without minutes of codegen.
    spec = StepSpec("metagqn", "tiny", batch=2, compiled=True, compile_backend="aot_eager")
    row = measure_throughput(spec, rounds=2, warmup=1)
    assert row["graph_breaks"] == 0
    assert row["recompiles"] == 0
    assert row["compile_s"] is not None and row["compile_s"] >= 0
    assert row["first_call_s"] >= row["compile_s"]


def test_fp16_and_missing_cuda_are_skipped_cleanly_on_cpu():
    with pytest.raises(UnsupportedCase):
        prepare_step(StepSpec("gqn", "tiny", dtype="fp16"))
    rows = throughput_matrix(["gqn"], "tiny", modes=("infer",), dtypes=("fp16",), compiled=(False,), rounds=1)
    assert rows == []


def test_training_step_updates_weights():
    step = prepare_step(StepSpec("gqn", "tiny", batch=2))
    before = [p.detach().clone() for p in step.model.parameters()]
    step.run()
    assert any(not b.equal(p) for b, p in zip(before, step.model.parameters()))


def test_timing_summary_statistics():
    t = Timing.from_times([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (t.median_s, t.q1_s, t.q3_s, t.iqr_s) == (3.0, 2.0, 4.0, 2.0)
    calls = []
    timing = time_calls(lambda: calls.append(1), __import__("torch").device("cpu"), rounds=4, warmup=2)
    assert len(calls) == 6 and len(timing.times_s) == 4


def test_interleaved_rows_share_rounds_and_the_peak():
    specs = [StepSpec("metagqn", "tiny", batch=2), StepSpec("metagqn", "tiny", batch=2, dtype="bf16")]
    rows, peaks = measure_interleaved(specs, rounds=3, warmup=1, matmul_n=128)
    assert [len(r["times_s"]) for r in rows] == [3, 3]
    assert rows[0]["mfu"] == pytest.approx(rows[0]["flop_per_s"] / peaks["fp32_flop_per_s"])
    assert rows[1]["mfu"] == pytest.approx(rows[1]["flop_per_s"] / peaks["bf16_flop_per_s"])
    with pytest.raises(ValueError, match="at most one compiled"):
        measure_interleaved([StepSpec("gqn", "tiny", compiled=True)] * 2, rounds=1)
