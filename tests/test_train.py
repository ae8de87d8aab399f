"""The training loop on real generated data (tiny preset): learning, exact resume, divergence,
time to target, samples and the CLI."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from gqnbench.cli import main as cli_main
from gqnbench.data.generate import generate_dataset
from gqnbench.judging import ratio_curve
from gqnbench.presets import get_preset
from gqnbench.results import read_result
from gqnbench.training.checkpoint import CheckpointError, load_torch
from gqnbench.training.data_source import load_training_data
from gqnbench.training.evaluation import evaluate_sums
from gqnbench.training.loop import train
from gqnbench.training.samples import write_samples
from gqnbench.training.time_to_target import first_reach, median_with_misses, run_time_to_target


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-data") / "root"
    return generate_dataset(root, 48, seed=5, val_fraction=0.25, scenes_per_file=12, workers=1, progress=False)


def _overrides(root: Path, **extra: object) -> dict[str, object]:
    return {
        "data.root": str(root),
        "data.val_scenes": 8,
        "train.tensorboard": False,
        "train.log_every": 1,
        **{k.replace("__", "."): v for k, v in extra.items()},
    }


@pytest.fixture(scope="module")
def preset(data_root: Path):
    return get_preset("tiny", _overrides(data_root))


@pytest.fixture(scope="module")
def data(preset):
    return load_training_data(preset.data, progress=False)


def _losses(doc: dict) -> list[float]:
    return [p["loss"] for p in doc["train_curve"]]


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_validation_error_falls_towards_the_mean_frame(model: str, preset, data, tmp_path: Path) -> None:
    p = get_preset("tiny", {**_overrides(Path(preset.data.root)), "train.eval_every": 20})
    result = train(p, model, tmp_path, steps=60, data=data, progress=False)
    doc = read_result(result.run_file, "training_run")
    ratios = [r["mse_ratio"] for r in ratio_curve(doc)]
    assert doc["status"] == "completed" and [e["step"] for e in doc["eval_curve"]] == [0, 20, 40, 60]
    # The untrained raw head paints near-black noise (1.5-8x the mean frame's MSE); 60 steps
    # learn the background and the average blob. A model whose weights do not move, or that
    # climbs the loss, stays at or above its start.
    assert ratios[-1] < 0.8 * ratios[0] and ratios[-1] < 1.6, ratios
    assert set(doc["baselines"]) == {"mean_image", "nearest_context"}
    assert all(k in doc["eval_curve"][-1] for k in ("val_fg_mse", "z_mean", "z_sampled"))
    assert doc["final"]["nll_constant"] == pytest.approx(16 * 16 * 3 * 0.5 * math.log(2 * math.pi))
    assert doc["final"]["val_nll"] > doc["final"]["nll_constant"]
    assert len(doc["train_curve"]) == 60 and all(math.isfinite(x) for x in _losses(doc))
    assert doc["steps_per_s"] > 0 and doc["environment"]["torch"] == torch.__version__
    weights = load_torch(tmp_path / "runs" / f"{model}-tiny-seed0.pt", "weights")
    assert weights["step"] == 60 and weights["model_name"] == model


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_resume_after_stop_reproduces_uninterrupted_run_exactly(model: str, preset, data, tmp_path: Path) -> None:
    full = train(preset, model, tmp_path / "full", steps=20, data=data, progress=False)
    # Stop at step 13 (between the checkpoints at 10 and 20), as if killed, then resume.
    part = train(preset, model, tmp_path / "split", steps=20, data=data, progress=False, stop_at_step=13)
    assert part.status == "interrupted" and part.doc["train_curve"][-1]["step"] == 12
    resumed = train(preset, model, tmp_path / "split", steps=20, data=data, progress=False, resume=True)
    assert resumed.doc["resumed_from_step"] == 13 and resumed.status == "completed"
    assert _losses(resumed.doc) == _losses(full.doc)  # bitwise, including the z noise of every step
    assert [e["val_nll"] for e in resumed.doc["eval_curve"]] == [e["val_nll"] for e in full.doc["eval_curve"]]
    a = load_torch(tmp_path / "full" / "runs" / f"{model}-tiny-seed0.pt")["state_dict"]
    b = load_torch(tmp_path / "split" / "runs" / f"{model}-tiny-seed0.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished run with the same request is reused, not retrained.
    again = train(preset, model, tmp_path / "split", steps=20, data=data, progress=False, resume=True)
    assert again.skipped and _losses(again.doc) == _losses(full.doc)


def test_keyboard_interrupt_checkpoints_and_resumes_exactly(preset, data, tmp_path: Path) -> None:
    full = train(preset, "gqn", tmp_path / "full", steps=16, data=data, progress=False)

    def ctrl_c_at_7(step: int, record: dict) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(preset, "gqn", tmp_path / "run", steps=16, data=data, progress=False, callback=ctrl_c_at_7)
    doc = read_result(tmp_path / "run" / "runs" / "gqn-tiny-seed0.json", "training_run")
    assert doc["status"] == "interrupted"
    assert load_torch(tmp_path / "run" / "checkpoints" / "gqn-tiny-seed0.ckpt")["state"]["step"] == 7
    resumed = train(preset, "gqn", tmp_path / "run", steps=16, data=data, progress=False, resume=True)
    assert _losses(resumed.doc) == _losses(full.doc)


def test_resume_refuses_a_checkpoint_of_another_config(preset, data, tmp_path: Path) -> None:
    train(preset, "gqn", tmp_path, steps=4, data=data, progress=False, stop_at_step=2)
    other = get_preset("tiny", {**_overrides(Path(preset.data.root)), "train.lr_start": 1e-4})
    with pytest.raises(CheckpointError, match="lr_start"):
        train(other, "gqn", tmp_path, steps=4, data=data, progress=False, resume=True)


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_nan_loss_marks_run_diverged_without_raising(model: str, preset, data, tmp_path: Path) -> None:
    p = get_preset("tiny", {**_overrides(Path(preset.data.root)), "train.inject_nan_at_step": 5})
    result = train(p, model, tmp_path, steps=20, data=data, progress=False)
    doc = read_result(result.run_file, "training_run")
    assert doc["status"] == "diverged" and doc["diverged_step"] == 5
    assert "nan" in doc["diverged_reason"]
    assert [e["step"] for e in doc["train_curve"]] == [0, 1, 2, 3, 4]


def test_validation_blowup_marks_run_diverged(preset, data, tmp_path: Path) -> None:
    # Any real NLL is above the constant (~705 nats), so this threshold trips at the first eval after step 0.
    p = get_preset("tiny", {**_overrides(Path(preset.data.root)), "train.nll_blowup": 100.0})
    result = train(p, "metagqn", tmp_path, steps=20, data=data, progress=False)
    assert result.status == "diverged" and result.doc["diverged_step"] == 0
    assert "nll_blowup" in result.doc["diverged_reason"]


def test_bf16_autocast_trains_and_fp16_needs_cuda(preset, data, tmp_path: Path) -> None:
    p = get_preset("tiny", {**_overrides(Path(preset.data.root)), "train.amp": "bf16"})
    result = train(p, "gqn", tmp_path, steps=5, data=data, progress=False)
    assert result.status == "completed" and result.doc["dtype"] == "bfloat16-autocast"
    assert all(math.isfinite(x) for x in _losses(result.doc))
    if not torch.cuda.is_available():
        p16 = get_preset("tiny", {**_overrides(Path(preset.data.root)), "train.amp": "fp16"})
        with pytest.raises(ValueError, match="fp16 needs a CUDA"):
            train(p16, "gqn", tmp_path / "fp16", steps=2, data=data, progress=False)


def test_evaluation_does_not_depend_on_rank_split(preset, data) -> None:
    torch.manual_seed(0)
    from gqnbench.models import build_model

    model = build_model("gqn", preset.model_config("gqn"))
    kw = {"seed": 7, "chunk": 3, "device": torch.device("cpu")}
    one = evaluate_sums(model, data.val_episode, **kw)
    halves = [evaluate_sums(model, data.val_episode, rank=r, world_size=2, **kw) for r in (0, 1)]
    assert one.num_images == 8 == sum(h.num_images for h in halves)
    assert one.nll_sum == pytest.approx(sum(h.nll_sum for h in halves), rel=1e-12)
    before = torch.get_rng_state()
    assert evaluate_sums(model, data.val_episode, **kw).nll_sum == one.nll_sum  # same noise every time
    assert torch.equal(torch.get_rng_state(), before)  # and the training RNG is untouched


def test_time_to_target_unreachable_is_not_reached(preset, data, tmp_path: Path) -> None:
    path = run_time_to_target(
        preset,
        ["gqn", "metagqn"],
        target_nll=0.0,
        seeds=2,
        budget_steps=10,
        out_dir=tmp_path,
        data=data,
        isolate=False,
        progress=False,
    )
    raw = json.loads(path.read_text())
    assert raw["kind"] == "time_to_target" and len(raw["runs"]) == 4
    for run in raw["runs"]:
        assert run["reached"] is False and run["steps"] is None and run["wall_s"] == "inf"
    for s in raw["summary"].values():
        assert s["median_wall_s"] == "inf" and s["reached"] == 0 and s["total"] == 2
    # A target every model meets before training is reached at step 0, at 0 s.
    reachable = {"target_nll": 1e9, "seeds": 1, "budget_steps": 10, "data": data, "isolate": False, "progress": False}
    easy = run_time_to_target(preset, ["gqn"], out_dir=tmp_path / "easy", **reachable)
    run = read_result(easy, "time_to_target")["runs"][0]
    assert run["reached"] is True and run["steps"] == 0 and run["wall_s"] == 0.0
    # Training past the target keeps the first reach as the time to target but the whole curve.
    past = run_time_to_target(preset, ["gqn"], out_dir=tmp_path / "past", stop_at_target=False, **reachable)
    doc = read_result(past, "time_to_target")
    run = doc["runs"][0]
    assert doc["stop_at_target"] is False
    assert run["reached"] is True and run["steps"] == 0 and run["wall_s"] == 0.0
    curve = read_result(tmp_path / "past" / run["run_file"], "training_run")["eval_curve"]
    assert curve[-1]["step"] == 10


def test_first_reach_and_median_with_misses() -> None:
    curve = [
        {"step": 0, "wall_s": 0.0, "val_nll": 900.0},
        {"step": 10, "wall_s": 5.0, "val_nll": 800.0},
        {"step": 20, "wall_s": 11.0, "val_nll": 700.0},
    ]
    assert first_reach(curve, 750.0) == (True, 20, 11.0)
    assert first_reach(curve, 750.0, budget_steps=15) == (False, None, math.inf)
    assert first_reach(curve, 750.0, budget_seconds=10.0) == (False, None, math.inf)
    assert first_reach([{"step": 0, "wall_s": 0.0, "val_nll": None}], 1e9) == (False, None, math.inf)
    assert median_with_misses([3.0, math.inf, 1.0]) == 3.0
    assert median_with_misses([1.0, math.inf, math.inf]) == math.inf
    assert median_with_misses([1.0, math.inf]) == math.inf


def test_samples_from_trained_weights(preset, data, tmp_path: Path) -> None:
    files = [train(preset, m, tmp_path, steps=3, data=data, progress=False).run_file for m in ("gqn", "metagqn")]
    out = write_samples(preset, files, tmp_path / "samples.json", num_scenes=2, episode=data.val_episode)
    doc = read_result(out, "samples")
    assert doc["step"] == 3 and doc["image_size"] == 16 and len(doc["scenes"]) == 2
    scene = doc["scenes"][0]
    assert len(scene["context"]) == 3 and set(scene["predictions"]) == {"gqn", "metagqn"}
    img = Image.open(io.BytesIO(base64.b64decode(scene["predictions"]["gqn"])))
    assert img.size == (16, 16) and img.mode == "RGB"


def test_cli_train_then_resume(preset, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--model", "metagqn", "--preset", "tiny", "--steps", "6", "--out", str(tmp_path), "--no-progress"]
    # flush_denormal=false: the CLI would otherwise switch flush-to-zero on for the whole pytest process.
    extra = {"train__tensorboard": True, "train__flush_denormal": False}
    for key, value in _overrides(Path(preset.data.root), **extra).items():
        args += ["--set", f"{key}={value}"]
    assert cli_main(args) == 0
    assert "completed" in capsys.readouterr().out
    runs = list((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 1 and read_result(runs[0], "training_run")["final"]["step"] == 6
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert cli_main([*args, "--resume"]) == 0
    assert "reused" in capsys.readouterr().out


def test_cli_budget_parsing() -> None:
    from gqnbench.commands.train import parse_budget

    assert parse_budget("500") == (500, None)
    assert parse_budget("300s") == (None, 300.0)
    assert parse_budget("2m") == (None, 120.0)
    with pytest.raises(ValueError, match="budget"):
        parse_budget("ten")


def test_flush_denormals_is_scoped() -> None:
    from gqnbench.step import flush_denormal_enabled, flush_denormals

    # An earlier in-process CLI test (`gqnbench train` runs in this process) may have turned
    # flush-to-zero on for the whole process; start from the default and put the process back as it was.
    was_process_wide = flush_denormal_enabled()
    torch.set_flush_denormal(False)
    try:
        denormal = torch.tensor([1e-39])
        assert (denormal * 1.0).item() != 0.0
        with flush_denormals(True):
            flushed = (denormal * 1.0).item()
        assert (denormal * 1.0).item() != 0.0  # restored afterwards
        if torch.backends.cpu.get_cpu_capability() != "DEFAULT":  # x86 with SSE3+: FTZ/DAZ available
            assert flushed == 0.0
    finally:
        torch.set_flush_denormal(was_process_wide)


def test_dataloader_workers_give_the_same_batches(preset, data, tmp_path: Path) -> None:
    base = train(preset, "metagqn", tmp_path / "a", steps=6, data=data, progress=False)
    p = get_preset("tiny", {**_overrides(Path(preset.data.root)), "data.num_workers": 1})
    workers = train(p, "metagqn", tmp_path / "b", steps=6, data=data, progress=False)
    assert _losses(workers.doc) == _losses(base.doc)
