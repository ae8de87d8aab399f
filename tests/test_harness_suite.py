"""measure_costs writes a 'costs' results file section by section and resumes."""

from __future__ import annotations

import json

import pytest

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


def _planned_cases(monkeypatch, preset: str, quick: bool, device_type: str = "cpu") -> dict:
    """Run every section of ``_plan`` against recording stand-ins: what each harness would be asked to measure."""
    import itertools
    import types

    import torch

    import gqnbench.harness.memory as memory
    import gqnbench.harness.scaling as scaling
    import gqnbench.harness.throughput as throughput
    import gqnbench.numerics as numerics
    from gqnbench.harness import suite

    seen: dict = {"throughput": set(), "numerics": set(), "memory": set(), "peak": []}

    def matrix(models, preset, modes, dtypes, compiled, rounds, warmup, **kwargs):
        seen["throughput"] |= set(itertools.product(models, modes, dtypes, compiled, [(rounds, warmup)]))
        return []

    def check(model, preset, dtype, compiled, **kwargs):
        seen["numerics"].add((model, dtype, compiled))
        return types.SimpleNamespace(as_dict=dict)

    monkeypatch.setattr(throughput, "throughput_matrix", matrix)
    monkeypatch.setattr(throughput, "matmul_peak", lambda device, dtypes, n, rounds: seen["peak"].append((dtypes, n)))
    monkeypatch.setattr(memory, "memory_report", lambda m, p, modes, **kw: seen["memory"].update((m, x) for x in modes))
    monkeypatch.setattr(numerics, "check_numerics", check)
    monkeypatch.setattr(scaling, "measure_scaling", lambda *a, **kw: [])
    monkeypatch.setattr(suite, "resolve_device", lambda device: torch.device(device_type))
    plan = suite._plan(preset, ["gqn", "metagqn"], quick, device_type)
    assert list(plan) == list(suite.SECTIONS)
    for section in ("matmul_peak", "throughput", "memory", "numerics", "scaling"):
        plan[section]({}, lambda text: None)
    return seen


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_quick_plan_is_the_documented_subset(monkeypatch, preset):
    # The module docstring and benchmarks/conftest.py: eager only (train fp32/bf16, inference fp32),
    # fewer rounds, a 2048^2 matmul, the training step's memory only.
    seen = _planned_cases(monkeypatch, preset, quick=True)
    models = ("gqn", "metagqn")
    assert seen["throughput"] == {
        (m, mode, dtype, False, (3, 1))
        for m in models
        for mode, dtype in [("train", "fp32"), ("train", "bf16"), ("infer", "fp32")]
    }
    assert seen["peak"] == [(("fp32", "bf16"), 2048)]
    assert seen["memory"] == {(m, "train") for m in models}
    assert seen["numerics"] == {(m, "bf16", False) for m in models}


@pytest.mark.parametrize("device_type, dtypes", [("cpu", ("fp32", "bf16")), ("cuda", ("fp32", "bf16", "fp16"))])
def test_full_plan_covers_the_matrix(monkeypatch, device_type, dtypes):
    seen = _planned_cases(monkeypatch, "cpu", quick=False, device_type=device_type)
    models = ("gqn", "metagqn")
    assert seen["throughput"] == {
        (m, mode, dtype, compiled, (5, 2))
        for m in models for mode in ("train", "infer") for dtype in dtypes for compiled in (False, True)
    }  # fmt: skip
    assert seen["peak"] == [(dtypes, 4096)]
    assert seen["memory"] == {(m, mode) for m in models for mode in ("train", "infer")}
    # Every low precision eager against fp64, and compile's own error at fp32.
    low = [d for d in dtypes if d != "fp32"]
    assert seen["numerics"] == {(m, d, False) for m in models for d in low} | {(m, "fp32", True) for m in models}


def test_budget_quick_runs_nothing_compiled():
    from gqnbench.harness.suite import budget

    quick, full = budget(True, ("fp32", "bf16", "fp16")), budget(False, ("fp32", "bf16", "fp16"))
    assert all(p["compiled"] == (False,) for p in quick.throughput)
    assert not any(compiled for _, compiled in quick.numerics)
    assert (quick.peak_n, quick.scaling_rounds, quick.fvcore) == (2048, 2, False)
    assert (full.peak_n, full.scaling_rounds, full.fvcore) == (4096, 3, True)
