"""TrainConfig: optimiser, schedules, evaluation cadence and fast-path switches.

Every numeric field declares the values it allows (:func:`gqnbench.config.ranged`); a config
outside them is refused when it is made, so a bad ``--set`` never trains a different model.
"""

from __future__ import annotations

from dataclasses import dataclass

from gqnbench.config import check_ranges, ranged


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = ranged(36, lo=1)
    steps: int = ranged(35_000, lo=1)  # an untrained model is not a run
    lr_start: float = ranged(5e-4, lo=0, lo_open=True)
    lr_end: float = ranged(5e-5, lo=0)
    lr_anneal_steps: int = ranged(1_600_000, lo=0)
    adam_beta1: float = ranged(0.9, lo=0, hi=1, hi_open=True)
    adam_beta2: float = ranged(0.999, lo=0, hi=1, hi_open=True)
    adam_eps: float = ranged(1e-8, lo=0, lo_open=True)
    grad_clip: float | None = ranged(None, lo=0, lo_open=True)  # off, as in the paper
    eval_every: int = ranged(1000, lo=1)
    checkpoint_every: int = ranged(1000, lo=1)
    seed: int = ranged(0, lo=0)
    # off (= fp32) | bf16 | fp16 (fp16 only on CUDA, with a grad scaler) | auto: fp32 or bf16, whichever
    # this host runs faster and passes the numerics check (gqnbench.precision)
    amp: str = "off"
    compile: bool = False
    # The step's fast path (gqnbench.step.FastPath): "auto" is every switch on CUDA and none on the
    # CPU; "off"; or switch names such as "auto,-cuda_graph" or "channels_last,fused_cell".
    fast_path: str = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = ranged(None, lo=1)  # torch.set_num_threads; None leaves the default
    # A validation NLL above this marks the run diverged (inf: only a non-finite NLL does).
    nll_blowup: float = ranged(1e7, lo=0, lo_open=True, finite=False)
    log_every: int = ranged(10, lo=1)  # a train_curve point every this many steps (every step's loss is still NaN-checked)
    eval_batch_size: int = ranged(64, lo=1)  # validation scenes per forward; fixed so the eval noise does not depend on it
    eval_use_mean: bool = False  # False: sample z (prior for gqn, q(z|D) for metagqn), as the study does
    tensorboard: bool = True  # TensorBoard scalars next to the results file
    inject_nan_at_step: int | None = ranged(None, lo=0)  # fault injection for tests: the loss at this step becomes NaN
    flush_denormal: bool = True  # CPU flush-to-zero: denormals from saturated gates made fp32 steps 2-5x slower
    # amp=auto already resolved (the main job measures once for all its runs): the PrecisionChoice as JSON.
    amp_choice: str | None = None

    def __post_init__(self) -> None:
        check_ranges(self)
