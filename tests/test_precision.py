"""train.amp = auto (gqnbench.precision): the choice follows the measured step times and the numerics
check, forcing a precision skips the measurement, a resumed run keeps its recorded choice, the main
job measures once for all its runs, and the results files carry the choice (schema-checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gqnbench.data.generate import generate_dataset
from gqnbench.mainjob import MainJob
from gqnbench.precision import PrecisionChoice, choose_precision, time_precisions
from gqnbench.presets import get_preset
from gqnbench.results import read_result, write_result
from gqnbench.schema import SchemaError
from gqnbench.training.data_source import load_training_data
from gqnbench.training.loop import train


def _timer(times: dict[str, dict[str, float]]):
    """A step timer that reports ``times`` (model -> precision -> s) instead of timing: the measurement's seam."""

    def timer(model, preset, device, rounds, warmup):
        return times[model]

    return timer


@pytest.mark.parametrize(
    ("times", "chosen"),
    [
        ({"gqn": {"fp32": 0.030, "bf16": 0.020}, "metagqn": {"fp32": 0.025, "bf16": 0.021}}, "bf16"),
        # bf16 slower for one model (a CPU without AMX): both train in fp32, the comparison stays fair.
        ({"gqn": {"fp32": 0.030, "bf16": 0.020}, "metagqn": {"fp32": 0.025, "bf16": 0.027}}, "fp32"),
        ({"gqn": {"fp32": 0.020, "bf16": 0.020}, "metagqn": {"fp32": 0.025, "bf16": 0.021}}, "fp32"),  # a tie
    ],
)
def test_the_choice_follows_the_measured_step_times(times, chosen):
    choice = choose_precision(get_preset("tiny"), ["gqn", "metagqn"], "cpu", timer=_timer(times))
    assert choice.chosen == chosen and choice.step_s == times
    assert choice.numerics_passed == {"gqn": True, "metagqn": True}  # the real bf16 check against fp64
    assert ("not faster" in choice.reason) is (chosen == "fp32")


def test_a_failed_numerics_check_means_fp32(monkeypatch):
    import gqnbench.precision as precision
    from gqnbench.numerics import check_numerics, perturb_weights

    # bf16 made wrong (weights perturbed on its path only): faster or not, it must not train.
    def wrong_bf16(*args, **kwargs):
        return check_numerics(*args, fast_model_hook=perturb_weights(0.5), **kwargs)

    monkeypatch.setattr(precision, "check_numerics", wrong_bf16)
    fast = {"gqn": {"fp32": 0.030, "bf16": 0.010}}
    choice = choose_precision(get_preset("tiny"), ["gqn"], "cpu", timer=_timer(fast))
    assert choice.chosen == "fp32" and choice.numerics_passed == {"gqn": False}
    assert "numerics" in choice.reason


def test_the_real_timer_times_both_precisions():
    times = time_precisions("metagqn", get_preset("tiny"), __import__("torch").device("cpu"), rounds=2, warmup=1)
    assert set(times) == {"fp32", "bf16"} and all(t > 0 for t in times.values())


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("precision-data") / "root"
    generate_dataset(root, 24, seed=2, val_fraction=0.25, scenes_per_file=12, workers=1, progress=False)
    overrides = {"data.root": str(root), "data.val_scenes": 4, "train.tensorboard": False, "train.amp": "auto"}
    return get_preset("tiny", overrides)


def test_a_run_records_its_choice_and_a_resumed_run_keeps_it(preset, tmp_path: Path):
    data = load_training_data(preset.data, progress=False)
    part = train(preset, "gqn", tmp_path, steps=12, data=data, progress=False, stop_at_step=6)
    first = read_result(part.run_file, "training_run")["precision_choice"]
    assert first["source"] == "measured" and first["chosen"] in ("fp32", "bf16")
    assert set(first["step_s"]["gqn"]) == {"fp32", "bf16"}
    assert part.doc["config"]["train"]["amp"] == "auto"  # the request; the dtype is what ran
    assert part.doc["dtype"] == {"fp32": "float32", "bf16": "bfloat16-autocast"}[first["chosen"]]
    resumed = train(preset, "gqn", tmp_path, steps=12, data=data, progress=False, resume=True)
    kept = resumed.doc["precision_choice"]
    # Measured again, the times would differ in their last digits: the record is the first run's.
    assert resumed.doc["resumed_from_step"] == 6 and kept["source"] == "checkpoint"
    assert kept["step_s"] == first["step_s"] and kept["chosen"] == first["chosen"]


def test_forcing_a_precision_skips_the_measurement(preset, tmp_path: Path):
    data = load_training_data(preset.data, progress=False)
    forced = get_preset("tiny", {"data.root": preset.data.root, "data.val_scenes": 4, "train.tensorboard": False,
                                 "train.amp": "bf16"})  # fmt: skip
    doc = train(forced, "metagqn", tmp_path, steps=2, data=data, progress=False).doc
    assert doc["precision_choice"] is None and doc["dtype"] == "bfloat16-autocast"


def test_the_main_job_measures_once_for_all_its_runs(preset, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GQNBENCH_CACHE", str(tmp_path / "cache"))
    skip = ("costs", "benchmarks", "profile", "sweep", "samples", "report")
    job = MainJob(preset="tiny", out=tmp_path / "job", quick=True, skip=skip, data_root=preset.data.root,
                  user_overrides={"train.amp": "auto"}, cache_root=tmp_path / "cache")  # fmt: skip
    job.run(log=lambda _: None)
    recorded = read_result(tmp_path / "job" / "results" / "mainjob.json", "main_job")["precision"]
    assert recorded["source"] == "main job" and set(recorded["step_s"]) == {"gqn", "metagqn"}
    runs = sorted((tmp_path / "job" / "results" / "time_to_target" / "runs").glob("*.json"))
    assert len(runs) == 2
    for run in runs:
        doc = read_result(run, "training_run")
        assert doc["precision_choice"] == recorded  # the same measurement, not one per run
        assert doc["fast_path"]["spec"] == "off"  # the CPU step: no fast path, recorded as it ran
    # The report shows the choice and the two step times per model (Costs).
    from gqnbench.report.build import build_report
    from gqnbench.report.inputs import load_results

    md = build_report(load_results([tmp_path / "job" / "results"]), tmp_path / "report", strict=True).markdown
    text = md.read_text()
    assert "Training precision chosen by measurement" in text
    for times in recorded["step_s"].values():
        assert f"{times['fp32'] * 1e3:.1f}" in text and f"{times['bf16'] * 1e3:.1f}" in text


def test_the_choice_is_schema_checked(tmp_path: Path):
    choice = PrecisionChoice("fp32", {"gqn": {"fp32": 0.1, "bf16": 0.2}}, {"gqn": True}, "why", "cpu", 1, 4, 3)
    assert PrecisionChoice.from_dict(json.loads(choice.to_json())) == choice
    doc = {"plan": {"preset": "tiny", "quick": True, "data_root": None, "models": ["gqn"], "budget": {},
                    "overrides": {}}, "stages": {}}  # fmt: skip
    write_result(tmp_path / "ok.json", "main_job", {**doc, "precision": choice.as_dict()})
    with pytest.raises(SchemaError, match="precision"):
        write_result(tmp_path / "bad.json", "main_job", {**doc, "precision": "bf16"})
