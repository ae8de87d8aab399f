"""The report rendered from the committed fixture results: its tables' numbers, sections and provenance.

The fixtures (tests/fixtures/report/, written by make_fixtures.py) are small but realistic
results files; every expected number here is recomputed from those JSON files or is a study
constant, so a wrong table fails.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gqnbench.report.build import build_report
from gqnbench.report.cli import main as report_main
from gqnbench.report.inputs import load_results

FIXTURES = Path(__file__).parent / "fixtures" / "report"
CURRENT = FIXTURES / "current"
BASELINE = FIXTURES / "baseline"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = load_results([CURRENT], exclude=[out])
    baseline = load_results([BASELINE])
    return build_report(results, out, baseline=baseline, threshold=0.05, command="pytest", strict=True)


def table(report, name: str) -> pd.DataFrame:
    return pd.read_csv(report.out_dir / "tables" / f"{name}.csv")


def _final_nlls(model: str) -> list[float]:
    docs = [json.loads(p.read_text()) for p in sorted((CURRENT / "training").glob(f"{model}-main-seed*.json"))]
    return [d["eval_curve"][-1]["val_nll"] for d in docs]


def test_outputs_exist(report):
    out = report.out_dir
    for name in ("report.md", "report.html", "provenance.json"):
        assert (out / name).stat().st_size > 0
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert figures == {"figure6_val_nll.png", "figure7_sweep.png", "time_to_target.png", "scaling.png", "samples.png"} | {
        "time_to_target_curves.png"  # every seed's curve, from the run files the time-to-target file names
    }
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table1_parameters(report):
    params = table(report, "table1_params").set_index("model")
    assert params.loc["gqn", "study_params"] == 49_469_343
    assert params.loc["gqn", "total"] == 49_469_343
    assert params.loc["gqn", "used_by_objective"] == 49_469_343
    assert params.loc["metagqn", "study_params"] == 18_713_091
    assert params.loc["metagqn", "total"] == 18_713_091
    assert params.loc["metagqn", "used_by_objective"] == 17_074_179
    assert params.loc["metagqn", "unused"] == 1_638_912
    assert set(params["preset"]) == {"paper"}  # the entries' own preset wins over the cpu costs file
    md = report.markdown.read_text()
    assert "1,638,912" in md and "17,074,179" in md and "never uses" in md


def test_table1_parameter_cells_come_from_costs_json(tmp_path):
    import shutil

    shutil.copytree(CURRENT, tmp_path / "current")
    costs_path = tmp_path / "current" / "costs.json"
    doc = json.loads(costs_path.read_text())
    doc["params"]["gqn"]["total"] = doc["params"]["gqn"]["used_by_objective"] = 12_345_678  # a changed model
    costs_path.write_text(json.dumps(doc))
    out = build_report(load_results([tmp_path / "current"]), tmp_path / "report", strict=True)
    params = pd.read_csv(out.out_dir / "tables" / "table1_params.csv").set_index("model")
    assert params.loc["gqn", "total"] == 12_345_678 and "12,345,678" in out.markdown.read_text()


def test_table1_nll(report):
    nll = table(report, "table1_nll")
    study = nll[nll["source"] == "study"].set_index("model")
    assert study.loc["gqn", "val_nll_median"] == 11439.0
    assert study.loc["metagqn", "val_nll_median"] == 11353.0
    assert study.loc["gqn", "nll_constant"] == pytest.approx(12288 * 0.5 * math.log(2 * math.pi))
    assert study.loc["gqn", "val_mse_median"] == pytest.approx(0.02394, abs=1e-5)
    assert study.loc["metagqn", "val_mse_median"] == pytest.approx(0.00994, abs=1e-5)
    ours = nll[nll["source"] == "ours"].set_index("model")
    assert set(ours["step"]) == {2000}
    assert set(ours["image_size"]) == {32}
    assert set(ours["preset"]) == {"cpu"}
    assert ours.loc["gqn", "nll_constant"] == pytest.approx(3072 * 0.5 * math.log(2 * math.pi), abs=1e-3)
    for model in ("gqn", "metagqn"):
        finals = _final_nlls(model)
        assert ours.loc[model, "seeds"] == 3
        assert ours.loc[model, "val_nll_median"] == pytest.approx(float(np.median(finals)))
        assert ours.loc[model, "val_nll_min"] == pytest.approx(min(finals))
        assert ours.loc[model, "val_nll_max"] == pytest.approx(max(finals))
    md = report.markdown.read_text()
    assert "1.1439e4" in md and "1.1353e4" in md
    assert "3,072 × ½ln(2π) = 2,823.0" in md


def test_figure6_data_is_median_over_seeds(report):
    fig6 = table(report, "figure6_val_nll")
    docs = [json.loads(p.read_text()) for p in sorted((CURRENT / "training").glob("gqn-main-seed*.json"))]
    at_1000 = [next(p["val_nll"] for p in d["eval_curve"] if p["step"] == 1000) for d in docs]
    row = fig6[(fig6["model"] == "gqn") & (fig6["step"] == 1000)].iloc[0]
    assert row["val_nll_median"] == pytest.approx(float(np.median(at_1000)))
    assert row["val_nll_min"] == pytest.approx(min(at_1000))
    assert row["seeds"] == 3


def test_time_to_target(report):
    summary = table(report, "time_to_target_summary").set_index("model")
    assert summary.loc["gqn", "reached"] == 2 and summary.loc["gqn", "seeds"] == 3
    assert summary.loc["gqn", "median_wall_s"] == pytest.approx(491.4)
    assert summary.loc["gqn", "median_steps"] == 1200
    assert summary.loc["metagqn", "median_wall_s"] == pytest.approx(224.4)
    assert summary.loc["metagqn", "median_steps"] == 700
    seeds = table(report, "time_to_target_seeds")
    missed = seeds[~seeds["reached"]]
    assert list(zip(missed["model"], missed["seed"])) == [("gqn", 1)]
    assert math.isinf(missed["wall_s"].iloc[0]) and math.isinf(missed["steps"].iloc[0])
    md = report.markdown.read_text()
    assert re.search(r"\| GQN \| 1 \| not reached \(∞\) \| not reached \(∞\) \|", md)


def test_time_to_target_median_is_infinite_when_most_seeds_miss():
    from gqnbench.report.formatting import fmt_until
    from gqnbench.report.sections.targets import summary_frame

    seeds = pd.DataFrame(
        {
            "model": ["gqn"] * 3,
            "preset": ["cpu"] * 3,
            "target_nll": [2870.0] * 3,
            "reached": [True, False, False],
            "steps": [900.0, math.inf, math.inf],
            "wall_s": [300.0, math.inf, math.inf],
        }
    )
    row = summary_frame(seeds).iloc[0]
    assert math.isinf(row["median_wall_s"]) and row["reached"] == 1
    assert fmt_until(row["median_wall_s"]) == "not reached (∞)"


def test_robustness(report):
    summary = table(report, "robustness_summary").set_index("model")
    sweep = json.loads((CURRENT / "sweep_z" / "sweep.json").read_text())
    assert summary.loc["gqn", "fraction_learned"] == pytest.approx(4 / 6, abs=1e-6)
    assert summary.loc["metagqn", "fraction_learned"] == pytest.approx(1.0)
    assert summary.loc["gqn", "diverged"] == 1
    assert summary.loc["gqn", "final_nll_spread"] == pytest.approx(sweep["summary"]["gqn"]["final_nll_spread"])
    settings = table(report, "robustness_settings")
    z128 = settings[(settings["model"] == "gqn") & (settings["value"] == 128)].iloc[0]
    assert z128["learned"] == 0 and z128["diverged"] == 1 and float(z128["diverged_steps"]) == 600
    learned = settings.groupby("model")["learned"].sum()
    assert learned["gqn"] == 4 and learned["metagqn"] == 6
    stability = table(report, "stability").set_index("model")
    assert stability.loc["gqn", "rise_median"] > stability.loc["metagqn", "rise_median"]


def test_costs_tables(report):
    flops = table(report, "flops").set_index("model")
    assert flops.loc["gqn", "forward_gflop_per_scene"] == pytest.approx(0.95)
    assert flops.loc["gqn", "flopcounter_over_2x_fvcore"] == pytest.approx(1.0)
    throughput = table(report, "throughput")
    assert set(throughput["source"]) == {"harness", "pytest-benchmark"}
    row = throughput[
        (throughput["source"] == "harness")
        & (throughput["model"] == "gqn")
        & (throughput["mode"] == "train")
        & (throughput["dtype"] == "fp32")
        & (~throughput["compiled"])
    ].iloc[0]
    assert row["median_s"] == pytest.approx(0.39)
    assert row["flop_per_s"] == pytest.approx(2.85e9 * 16 / 0.39)
    compiled = table(report, "eager_vs_compiled")
    r = compiled[(compiled["model"] == "gqn") & (compiled["dtype"] == "fp32") & (compiled["source"] == "harness")].iloc[
        0
    ]
    assert r["speedup_True"] == pytest.approx(0.39 / 0.33)
    dtypes = table(report, "fp32_vs_lowp")
    r = dtypes[(dtypes["model"] == "metagqn") & (dtypes["mode"] == "train") & (dtypes["compiled"] == False)]  # noqa: E712
    assert r[r["source"] == "harness"].iloc[0]["speedup_bf16"] == pytest.approx(0.30 / 0.16)
    memory = table(report, "memory").set_index(["model", "mode"])
    assert memory.loc[("gqn", "train"), "peak_rss_bytes"] == 900 * 2**20
    md = report.markdown.read_text()
    assert "2 FLOP per multiply-add" in md
    assert set(table(report, "scaling")["axis"]) == {"L", "image_size", "batch", "M"}


def test_comparison(report):
    comp = table(report, "comparison").set_index("key")
    fp32 = comp.loc["bench/benchmarks/test_throughput.py::test_train_step[gqn-float32-eager]"]
    assert fp32["delta_pct"] == pytest.approx((0.390 - 0.351) / 0.351 * 100)
    assert fp32["status"] == "regression" and bool(fp32["regression"])
    bf16 = comp.loc["bench/benchmarks/test_throughput.py::test_train_step[gqn-bfloat16-eager]"]
    assert bf16["delta_pct"] == pytest.approx(-16.0) and bf16["status"] == "improved"
    meta = comp.loc["bench/benchmarks/test_throughput.py::test_train_step[metagqn-float32-eager]"]
    assert meta["delta_pct"] == pytest.approx((0.300 - 0.294) / 0.294 * 100) and meta["status"] == "ok"
    assert (
        comp.loc["bench/benchmarks/test_throughput.py::test_train_step[metagqn-bfloat16-eager]", "status"] == "missing"
    )
    assert (
        comp.loc["bench/benchmarks/test_throughput.py::test_train_step[metagqn-bfloat16-compiled]", "status"] == "new"
    )
    # harness throughput: the baseline is 10% faster everywhere -> +11.1% regressions
    harness = comp[comp.index.str.startswith("throughput/") & (comp["category"] == "time")]
    assert len(harness) == 12 and harness["regression"].all()
    assert harness["delta_pct"].to_numpy() == pytest.approx(np.full(12, 100 / 9))
    # time to target: baseline metagqn median is infinite (1 of 2 seeds missed) -> current improved
    assert comp.loc["time_to_target/metagqn/cpu", "status"] == "improved"
    assert comp.loc["time_to_target/gqn/cpu", "delta_pct"] == pytest.approx((491.4 - 510.0) / 510.0 * 100)
    md = report.markdown.read_text()
    assert "**13 regression(s)**" in md
    assert "| +11.1% | 5% | 2.0% | REGRESSION |" in md


def test_provenance_names_existing_sources(report):
    prov = json.loads(report.provenance.read_text())
    assert prov["command"] == "pytest"
    artifacts = prov["artifacts"]
    on_disk = {
        p.relative_to(report.out_dir).as_posix() for p in report.out_dir.rglob("*") if p.suffix in (".png", ".csv")
    }
    assert {a["artifact"] for a in artifacts} == on_disk
    for artifact in artifacts:
        assert artifact["sources"], artifact["artifact"]
        for src in artifact["sources"]:
            assert (report.out_dir / src).resolve().is_file(), src
    fig7 = next(a for a in artifacts if a["artifact"] == "figures/figure7_sweep.png")
    assert len(fig7["sources"]) == 13  # the sweep file and its 12 runs
    assert any(p.endswith("notes.json") for p in prov["ignored"])
    md = report.markdown.read_text()
    assert "a9a7cf3d1e20" in md and "2.13.0+cpu" in md  # commit and torch version of the measurements


def test_html_is_self_contained(report):
    text = report.html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == len(list((report.out_dir / "figures").glob("*.png")))


def test_missing_sections_are_notes_not_crashes(tmp_path):
    only_costs = build_report(load_results([CURRENT / "costs.json"]), tmp_path / "a", strict=True)
    md = only_costs.markdown.read_text()
    assert "No time_to_target results: this section is omitted." in md
    assert "No sweep results: Figure 7" in md
    assert "No training runs: the validation NLL rows are omitted." in md
    assert "49,469,343" in md
    only_run = build_report(load_results([CURRENT / "training" / "gqn-main-seed0.json"]), tmp_path / "b", strict=True)
    md = only_run.markdown.read_text()
    assert "No costs.json and no pytest-benchmark JSON" in md
    assert (tmp_path / "b" / "figures" / "figure6_val_nll.png").exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [str(CURRENT), "--baseline", str(BASELINE), "--out", str(out)]
    assert report_main(args) == 0
    assert report_main([*args, "--fail-on-regression"]) == 1
    assert (
        "REGRESSION bench/benchmarks/test_throughput.py::test_train_step[gqn-float32-eager]" in capsys.readouterr().out
    )
    assert report_main([*args, "--threshold", "0.2", "--fail-on-regression"]) == 0
    assert (out / "report.html").exists()


def test_report_never_imports_torch_or_models():
    code = (
        "import sys; import gqnbench.report.build, gqnbench.report.cli, gqnbench.report.compare; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'gqnbench.models', "
        "'gqnbench.harness', 'gqnbench.training'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
