"""The one step object (gqnbench.step): the harness times the step the training loop trains.

The training side is the real loop (``train``), the harness side is ``prepare_step``'s step
object fed the batches the training sampler gives; both start from the same seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gqnbench.data.generate import generate_dataset
from gqnbench.harness.common import StepSpec, prepare_step
from gqnbench.models import build_model
from gqnbench.presets import get_preset
from gqnbench.step import (
    UnsupportedCase,
    autocast,
    build_step,
    flush_denormal_enabled,
    flush_denormals,
    parse_precision,
    precision_label,
    resolve_device,
)
from gqnbench.training.checkpoint import load_torch
from gqnbench.training.data_source import load_training_data
from gqnbench.training.loop import noise_seed, train


@pytest.fixture(scope="module")
def overrides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("step-data") / "root"
    generate_dataset(root, 24, seed=7, val_fraction=0.25, scenes_per_file=12, workers=1, progress=False)
    return {"data.root": str(root), "data.val_scenes": 4, "train.tensorboard": False, "train.log_every": 1}


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_harness_step_is_the_training_loops_step(model: str, overrides: dict, tmp_path: Path) -> None:
    preset = get_preset("tiny", overrides)
    data = load_training_data(preset.data, progress=False)
    run = train(preset, model, tmp_path, steps=3, data=data, progress=False)
    trained = load_torch(tmp_path / "runs" / f"{run.doc['files']['weights']}", "weights")["state_dict"]

    cfg = preset.train
    step = prepare_step(
        StepSpec(model, "tiny", batch=cfg.batch_size, seed=cfg.seed, overrides=tuple(overrides.items()))
    )
    assert step.trainer is not None and type(step.optimizer) is type(torch.optim.Adam([torch.zeros(1)]))
    initial = {k: v.clone() for k, v in step.model.state_dict().items()}
    torch.manual_seed(noise_seed(cfg.seed, 0))  # the loop's z-noise stream of rank 0
    sampler = data.sampler(cfg.batch_size, cfg.seed, preset.data)
    losses = [step.trainer.train_step(sampler.batch(t), t).loss.item() for t in range(3)]

    assert losses == [p["loss"] for p in run.doc["train_curve"]]
    timed = step.model.state_dict()
    assert trained.keys() == timed.keys()
    assert all(torch.equal(trained[k], timed[k]) for k in trained)
    assert any(not torch.equal(trained[k], initial[k]) for k in trained)  # three real updates happened


def test_flush_to_zero_is_restored_after_each_step_scope() -> None:
    before = flush_denormal_enabled()
    try:
        for outer in (False, True):
            torch.set_flush_denormal(outer)
            with flush_denormals(not outer):
                assert flush_denormal_enabled() is (not outer) or torch.backends.cpu.get_cpu_capability() == "DEFAULT"
            assert flush_denormal_enabled() is outer or torch.backends.cpu.get_cpu_capability() == "DEFAULT"
        # The harness's step (built and run) leaves the process's mode as it found it: the old
        # prepare_step switched flush-to-zero on for the whole process.
        torch.set_flush_denormal(False)
        step = prepare_step(StepSpec("gqn", "tiny", batch=2))
        step.run()
        assert flush_denormal_enabled() is False
    finally:
        torch.set_flush_denormal(before)


def test_precision_vocabulary() -> None:
    assert parse_precision("off") == "fp32"  # the legacy train.amp spelling
    assert [parse_precision(p) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    assert precision_label("off") == "float32" and precision_label("bf16") == "bfloat16-autocast"
    with pytest.raises(ValueError, match=r"precision must be fp32, bf16 or fp16.*'fp8'"):
        parse_precision("fp8")
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu, "off"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_fp16_and_missing_cuda_are_unsupported_on_cpu() -> None:
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UnsupportedCase, match="fp16 needs a CUDA"):
        build_step(model, get_preset("tiny").train, torch.device("cpu"), precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(UnsupportedCase, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_step_uses_the_configs_adam_and_lr_schedule() -> None:
    preset = get_preset("tiny", {"train.lr_start": 1e-3, "train.lr_end": 1e-4, "train.lr_anneal_steps": 10})
    cfg = preset.train
    step = build_step(build_model("gqn", preset.model_config("gqn")), cfg, torch.device("cpu"))
    group = step.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (1e-3, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    assert not group["fused"]  # plain Adam, as training always used
    assert step.lr_at(0) == pytest.approx(1e-3) and step.lr_at(5) == pytest.approx(5.5e-4)
    assert step.lr_at(50) == pytest.approx(1e-4)
