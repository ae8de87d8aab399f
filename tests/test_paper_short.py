"""The paper-scale recipe (preset ``paper-short``): the study's sizes, schedules compressed to the run,
a data set the run cannot memorise, and the recipe training end to end at tiny sizes on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from gqnbench.cli import main as cli_main
from gqnbench.data.generate import generate_dataset
from gqnbench.harness.params import parameter_report
from gqnbench.models import build_model
from gqnbench.presets import SIGMA_ANNEAL_FRACTION, compressed_schedules, get_preset
from gqnbench.results import read_result


def test_the_recipe_has_the_studys_sizes():
    short, paper = get_preset("paper-short"), get_preset("paper")
    for model in ("gqn", "metagqn"):
        a, b = short.model_config(model), paper.model_config(model)
        sizes = ("image_size", "hidden_channels", "r_channels", "z_channels", "num_layers", "representation")
        assert [getattr(a, f) for f in sizes] == [getattr(b, f) for f in sizes]
    assert short.train.batch_size == 36 and short.data.image_size == 64
    assert parameter_report("gqn", short)["total"] == 49_469_343


def test_schedules_compress_to_the_run_length():
    preset = get_preset("paper-short")
    steps = preset.train.steps
    gqn = build_model("gqn", preset.model_config("gqn"))
    anneal_end = round(SIGMA_ANNEAL_FRACTION * steps)
    assert gqn.pixel_sigma(0) == 2.0 and gqn.pixel_sigma(anneal_end) == pytest.approx(0.7)
    assert gqn.pixel_sigma(anneal_end // 2) == pytest.approx(1.35)  # linear in between, as the paper's
    assert preset.train.lr_start == preset.train.lr_end  # the paper's 1.6M-step anneal barely moves in a short run
    assert preset.train.eval_every * 16 == steps and preset.train.checkpoint_every == steps
    # Another length: the same fractions of it.
    longer = get_preset("paper-short", compressed_schedules(10_000))
    assert longer.train.steps == 10_000 and longer.model_config("gqn").sigma_anneal_steps == 6_000
    # Each training scene is drawn at most about 16 times in the run: too few to memorise it.
    train_scenes = preset.data.generate_scenes * (1 - preset.data.val_fraction)
    assert preset.train.batch_size * steps / train_scenes <= 16


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paper-short-data") / "root"
    return generate_dataset(root, 24, seed=4, val_fraction=0.25, scenes_per_file=12, workers=1, progress=False)


# The recipe at tiny sizes: every field the recipe sets is kept except the sizes a CPU test cannot afford.
TINY_SIZES = [
    "model.image_size=16", "data.image_size=16", "model.hidden_channels=8", "model.r_channels=16",
    "model.num_layers=2", "gqn.z_channels=2", "metagqn.z_channels=4", "train.batch_size=4",
    "data.val_scenes=4", "data.num_workers=0", "train.tensorboard=false", "train.log_every=1",
]  # fmt: skip


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_the_recipe_trains_end_to_end_on_the_cpu(model, data_root, tmp_path, capsys):
    argv = ["train", "--model", model, "--preset", "paper-short", "--compress-to", "20", "--tag", "short",
            "--out", str(tmp_path), "--no-progress", "--set", f"data.root={data_root}"]  # fmt: skip
    for item in TINY_SIZES:
        argv += ["--set", item]
    assert cli_main(argv) == 0
    doc = read_result(tmp_path / "runs" / f"{model}-short-seed0.json", "training_run")
    assert doc["status"] == "completed" and doc["final"]["step"] == 20 and doc["preset"] == "paper-short"
    assert [p["step"] for p in doc["eval_curve"]] == list(range(0, 21, 1))  # 16 evaluations a run: every step here
    assert doc["config"]["train"]["lr_start"] == doc["config"]["train"]["lr_end"] == 1e-3
    sigma = {p["step"]: p["sigma"] for p in doc["train_curve"]}
    if model == "gqn":  # annealed over the first 12 of the 20 steps
        assert sigma[0] == 2.0 and sigma[12] == pytest.approx(0.7) and sigma[19] == pytest.approx(0.7)
    else:
        assert set(sigma.values()) == {1.0}
    assert doc["dtype"] == "bfloat16-autocast"
    first, last = doc["eval_curve"][0]["val_mse"], doc["eval_curve"][-1]["val_mse"]
    assert last < first  # it trains
