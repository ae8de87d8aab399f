"""The decisions the sweep and time-to-target orchestration make, each checked on its own helper.

Which runs a sweep reuses and which it launches, which finished runs become rows, how a
time-to-target request turns into a target, its source and a step budget, and how the learning
study layers its overrides. None of these trains.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from gqnbench.presets import get_preset
from gqnbench.training.budgets import MseRatioTarget
from gqnbench.training.learning_study import study_entries, study_jobs
from gqnbench.training.sweep import _sweep_jobs, run_rows
from gqnbench.training.time_to_target import _NO_STEP_CAP, _step_cap, _target_and_source, _target_fields


def test_sweep_reuses_only_each_models_default_setting_for_the_listed_seeds(tmp_path: Path) -> None:
    # tiny's z_channels default is 2 for gqn and 4 for metagqn; values come as strings, as from the CLI,
    # so "is the default" must compare the typed value.
    reuse = (tmp_path / "main", "main", [0])
    settings = {"steps": 5, "resume": True, "out_dir": tmp_path, "cache_root": None, "progress": False}
    jobs = _sweep_jobs("tiny", ["gqn", "metagqn"], "model.z_channels", ["2", "4"], [0, 1], {}, reuse, settings)
    assert [(j["model"], j["value"], j["seed"]) for j in jobs] == [
        (m, v, s) for m in ("gqn", "metagqn") for v in (2, 4) for s in (0, 1)
    ]
    reused = {(j["model"], j["value"], j["seed"]) for j in jobs if "run_dir" in j}
    assert reused == {("gqn", 2, 0), ("metagqn", 4, 0)}
    for job in jobs:
        if "run_dir" in job:
            assert job["run_dir"] == tmp_path / "main" and job["tag"] == "main"
        else:
            assert job["tag"] == f"sweep-model.z_channels={job['value']}"
        assert job["overrides"] == {"model.z_channels": str(job["value"])} and job["steps"] == 5


def test_sweep_without_reuse_launches_every_run(tmp_path: Path) -> None:
    jobs = _sweep_jobs("tiny", ["gqn"], "model.z_channels", ["2"], [0], {}, None, {"out_dir": tmp_path})
    assert len(jobs) == 1 and "run_dir" not in jobs[0]


def test_sweep_rows_leave_out_unfinished_runs_and_judge_the_target() -> None:
    jobs = [{"model": "gqn", "value": v, "seed": 0} for v in (2, 4, 8, 16)]
    results = [
        {"final_val_nll": 700.0, "status": "completed"},
        {"unfinished": True, "state": "running"},
        {"final_val_nll": 720.0, "status": "completed"},
        {"final_val_nll": math.nan, "status": "diverged"},
    ]
    rows = run_rows(jobs, results, target_nll=710.0)
    assert [r["value"] for r in rows] == [2, 8, 16]
    assert [r["reached_target"] for r in rows] == [True, False, False]
    assert rows[0] == {"model": "gqn", "value": 2, "seed": 0, "final_val_nll": 700.0, "status": "completed"} | {
        "reached_target": True
    }
    assert all("reached_target" not in r for r in run_rows(jobs, results, target_nll=None))


def test_time_to_target_source_and_step_budget() -> None:
    assert _target_and_source("tiny", None) == (MseRatioTarget(1.2), "preset default (gqnbench.training.budgets)")
    assert _target_and_source("tiny", MseRatioTarget(1.2))[1] == "preset default (gqnbench.training.budgets)"
    assert _target_and_source("tiny", 700.0) == (700.0, "given")
    tiny = get_preset("tiny")
    assert _step_cap(tiny, 17, 5.0) == 17
    assert _step_cap(tiny, None, None) == tiny.train.steps
    assert _step_cap(tiny, None, 5.0) == _NO_STEP_CAP  # the clock decides


@pytest.mark.parametrize("spec", [MseRatioTarget(0.75), 712.5])
def test_time_to_target_fields_agree_between_nll_and_mse_ratio(spec: MseRatioTarget | float) -> None:
    baseline = SimpleNamespace(constant=705.0, mse=0.02, nll=711.0)
    fields = _target_fields(spec, "given", SimpleNamespace(baseline=baseline), 8)
    # Either way the two numbers describe the same target on this data.
    assert MseRatioTarget(fields["target_mse_ratio"]).nll(705.0, 0.02, 8) == pytest.approx(fields["target_nll"])
    assert fields["mean_frame"] == {"val_nll": 711.0, "val_mse": 0.02} and fields["nll_constant"] == 705.0
    suffix = " (0.75 x the mean-frame MSE)" if isinstance(spec, MseRatioTarget) else ""
    assert fields["target_source"] == "given" + suffix


def test_study_jobs_layer_set_then_entry_then_study_settings_and_skip_models_an_entry_is_not_for() -> None:
    entries = study_entries(["s16-base", "s16-sigma1500"])  # the second is for gqn only
    given = {"train.lr_start": 9.0, "data.generate_scenes": 500, "train.eval_every": 1}
    settings = {"train.eval_every": 7, "train.tensorboard": False}
    jobs = study_jobs("tiny", entries, ["gqn", "metagqn"], given, settings, {"steps": 3})
    assert [(j["name"], j["model"]) for j in jobs] == [
        ("s16-base", "gqn"),
        ("s16-base", "metagqn"),
        ("s16-sigma1500", "gqn"),
    ]
    for job in jobs:
        assert job["overrides"]["data.generate_scenes"] == 500  # --set where the entry says nothing
        assert job["overrides"]["train.lr_start"] == 1e-3  # the entry wins over --set
        assert job["overrides"]["train.eval_every"] == 7  # the study's settings win over both
        assert job["steps"] == 3
