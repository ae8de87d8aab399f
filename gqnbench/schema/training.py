"""Schemas of the training kinds: ``training_run``, ``time_to_target`` and ``sweep``.

Required fields are those every writer in gqnbench.training writes and every stored file has;
a field that older files or hand-made fixtures lack is optional with a ``None`` default, and
the report says what it shows when it is missing. A number that may be NaN is ``float | None``
(NaN is written as ``null``); ``"inf"`` reads back as ``math.inf``.

Impossible states are refused, not only wrong types: an unknown status, a completed run without
a finite final NLL (or without evaluations), a final step beyond the run's steps, a diverged run
without the step it diverged at, a failed run without its error, a target "reached" without the
step and time it was reached at.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import model_validator

from gqnbench.schema.base import OpenPart, Part, ResultsDoc, register_kind

# A training run: finished (completed with its numbers, or diverged), stopped before its end
# (interrupted, or still running / killed without a word), or failed with an error.
RunStatus = Literal["completed", "diverged", "interrupted", "running", "failed"]
# A run's row in a sweep or time-to-target file: it trained to its end, diverged, or failed with an error.
RowStatus = Literal["completed", "diverged", "failed"]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)

# A swept config value: whatever the swept field holds (latent channels, a learning rate, a name).
SweepValue = bool | int | float | str | None


class Metrics(Part):
    """Validation NLL, MSE and foreground MSE of one evaluation (a model's or a reference's)."""

    val_nll: float | None
    val_mse: float | None = None
    val_fg_mse: float | None = None


class EvalPoint(Metrics):
    """One evaluation on the validation set; ``z_mean``/``z_sampled`` when both were measured."""

    step: int
    wall_s: float | None = None
    z_mean: Metrics | None = None
    z_sampled: Metrics | None = None


class TrainPoint(Part):
    """One logged training step."""

    step: int
    wall_s: float
    loss: float | None
    reconstruction: float | None = None
    kl: float | None = None
    lr: float | None = None
    sigma: float | None = None


class FinalEval(Part):
    """The last evaluation of a run and the data set's NLL constant (for bits per pixel)."""

    step: int | None
    val_nll: float | None
    val_mse: float | None = None
    val_fg_mse: float | None = None
    nll_constant: float | None = None


class Baselines(Part):
    """The reference predictors on the same validation set."""

    mean_image: Metrics
    nearest_context: Metrics | None = None


class RunConfig(OpenPart):
    """The resolved model/train/data config a run used (open-ended: every config field)."""

    model: dict[str, Any]
    train: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


class OtherProcess(Part):
    """Another gqnbench process seen running on the machine."""

    pid: int
    command: str | None = None


class MachineLoad(OpenPart):
    """The machine's load around a timed stage (``gqnbench.environment.load_record``): the load
    before and after (open-ended), whether another gqnbench process ran, and which."""

    concurrent: bool
    other_gqnbench: list[OtherProcess]


@register_kind("training_run")
class TrainingRunDoc(ResultsDoc):
    """One training run: config, validation and training curves, divergence, final evaluation."""

    model: str
    preset: str
    tag: str
    seed: int
    status: RunStatus
    config: RunConfig
    eval_curve: list[EvalPoint]
    final: FinalEval
    baselines: Baselines
    train_curve: list[TrainPoint] | None = None
    diverged_step: int | None = None
    diverged_reason: str | None = None
    stop_reason: str | None = None
    request: dict[str, Any] | None = None
    foreground_fraction: float | None = None
    eval_uses: str | None = None
    steps_per_s: float | None = None
    first_step_s: float | None = None
    total_wall_s: float | None = None
    eval_wall_s: float | None = None
    device: str | None = None
    dtype: str | None = None
    # train.amp=auto: what was chosen, the fp32/bf16 step times per model it was chosen on, the checks.
    precision_choice: dict[str, Any] | None = None
    # The step's fast path as it ran (gqnbench.step.TrainStep.fast_path_record: spec, switches, TF32 in use, notes).
    fast_path: dict[str, Any] | None = None
    world_size: int | None = None
    resumed_from_step: int | None = None
    machine_load: MachineLoad | None = None
    concurrent: bool | None = None
    files: dict[str, str | None] | None = None
    error: str | None = None  # why a failed run failed

    @model_validator(mode="after")
    def _possible(self) -> TrainingRunDoc:
        steps = (self.config.train or {}).get("steps")
        if self.status == "completed":
            if not self.eval_curve:
                raise ValueError("eval_curve: a completed run has at least one evaluation")
            if self.final.step is None or not _finite(self.final.val_nll):
                raise ValueError("final: a completed run has a final step and a finite final val_nll")
        last = max([p.step for p in self.eval_curve] + [self.final.step or 0])
        if isinstance(steps, int) and last > steps:
            raise ValueError(f"final: an evaluation after more than the run's {steps} steps")
        if self.status == "diverged" and self.diverged_step is None:
            raise ValueError("diverged_step: a diverged run records the step it diverged at")
        if self.status == "failed" and not self.error:
            raise ValueError("error: a failed run records its error")
        return self


