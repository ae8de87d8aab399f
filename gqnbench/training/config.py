"""TrainConfig: optimiser, schedules, evaluation cadence and fast-path switches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 36
    steps: int = 35_000
    lr_start: float = 5e-4
    lr_end: float = 5e-5
    lr_anneal_steps: int = 1_600_000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float | None = None  # off, as in the paper
    eval_every: int = 1000
    checkpoint_every: int = 1000
    seed: int = 0
    amp: str = "off"  # off | bf16 | fp16 (fp16 only on CUDA, with a grad scaler)
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch.set_num_threads; None leaves the default
    nll_blowup: float = 1e7  # a validation NLL above this marks the run diverged
