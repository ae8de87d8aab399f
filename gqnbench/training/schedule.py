"""When the training loop logs, evaluates, checkpoints and stops: pure functions of the step count and the clock.

Steps are numbered from 0; after update ``t`` there are ``done = t + 1`` updates. A
``train_curve`` point is logged for update ``t`` when ``t % log_every == 0`` and for the last
update; the model is evaluated after every ``eval_every`` updates, after the last and once the
wall clock passes ``max_seconds``; a checkpoint is written every ``checkpoint_every`` updates
and when the run stops early (``stop_at_step`` or a Ctrl-C).
"""

from __future__ import annotations

from dataclasses import dataclass

from gqnbench.config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    max_seconds: float | None = None
    stop_at_step: int | None = None

    @classmethod
    def of(cls, cfg: TrainConfig, max_seconds: float | None = None, stop_at_step: int | None = None) -> Schedule:
        return cls(cfg.steps, cfg.log_every, cfg.eval_every, cfg.checkpoint_every, max_seconds, stop_at_step)

    def logs(self, step: int) -> bool:
        """Whether update ``step`` (0-based) gets a train_curve point."""
        return step % self.log_every == 0 or step + 1 == self.steps

    def over_time(self, wall_s: float) -> bool:
        return self.max_seconds is not None and wall_s >= self.max_seconds

    def evaluates(self, done: int, wall_s: float) -> bool:
        """Whether to evaluate after ``done`` updates at training wall clock ``wall_s``."""
        return done % self.eval_every == 0 or done == self.steps or self.over_time(wall_s)

    def stops_early(self, done: int, interrupt_requested: bool) -> bool:
        """A Ctrl-C on any rank, or ``stop_at_step`` reached: stop as if killed (checkpoint, ``interrupted``)."""
        return interrupt_requested or (self.stop_at_step is not None and done >= self.stop_at_step)

    def checkpoints(self, done: int, stopping: bool) -> bool:
        return done % self.checkpoint_every == 0 or stopping
