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
    # off (= fp32) | bf16 | fp16 (fp16 only on CUDA, with a grad scaler) | auto: fp32 or bf16, whichever
    # this host runs faster and passes the numerics check (gqnbench.precision)
    amp: str = "off"
    compile: bool = False
    # The step's fast path (gqnbench.step.FastPath): "auto" is every switch on CUDA and none on the
    # CPU; "off"; or switch names such as "auto,-cuda_graph" or "channels_last,fused_cell".
    fast_path: str = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch.set_num_threads; None leaves the default
    nll_blowup: float = 1e7  # a validation NLL above this marks the run diverged
    # Added by the training engine (issue 4).
    log_every: int = 10  # a train_curve point every this many steps (every step's loss is still NaN-checked)
    eval_batch_size: int = 64  # validation scenes per forward; fixed so the eval noise does not depend on it
    eval_use_mean: bool = False  # False: sample z (prior for gqn, q(z|D) for metagqn), as the study does
    tensorboard: bool = True  # TensorBoard scalars next to the results file
    inject_nan_at_step: int | None = None  # fault injection for tests: the loss at this step becomes NaN
    flush_denormal: bool = True  # CPU flush-to-zero: denormals from saturated gates made fp32 steps 2-5x slower
    # amp=auto already resolved (the main job measures once for all its runs): the PrecisionChoice as JSON.
    amp_choice: str | None = None
