"""Default targets and the suite's training budgets per preset (what ``gqnbench run`` uses).

Targets are either a validation NLL (nats per image, the study's metric, SPEC section 1) or
a :class:`MseRatioTarget`: a fraction of the **mean-frame** MSE (the reference predictor that
ignores the scene), turned into an NLL on the data actually used,
``NLL = constant + 0.5 * D * ratio * MSE_mean_frame`` (D = pixel values per image). A ratio
below 1 can only be reached by a model that uses its context, so time to target then measures
learning, not how fast a model finds the average frame.

- ``paper``: 11,439, the study's GQN at 35,000 steps ("how long until a model is as good as the
  study's GQN at the end of its run").
- ``cpu``: 0.90 x the mean-frame MSE. How it was chosen: the quality that the slower model
  reaches in most seeds within 80% of its budget, on the learning study's reference curves of
  the cpu configuration (entry ``s16-base``; reports/example, section "Learning study"),
  rounded up to 0.01. In those curves GQN passes 0.90 at about 1,000 steps and metagqn at about
  1,500 of a 5,000-step budget; a lower target (0.85) was reached late or not at all by
  metagqn's seeds, which would make the median infinite.
- ``tiny``: 1.2 x the mean-frame MSE: untrained tiny models start at about 2x and pass 1.2 within
  a few dozen steps; only the plumbing is being tested there.

SUITE_BUDGETS: what ``gqnbench run`` trains at a preset. At ``cpu``: three seeds of both models
for 4,000 steps (the main runs: Table 1, Figure 6 and time to target), and the z = 3 / 32 / 128
sweep with the same budget, one seed, whose default setting *is* the seed-0 main run (gqn z = 3,
metagqn z = 32), so the sweep adds 4 runs. The 10 runs go as two one-thread processes side by
side, every run in one precision (``amp = auto``: bf16 where this host runs it faster than fp32
and it passes its numerics check, else fp32; measured once per main job at one thread, see
gqnbench.precision), so the comparison stays fair: one bf16 step takes 45 ms (gqn) / 37 ms
(metagqn) on one core of the AMX host whether or not the other core is busy, against 40 / 26 ms
on two, so two one-thread runs side by side do 1.8x / 1.4x the work; a run takes 4-5 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MseRatioTarget:
    """A target quality as a fraction of the mean-frame MSE on the validation episode."""

    ratio: float

    def nll(self, constant: float, mean_frame_mse: float, image_size: int) -> float:
        """The validation NLL (sigma 1, nats per image) at ``ratio`` x the mean-frame MSE."""
        return constant + 0.5 * 3 * image_size * image_size * self.ratio * mean_frame_mse

    def describe(self) -> str:
        return f"{self.ratio:g} x the mean-frame MSE"


Target = float | MseRatioTarget

DEFAULT_TARGETS: dict[str, Target] = {
    "paper": 11_439.0,
    "cpu": MseRatioTarget(0.90),
    "tiny": MseRatioTarget(1.2),
}


def default_target(preset: str) -> Target:
    if preset not in DEFAULT_TARGETS:
        raise KeyError(
            f"no default target NLL for preset {preset!r}; pass one (presets with one: {sorted(DEFAULT_TARGETS)})"
        )
    return DEFAULT_TARGETS[preset]


def resolve_target(target: Target, constant: float, mean_frame_mse: float, image_size: int) -> float:
    """A target as a validation NLL on the data at hand."""
    if isinstance(target, MseRatioTarget):
        return target.nll(constant, mean_frame_mse, image_size)
    return float(target)


@dataclass(frozen=True)
class SuiteBudget:
    """How much training the one-command suite does at a preset."""

    preset: str
    target: Target  # an NLL, or a fraction of the mean-frame MSE (resolved on the data)
    ttt_seeds: int  # seeds per model for time to target
    ttt_budget_steps: int  # step budget per time-to-target run
    # False: train past the target to the budget, so Table 1 and Figure 6 compare every seed
    # at one step; the time to target is the first evaluation at the target either way.
    ttt_stop_at_target: bool = True
    sweep_field: str = "model.z_channels"
    sweep_values: tuple[Any, ...] = (3, 32, 128)
    sweep_steps: int = 300
    sweep_seeds: int = 1
    # The sweep's setting equal to a model's default is its seed-0 main run (same config, same steps).
    sweep_reuses_main_runs: bool = False
    eval_every: int = 50
    val_scenes: int = 32
    amp: str = "off"
    processes: int = 1  # sweep processes (2 cores: 1 process x 2 threads is as fast and exact)
    threads: int | None = None  # torch threads per training process; None = cores / processes
    note: str = ""
    extra_overrides: dict[str, Any] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        """Preset overrides every suite training run uses (pass to get_preset / --set)."""
        return {
            "train.eval_every": self.eval_every,
            "train.checkpoint_every": self.eval_every,
            "data.val_scenes": self.val_scenes,
            "train.amp": self.amp,
            **self.extra_overrides,
        }


SUITE_BUDGETS: dict[str, SuiteBudget] = {
    "tiny": SuiteBudget(
        preset="tiny",
        target=DEFAULT_TARGETS["tiny"],
        ttt_seeds=2,
        ttt_budget_steps=60,
        ttt_stop_at_target=False,  # as at cpu: the sweep's default setting is then the seed-0 main run
        sweep_values=(2, 4, 8),
        sweep_steps=60,
        sweep_reuses_main_runs=True,
        eval_every=10,
        val_scenes=4,
        note="smoke test of the suite's plumbing; numbers mean nothing",
    ),
    "cpu": SuiteBudget(
        preset="cpu",
        target=DEFAULT_TARGETS["cpu"],
        ttt_seeds=3,
        ttt_budget_steps=4000,
        ttt_stop_at_target=False,
        sweep_steps=4000,
        sweep_reuses_main_runs=True,
        eval_every=250,
        val_scenes=120,
        amp="auto",
        processes=2,
        threads=1,
        note="10 runs of 4,000 steps (3 seeds x 2 models, plus 4 sweep settings) as two one-thread processes",
    ),
    "paper": SuiteBudget(
        preset="paper",
        target=DEFAULT_TARGETS["paper"],
        ttt_seeds=3,
        ttt_budget_steps=35_000,
        sweep_steps=35_000,
        eval_every=1000,
        val_scenes=256,
        amp="bf16",
        note="the study's protocol: GPU days, not for this machine",
    ),
}


def suite_budget(preset: str) -> SuiteBudget:
    if preset not in SUITE_BUDGETS:
        raise KeyError(f"no suite budget for preset {preset!r}; presets with one: {sorted(SUITE_BUDGETS)}")
    return SUITE_BUDGETS[preset]
