"""measure_costs writes a 'costs' results file section by section and resumes."""

from __future__ import annotations

import json

from gqnbench.cli import main
from gqnbench.harness.suite import measure_costs
from gqnbench.results import read_result


def test_measure_costs_writes_and_resumes(tmp_path):
    out = tmp_path / "costs.json"
    sections = ["params", "flops", "matmul_peak", "throughput"]
    path = measure_costs("tiny", out_path=out, quick=True, sections=sections, show_progress=False)
    doc = read_result(path, "costs")
    assert doc["preset"] == "tiny" and doc["device"] == "cpu"
    assert doc["params"]["metagqn"]["unused"] > 0  # counted in the authors' layout
    assert doc["flops"]["gqn"]["forward_per_scene"] > 0
    rows = doc["throughput"]
    assert {(r["model"], r["mode"], r["dtype"]) for r in rows} >= {
        ("gqn", "train", "fp32"),
        ("metagqn", "infer", "fp32"),
    }
    assert all(r["mfu"] is not None and r["mfu"] > 0 for r in rows)
    # A re-run keeps finished sections (same numbers) and only adds the new one.
    before = json.loads(out.read_text())
    measure_costs("tiny", out_path=out, quick=True, sections=sections + ["reference"], show_progress=False)
    after = read_result(out, "costs")
    assert after["throughput"] == before["throughput"]
    assert after["reference"]["params"]["metagqn"]["used_by_objective"] == 17_074_179


def test_cli_params_and_numerics(capsys, tmp_path):
    assert main(["params", "--preset", "tiny", "--out", str(tmp_path / "p.json")]) == 0
    text = capsys.readouterr().out
    assert "unused_prior_head" in text and "89,419" in text
    assert read_result(tmp_path / "p.json", "costs")["params"]["gqn"]["total"] == 89_419
    assert main(["numerics", "--model", "metagqn", "--preset", "tiny", "--dtype", "bf16", "--batch", "2"]) == 0
    assert "PASS" in capsys.readouterr().out