class TargetRun(Part):
    """One model x seed of a time-to-target job; ``steps``/``wall_s`` are inf/None when not reached."""

    model: str
    seed: int
    reached: bool
    steps: int | None
    wall_s: float | None
    run_file: str | None
    status: RowStatus | None = None
    diverged_step: int | None = None
    diverged_reason: str | None = None
    best_val_nll: float | None = None
    steps_per_s: float | None = None
    error: str | None = None  # why a failed run failed

    @model_validator(mode="after")
    def _possible(self) -> TargetRun:
        if self.reached and self.steps is None:
            raise ValueError("steps: a run that reached the target records the step it did")
        if self.reached and not _finite(self.wall_s):
            raise ValueError("wall_s: a run that reached the target records a finite time")
        if self.status == "failed" and (self.reached or not self.error):
            raise ValueError("error: a failed run reached nothing and records its error")
        return self


class TargetSummary(Part):
    """Per model: medians over seeds (inf when most seeds missed) and counts."""

    reached: int
    total: int  # runs that trained (failed ones are counted apart)
    median_steps: float | None
    median_wall_s: float | None
    unfinished: int | None = None
    failed: int | None = None


class Budget(Part):
    steps: int | None
    seconds: float | None


@register_kind("time_to_target")
class TimeToTargetDoc(ResultsDoc):
    """Per model x seed: reached the target NLL?, after how many steps and seconds."""

    preset: str
    target_nll: float | None
    budget: Budget
    runs: list[TargetRun]
    summary: dict[str, TargetSummary]
    target_mse_ratio: float | None = None
    target_source: str | None = None
    mean_frame: Metrics | None = None
    nll_constant: float | None = None
    eval_every: int | None = None
    stop_at_target: bool | None = None
    unfinished_runs: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _within_budget(self) -> TimeToTargetDoc:
        late = [r for r in self.runs if r.steps is not None and self.budget.steps is not None and r.steps > self.budget.steps]
        if late:
            raise ValueError(f"runs: {late[0].model} seed {late[0].seed} reached the target after {late[0].steps} "
                             f"steps, beyond the budget of {self.budget.steps}")  # fmt: skip
        return self


class SweepRun(Part):
    """One model x setting x seed of a sweep (a failed setting has ``error`` and NaN numbers)."""

    model: str
    value: SweepValue
    seed: int
    status: RowStatus
    learned: bool
    diverged: bool
    final_val_nll: float | None = None
    best_val_nll: float | None = None
    final_val_mse: float | None = None
    final_mse_ratio: float | None = None
    final_fg_ratio: float | None = None
    final_mse_ratio_zmean: float | None = None
    final_fg_ratio_zmean: float | None = None
    improved: bool | None = None
    reached_target: bool | None = None
    diverged_step: int | None = None
    diverged_reason: str | None = None
    total_wall_s: float | None = None
    steps_per_s: float | None = None
    skipped: bool | None = None
    reused_main_run: bool | None = None
    run_file: str | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _possible(self) -> SweepRun:
        if self.status == "completed" and (self.diverged or not _finite(self.final_val_nll)):
            raise ValueError("final_val_nll: a completed run did not diverge and has a finite final val_nll")
        if self.status == "failed" and (self.learned or not self.error):
            raise ValueError("error: a failed run learned nothing and records its error")
        return self


class SweepSummary(Part):
    """Per model over the settings' runs that trained (failed ones are counted apart, in no fraction);
    ``fraction_reached_target`` only when a target was set."""

    runs: int
    diverged: int
    failed: int
    final_nll_median: float | None
    final_nll_spread: float | None
    fraction_learned: float | None
    fraction_improved: float | None = None
    fraction_reached_target: float | None = None
    unfinished: int | None = None


@register_kind("sweep")
class SweepDoc(ResultsDoc):
    """Per model x setting x seed of one swept config field: final NLL, learned?, the run's file."""

    field: str
    values: list[SweepValue]
    runs: list[SweepRun]
    summary: dict[str, SweepSummary] | None = None
    preset: str | None = None
    seeds: list[int] | None = None
    steps: int | None = None
    overrides: dict[str, Any] | None = None
    target_nll: float | None = None
    learned_criterion: str | None = None
    improved_criterion: str | None = None
    unfinished_runs: list[dict[str, Any]] | None = None
