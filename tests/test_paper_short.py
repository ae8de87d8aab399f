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


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models trained by the recipe at tiny sizes (the CLI, as the device session runs it), and their samples."""
    out = tmp_path_factory.mktemp("paper-short-runs")
    sizes = [arg for item in TINY_SIZES for arg in ("--set", item)]
    for model in ("gqn", "metagqn"):
        argv = ["train", "--model", model, "--preset", "paper-short", "--compress-to", "20", "--tag", "short",
                "--out", str(out), "--no-progress", "--set", f"data.root={data_root}", *sizes]  # fmt: skip
        assert cli_main(argv) == 0
    runs = [str(out / "runs" / f"{m}-short-seed0.pt") for m in ("gqn", "metagqn")]
    argv = ["samples", *runs, "--preset", "paper-short", "--num-scenes", "2", "--out", str(out / "samples.json"),
            "--set", f"data.root={data_root}", *sizes]  # fmt: skip
    assert cli_main(argv) == 0
    return out


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_the_recipe_trains_end_to_end_on_the_cpu(model, trained):
    doc = read_result(trained / "runs" / f"{model}-short-seed0.json", "training_run")
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


def test_the_report_section_shows_the_runs_as_recorded(trained, tmp_path):
    import pandas as pd

    from gqnbench.report.build import build_report
    from gqnbench.report.inputs import load_results
    from gqnbench.report.sections.paper_scale import NO_RUN, PRESET

    assert PRESET == "paper-short"  # the report restates the preset's name (it imports no presets)
    md = build_report(load_results([trained]), tmp_path / "report", strict=True).markdown.read_text()
    section = md[md.index("## The study's configuration on one GPU") :]
    assert "No GPU run" not in section and "paper_scale_curves.png" in section and "paper_scale_samples.png" in section
    rows = pd.read_csv(tmp_path / "report" / "tables" / "paper_scale_runs.csv").set_index("model")
    for model in ("gqn", "metagqn"):
        doc = read_result(trained / "runs" / f"{model}-short-seed0.json", "training_run")
        base = doc["baselines"]["mean_image"]["val_mse"]
        assert rows.loc[model, "mse_ratio"] == pytest.approx(doc["eval_curve"][-1]["val_mse"] / base)
        assert rows.loc[model, "steps"] == 20 and rows.loc[model, "image_size"] == 16
    assert "figures/samples.png" not in md  # drawn here, not again in "Sample predictions"
    # Without the runs the section says so, and shows no number.
    alone = build_report(load_results([trained / "samples.json"]), tmp_path / "alone", strict=True)
    section = alone.markdown.read_text().split("## The study's configuration on one GPU", 1)[1].split("\n## ", 1)[0]
    assert NO_RUN in section and not any(ch.isdigit() for ch in section.replace("64x64", "").replace("L = 12", "")
                                         .replace("128", "").replace("256", "").replace("36", ""))  # fmt: skip
