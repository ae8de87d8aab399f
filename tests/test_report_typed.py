"""The report's readers on typed results documents: which runs are "main", and what a field the
file did not record turns into (a missing cell or an explicit "not recorded", never a made-up number)."""

from __future__ import annotations

import math
from pathlib import Path

from gqnbench.judging import image_values, nll_constant
from gqnbench.report import formatting as F
from gqnbench.report.inputs import load_results
from gqnbench.report.runs import main_runs, reference, run_info
from gqnbench.report.sections.environment import stage_frame
from gqnbench.report.sections.samples import _caption
from gqnbench.report.sections.table1 import _params_display, nll_frame, params_frame
from gqnbench.results import write_result
from gqnbench.schema.mainjob import MainJobDoc
from gqnbench.schema.study import SamplesDoc

BASE = {"val_nll": 800.0, "val_mse": 0.02, "val_fg_mse": 0.1}


def _run(folder: Path, name: str, model: str = "gqn", status: str = "completed", **extra) -> Path:
    """A small training run; ``extra`` replaces top-level fields (``final``, ``baselines``...)."""
    curve = [{"step": 0, "val_nll": 900.0, "val_mse": 0.04}, {"step": 100, "val_nll": 850.0, "val_mse": 0.03}]
    doc = {
        "model": model,
        "seed": 0,
        "tag": "main",
        "preset": "cpu",
        "status": status,
        "eval_curve": curve,
        "baselines": {"mean_image": BASE},
        "final": {"step": 100, "val_nll": 850.0, "val_mse": 0.03},
        "config": {"model": {"image_size": 16}},
        **extra,
    }
    return write_result(folder / f"{name}.json", "training_run", doc)


def _points_to(folder: Path, kind: str, names: list[str]) -> None:
    """A time_to_target or sweep file whose runs point to the training runs ``names``."""
    if kind == "time_to_target":
        runs = [
            {"model": "gqn", "seed": 0, "reached": False, "steps": None, "wall_s": None, "run_file": f"{n}.json"}
            for n in names
        ]
        payload = {"preset": "cpu", "target_nll": None, "budget": {"steps": 100, "seconds": None}, "summary": {}}
    else:
        runs = [
            {"model": "gqn", "value": 3, "seed": 0, "status": "completed", "learned": True, "diverged": False,
             "final_val_nll": 850.0, "run_file": f"{n}.json"}
            for n in names
        ]  # fmt: skip
        payload = {"field": "model.z_channels", "values": [3]}
    write_result(folder / f"{kind}.json", kind, {**payload, "runs": runs})


def _names(runs) -> list[str]:
    return sorted(r.path.stem for r in runs)


def test_main_runs_are_those_time_to_target_points_to(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _run(tmp_path, name)
    _points_to(tmp_path, "time_to_target", ["a", "b"])
    _points_to(tmp_path, "sweep", ["c"])
    runs, how = main_runs(load_results([tmp_path]))
    assert _names(runs) == ["a", "b"] and "time-to-target" in how


def test_without_time_to_target_the_runs_outside_sweeps_are_main_and_failed_ones_are_left_out(tmp_path: Path) -> None:
    _run(tmp_path, "a")
    _run(tmp_path, "b", status="diverged", diverged_step=50)
    _run(tmp_path, "in_sweep")
    _points_to(tmp_path, "sweep", ["in_sweep"])
    runs, how = main_runs(load_results([tmp_path]))
    assert _names(runs) == ["a"]
    assert "not part of a sweep" in how and "1 diverged or unfinished run(s) left out" in how


def test_a_missing_nll_constant_is_recomputed_from_the_image_size_and_a_missing_reference_is_nan(
    tmp_path: Path,
) -> None:
    _run(tmp_path, "a")
    _run(tmp_path, "b", final={"step": 100, "val_nll": 850.0, "nll_constant": 1.5})
    results = load_results([tmp_path])
    a, b = sorted(results.of_kind("training_run"), key=lambda r: r.path.name)
    assert run_info(a)["nll_constant"] == nll_constant(image_values(16)) and run_info(b)["nll_constant"] == 1.5
    assert math.isnan(run_info(b)["final_val_mse"])  # not recorded: NaN, not 0
    assert all(math.isnan(v) for v in reference(a, "nearest_context").values())
    nll, _ = nll_frame([a])
    # The run recorded no nearest-context reference: Table 1 has no row for it rather than one of NaNs.
    assert list(nll.loc[nll["source"] == "reference", "model"]) == ["mean training frame"]


def test_a_parameter_count_without_the_used_count_shows_as_missing(tmp_path: Path) -> None:
    params = {"gqn": {"total": 1000, "used_by_objective": 900}, "toy": {"total": 50}}
    write_result(tmp_path / "costs.json", "costs", {"preset": "cpu", "params": params})
    frame = params_frame(load_results([tmp_path])).set_index("model")
    assert frame.loc["gqn", "unused"] == 100 and frame.loc["gqn", "preset"] == "cpu"
    assert math.isnan(frame.loc["toy", "used_by_objective"]) and math.isnan(frame.loc["toy", "study_params"])
    shown = _params_display(frame.reset_index()).set_index("model")
    assert (
        shown.loc["toy", "ours: used by the objective"] == F.MISSING
        and shown.loc["toy", "ours: never used"] == F.MISSING
    )


def test_a_stage_without_a_wall_time_adds_nothing_to_the_total() -> None:
    plan = {"preset": "cpu", "quick": True, "data_root": None, "models": ["gqn"], "budget": {}, "overrides": {}}
    stages = {"train": {"status": "done", "wall_s": 12.5}, "report": {"status": "failed"}}
    frame = stage_frame(MainJobDoc.model_validate({"kind": "main_job", "plan": plan, "stages": stages}))
    assert list(frame["stage"]) == ["train", "report", "total"]
    assert math.isnan(frame["wall_s"].iloc[1]) and frame["wall_s"].iloc[2] == 12.5


def test_the_samples_caption_says_which_z_only_when_the_file_records_it() -> None:
    doc = {"kind": "samples", "image_size": 8, "step": 2000, "scenes": []}
    assert "(z not recorded)" in _caption(SamplesDoc.model_validate(doc))
    assert "2,000 training steps (mean)" in _caption(SamplesDoc.model_validate({**doc, "z": "mean"}))
