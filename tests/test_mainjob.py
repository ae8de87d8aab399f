"""The main job end to end at the tiny preset: every stage, the report, and resume."""

from __future__ import annotations

import json

import pytest

from gqnbench.mainjob import STAGES, MainJob, quick_budget
from gqnbench.training.budgets import suite_budget


def test_quick_budget_is_smaller_everywhere():
    full, quick = suite_budget("cpu"), quick_budget(suite_budget("cpu"))
    assert quick.ttt_seeds == 1 and quick.ttt_budget_steps <= full.ttt_budget_steps
    assert quick.sweep_steps <= full.sweep_steps and len(quick.sweep_values) < len(full.sweep_values)
    assert quick.target == full.target


def test_unknown_stage_and_preset_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        MainJob(preset="tiny", out=tmp_path, skip=("nope",))
    with pytest.raises(KeyError, match="unknown preset"):
        MainJob(preset="huge", out=tmp_path)


def test_tiny_main_job_writes_report_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("GQNBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    job = MainJob(preset="tiny", out=out, quick=True, skip=("benchmarks",), cache_root=tmp_path / "cache")
    job.run(log=lambda _: None)
    state = json.loads((out / "results" / "mainjob.json").read_text())
    done = {k for k, v in state["stages"].items() if v["status"] == "done"}
    assert done == set(STAGES) - {"benchmarks"}
    md = (out / "report.md").read_text()
    # Table 1's parameter cells are the costs stage's counts of the models it built, not constants.
    from gqnbench.harness.params import parameter_report

    for model in ("gqn", "metagqn"):
        counted = parameter_report(model, "tiny")
        assert f"{counted['total']:,}" in md and f"{counted['used_by_objective']:,}" in md
    assert md.index('<a id="claims"') == md.index("<a id=")  # the answer comes first
    # The state file is a results file the report reads: stage times, nothing ignored.
    assert state["kind"] == "main_job" and "environment" in state
    assert "What the main job's stages took" in md and "Ignored while scanning" not in md
    assert (out / "report.html").stat().st_size > 10_000
    ttt = json.loads((out / "results" / "time_to_target" / "time_to_target.json").read_text())
    assert {r["model"] for r in ttt["runs"]} == {"gqn", "metagqn"}
    # A second run finds every stage done and only rebuilds the report.
    first = {k: v["wall_s"] for k, v in state["stages"].items()}
    MainJob(preset="tiny", out=out, quick=True, skip=("benchmarks",), cache_root=tmp_path / "cache").run(
        log=lambda _: None
    )
    again = json.loads((out / "results" / "mainjob.json").read_text())["stages"]
    assert all(again[k]["wall_s"] == first[k] for k in first if k != "report")


def test_set_overrides_reach_the_training_stages_and_the_plan(tmp_path):
    from gqnbench.config import ConfigError

    job = MainJob(preset="tiny", out=tmp_path, user_overrides={"train.lr_start": 7e-4, "train.amp": "bf16"})
    assert job.overrides()["train.lr_start"] == 7e-4 and job.overrides()["train.amp"] == "bf16"  # user wins
    assert job._plan()["overrides"] == {"train.lr_start": 7e-4, "train.amp": "bf16"}
    with pytest.raises(ConfigError, match="zz"):
        MainJob(preset="tiny", out=tmp_path, user_overrides={"model.zz": 3})
