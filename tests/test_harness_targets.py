"""perf-targets at the tiny preset: every check is computed from the rows it reports."""

from __future__ import annotations

import pytest

from gqnbench.harness.targets import TARGETS, format_targets, measure_targets


@pytest.fixture(scope="module")
def result() -> dict:
    return measure_targets("gqn", "tiny", batch=2, rounds=3, warmup=1, bf16_variants=((False, False),), matmul_n=256)


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
    assert f"{result['fp32']['median_s']:.3f}" in md
    csv = (tmp_path / "report" / "tables" / "perf_targets_checks_1.csv").read_text()
    assert csv.splitlines()[0] == "check,value,target,met"
