"""Robustness sweeps on real generated data (tiny preset): a diverging setting is recorded and
the sweep goes on; finished runs are skipped on a re-run; worker processes give the same numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gqnbench.data.generate import generate_dataset
from gqnbench.judging import LEARNED_CRITERION
from gqnbench.results import read_result
from gqnbench.training.run_files import RunsFailed
from gqnbench.training.sweep import run_sweep


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("sweep-data") / "root"
    generate_dataset(root, 48, seed=5, val_fraction=0.25, scenes_per_file=12, workers=1, progress=False)
    return {"data.root": str(root), "data.val_scenes": 8, "train.tensorboard": False, "train.eval_every": 5}


def test_sweep_records_a_diverged_setting_and_continues(base: dict, tmp_path: Path) -> None:
    args = ("tiny", ["gqn", "metagqn"], "train.inject_nan_at_step", [None, 3])
    kw = {"seeds": 1, "out_dir": tmp_path, "steps": 12, "overrides": base, "progress": False, "isolate": False}
    # The file is written, then the diverged runs are raised: not results, yet no error (nothing to retry).
    with pytest.raises(RunsFailed, match="0 run.s. failed, 2 diverged") as diverged:
        run_sweep(*args, **kw)
    assert not diverged.value.failed
    doc = read_result(diverged.value.path, "sweep")
    assert doc["field"] == "train.inject_nan_at_step" and doc["values"] == [None, 3]
    assert len(doc["runs"]) == 4
    for run in doc["runs"]:
        assert run["status"] == ("diverged" if run["value"] == 3 else "completed")
        if run["value"] == 3:
            assert run["diverged"] and run["diverged_step"] == 3 and run["learned"] is False
            assert run["final_val_nll"] is not None  # the last evaluation before divergence (step 0)
        assert (tmp_path / run["run_file"]).is_file()
    for model in ("gqn", "metagqn"):
        s = doc["summary"][model]
        assert s["diverged"] == 1 and s["runs"] == 2 and s["fraction_learned"] <= 0.5
        assert s["final_nll_spread"] == 0.0  # one finished setting: no spread
    # Re-running skips every finished run (diverged ones included) and writes the same numbers.
    with pytest.raises(RunsFailed) as rerun:
        run_sweep(*args, **kw)
    again = read_result(rerun.value.path, "sweep")
    assert all(r["skipped"] for r in again["runs"])
    assert [r["final_val_nll"] for r in again["runs"]] == [r["final_val_nll"] for r in doc["runs"]]


def test_z_sweep_in_two_processes_matches_one_process(base: dict, tmp_path: Path) -> None:
    kw = {"seeds": 1, "steps": 10, "overrides": base, "progress": False, "target_nll": 1e9}
    one = read_result(
        run_sweep("tiny", ["metagqn"], "model.z_channels", [2, 8], out_dir=tmp_path / "a", isolate=False, **kw), "sweep"
    )
    two = read_result(
        run_sweep("tiny", ["metagqn"], "model.z_channels", ["2", "8"], out_dir=tmp_path / "b", processes=2, **kw),
        "sweep",
    )
    assert [r["value"] for r in two["runs"]] == [2, 8]  # CLI strings are typed by the config
    assert [r["final_val_nll"] for r in two["runs"]] == [r["final_val_nll"] for r in one["runs"]]
    assert all(r["reached_target"] for r in one["runs"]) and one["summary"]["metagqn"]["fraction_reached_target"] == 1
    s = one["summary"]["metagqn"]
    finals = [r["final_val_nll"] for r in one["runs"]]
    assert s["final_nll_spread"] == pytest.approx(max(finals) - min(finals))
    assert one["learned_criterion"] == LEARNED_CRITERION
    assert all(math.isfinite(r["final_mse_ratio"]) and math.isfinite(r["final_fg_ratio"]) for r in one["runs"])
    assert all(math.isfinite(x) for x in finals)


def test_sweep_rejects_unknown_field(base: dict, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="z_chanels"):
        run_sweep("tiny", ["gqn"], "model.z_chanels", [3], out_dir=tmp_path, steps=2, overrides=base, progress=False)


def test_suite_training_on_a_tiny_budget(base: dict, tmp_path: Path) -> None:
    import dataclasses

    from gqnbench.training.budgets import suite_budget
    from gqnbench.training.suite import run_suite_training

    budget = dataclasses.replace(
        suite_budget("tiny"),
        ttt_seeds=1,
        ttt_budget_steps=10,
        sweep_steps=10,
        threads=1,
        extra_overrides={"data.root": base["data.root"], "train.tensorboard": False},
    )
    paths = run_suite_training("tiny", tmp_path, budget=budget, progress=False)
    ttt = read_result(paths["time_to_target"], "time_to_target")
    assert {r["model"] for r in ttt["runs"]} == {"gqn", "metagqn"}
    # The target is 1.2x the mean frame's MSE, resolved as an NLL on the validation episode.
    constant, base_mse = ttt["nll_constant"], ttt["mean_frame"]["val_mse"]
    assert ttt["target_mse_ratio"] == 1.2
    assert ttt["target_nll"] == pytest.approx(constant + 0.5 * 3 * 16 * 16 * 1.2 * base_mse)
    sweep = read_result(paths["sweep"], "sweep")
    assert sweep["values"] == list(budget.sweep_values) and len(sweep["runs"]) == 6
    assert all(r["status"] == "completed" for r in sweep["runs"])
    # Each model's default z (gqn 2, metagqn 4) is its seed-0 time-to-target run, not trained again.
    reused = {(r["model"], r["value"]) for r in sweep["runs"] if r["reused_main_run"]}
    assert reused == {("gqn", 2), ("metagqn", 4)}
    gqn_main = next(r for r in ttt["runs"] if r["model"] == "gqn")
    gqn_sweep = next(r for r in sweep["runs"] if r["model"] == "gqn" and r["value"] == 2)
    assert gqn_sweep["run_file"] == "runs/" + gqn_main["run_file"].split("/")[-1]
    samples = read_result(paths["samples"], "samples")
    assert set(samples["scenes"][0]["predictions"]) == {"gqn", "metagqn"}
