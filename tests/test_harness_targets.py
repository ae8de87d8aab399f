"""perf-targets at the tiny preset: every check is computed from the rows it reports."""

from __future__ import annotations

import pytest

from gqnbench.harness.targets import (
    TARGETS,
    format_targets,
    judge_targets,
    measure_targets,
    target_specs,
    targets_for,
)


@pytest.fixture(scope="module")
def result() -> dict:
    return measure_targets("gqn", "tiny", batch=2, rounds=3, warmup=1, bf16_variants=((False, "off"),), matmul_n=256)


def test_checks_follow_from_the_rows(result: dict) -> None:
    fp32, (bf16,) = result["fp32"], result["bf16"]
    checks = result["checks"]
    assert checks["bf16_speedup"]["value"] == pytest.approx(fp32["median_s"] / bf16["median_s"])
    assert checks["bf16_speedup"]["met"] == (checks["bf16_speedup"]["value"] >= TARGETS["bf16_speedup_min"])
    assert checks["fp32_mfu"]["value"] == fp32["mfu"]
    assert fp32["mfu"] == pytest.approx(fp32["flop_per_s"] / result["matmul_peak"]["fp32_flop_per_s"])
    # The spread is judged on the judged rows only; the machine's own spread is reported beside it.
    assert checks["rel_iqr"]["value"] == max(fp32["rel_iqr"], bf16["rel_iqr"])
    spread = result["machine"]["matmul_rel_iqr"]
    assert spread == max(result["matmul_peak"]["fp32_rel_iqr"], result["matmul_peak"]["bf16_rel_iqr"])
    assert result["machine"]["quiet"] == (spread < TARGETS["rel_iqr_max"])
    assert checks["bf16_numerics"]["met"] is True  # autocast bf16 of the tiny model vs fp64


def test_authors_formulation_flops_exceed_the_executed_ones(result: dict) -> None:
    fp32 = result["fp32"]
    assert fp32["authors_flop_per_step"] > fp32["flop_per_step"] > 0
    assert fp32["authors_flop_rate_of_peak"] == pytest.approx(
        fp32["mfu"] * fp32["authors_flop_per_step"] / fp32["flop_per_step"]
    )


def test_format_names_every_check(result: dict) -> None:
    text = format_targets(result)
    for name in result["checks"]:
        assert name in text
    assert "256^2 matmul's own IQR/median" in text


def test_report_shows_the_targets_as_measured(result: dict, tmp_path) -> None:
    from gqnbench.report.build import build_report
    from gqnbench.report.inputs import load_results
    from gqnbench.results import write_result

    write_result(tmp_path / "results" / "perf_targets.json", "costs", {"preset": "tiny", "perf_targets": result})
    out = build_report(load_results([tmp_path / "results"]), tmp_path / "report", strict=True)
    md = out.markdown.read_text()
    assert "## Performance targets" in md
    speedup = result["checks"]["bf16_speedup"]["value"]
    assert f"| best bf16 variant: speed-up over fp32 eager | {speedup:.2f}x | >= 3.50x |" in md
    fp32 = result["fp32"]["median_s"]
    assert f"{fp32:.{3 if fp32 >= 0.1 else 4}f}" in md  # milliseconds steps get a fourth digit
    csv = (tmp_path / "report" / "tables" / "perf_targets_checks_1.csv").read_text()
    assert csv.splitlines()[0] == "check,value,target,met"


def _row(median_s: float, mfu: float, rel_iqr: float = 0.01) -> dict:
    return {"median_s": median_s, "mfu": mfu, "rel_iqr": rel_iqr}


def test_judge_targets_at_the_thresholds() -> None:
    numerics = {"grad_err_fast": 0.01, "passed": True}
    fp32 = _row(3.5, TARGETS["fp32_mfu_min"])
    met = judge_targets(fp32, _row(1.0, TARGETS["bf16_mfu_min"]), numerics, worst_overhead=0.0199)
    assert all(ok for _, ok in met.values()), met  # each minimum is inclusive
    assert met["bf16_speedup"][0] == pytest.approx(3.5)
    # Just past each bound: a slower bf16 step, a lower MFU, a noisy fp32 row, a failed numerics check.
    missed = judge_targets(
        _row(3.5, 0.54, rel_iqr=0.05), _row(1.01, 0.39), {"grad_err_fast": 0.5, "passed": False}, worst_overhead=0.02
    )
    assert not any(ok for _, ok in missed.values()), missed
    assert missed["rel_iqr"][0] == 0.05  # the worse of the two judged rows


def test_target_specs_put_fp32_eager_first() -> None:
    variants = ((False, "off"), (False, "channels_last,fused_cell"), (True, "channels_last"))
    specs = target_specs("gqn", "tiny", 2, variants, "cpu", (("model.num_layers", 3),))
    # The compiled case is prepared before the fused one (its dynamo reset would drop the fused cells' code).
    assert [(s.dtype, s.compiled, s.fast_path) for s in specs] == [
        ("fp32", False, "off"),
        ("bf16", True, "channels_last"),
        ("bf16", False, "off"),
        ("bf16", False, "channels_last,fused_cell"),
    ]
    assert all(s.mode == "train" and s.batch == 2 and s.overrides == (("model.num_layers", 3),) for s in specs)


def test_gpu_targets_judge_the_fast_step_and_every_cases_memory() -> None:
    numerics = {"grad_err_fast": 0.01, "passed": True}
    targets = targets_for("cuda", "gqn", 36)
    assert targets["bf16_step_max_s"] == 0.020 and targets["bf16_speedup_min"] == 2.0
    fp32, fast = {**_row(0.040, 0.3), "peak_memory_bytes": 3 << 30}, {**_row(0.020, 0.5), "peak_memory_bytes": 2 << 30}
    met = judge_targets(fp32, fast, numerics, 0.001, targets, rows=[fp32, fast])
    assert all(ok for _, ok in met.values()) and "fp32_mfu" not in met, met  # fp32 "MFU" is no GPU target
    assert met["memory"] == (2, True)
    missed = judge_targets(fp32, {**fast, "median_s": 0.0201}, numerics, 0.001, targets, rows=[fp32, _row(0.02, 0.5)])
    assert not missed["bf16_step"][1] and not missed["bf16_speedup"][1] and missed["memory"] == (1, False)
    # At batch 8 there is no step-time target, and bf16 must only be faster than fp32 (not as fast).
    small = targets_for("cuda", "metagqn", 8)
    assert "bf16_step_max_s" not in small
    assert not judge_targets(fp32, {**fast, "median_s": 0.040}, numerics, 0.0, small, [fp32])["bf16_speedup"][1]
    assert judge_targets(fp32, {**fast, "median_s": 0.039}, numerics, 0.0, small, [fp32])["bf16_speedup"][1]
