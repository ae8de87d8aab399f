"""A run's progress and its results file: the checkpointed state, the wall clock and the ``training_run`` document.

:class:`RunState` is everything besides module/optimizer states that a checkpoint carries
(its fields are the checkpoint's ``state`` dict, so they keep their names). ``wall_s`` is the
training wall clock since the first update (evaluation included, checkpoint writing
excluded), carried across resumes by :class:`WallClock`. :class:`RunRecord` turns the state
into the ``training_run`` results file (written by rank 0 only) and the final weights.

A run that starts from step 0 where an earlier run of the same name left files replaces them
only once it has started: its first results file (written after the untrained model's
evaluation, so its data and model are known to work) replaces the old one, and only then are
the old checkpoint and weights removed. A request that fails before that leaves the old run whole.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gqnbench.config import TrainConfig
from gqnbench.environment import capture_environment, load_record, machine_load
from gqnbench.results import write_result
from gqnbench.step import precision_label
from gqnbench.training import distributed as D
from gqnbench.training.checkpoint import model_state_dict_of, save_torch_atomic
from gqnbench.training.data_source import TrainingData
from gqnbench.training.run_files import RunPaths

# Which evaluation the headline val_nll / val_mse / val_fg_mse of a curve point (and every table) use.
PRIMARY_EVAL = {
    False: "z sampled (GQN: prior; metagqn: q(z|D); seeded, the same noise at every eval)",
    True: "z at the mean (GQN: prior mean; metagqn: mean of q(z|D))",
}


@dataclass
class RunState:
    """Everything that is checkpointed besides the module/optimizer states."""

    step: int = 0  # updates done
    wall_s: float = 0.0
    eval_wall_s: float = 0.0
    train_s: float = 0.0  # time inside updates only (for steps/s)
    train_curve: list[dict[str, Any]] = field(default_factory=list)
    eval_curve: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    stop_reason: str | None = None
    diverged_step: int | None = None
    diverged_reason: str | None = None
    first_step_s: float | None = None  # includes compilation when compile=True
    precision_choice: dict[str, Any] | None = None  # what train.amp=auto chose (gqnbench.precision); kept on resume

    @property
    def running(self) -> bool:
        return self.status == "running"

    def stop(self, status: str, reason: str) -> None:
        self.status, self.stop_reason = status, reason

    def diverge(self, step: int, reason: str) -> None:
        self.stop("diverged", "diverged")
        self.diverged_step, self.diverged_reason = step, reason

    def count_update(self, seconds: float) -> None:
        self.train_s += seconds
        if self.first_step_s is None:
            self.first_step_s = seconds
        self.step += 1


class WallClock:
    """Training seconds since the first update: this session's time on top of the checkpointed ``wall_s``, minus exclusions."""

    def __init__(self, base_s: float) -> None:
        self.base_s, self.excluded_s, self.start = base_s, 0.0, time.perf_counter()

    def now(self) -> float:
        return self.base_s + (time.perf_counter() - self.start) - self.excluded_s

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (checkpoint writing) out of the clock."""
        self.excluded_s += seconds


@dataclass
class RunRecord:
    """Writes the ``training_run`` results file (rank 0) and the final weights."""

    paths: RunPaths
    model_name: str
    preset_name: str
    tag: str
    cfg: TrainConfig
    config: dict[str, Any]
    request: dict[str, Any]
    data: TrainingData
    device: torch.device
    ctx: D.DistContext
    resumed_from: int | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    load_before: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the run failed (status "failed")
    # An earlier run's checkpoint and weights, removed once this run's first results file is written.
    replaces: tuple[Path, ...] = ()
    fast_path: dict[str, Any] = field(default_factory=dict)  # the step's fast path as it runs

    def __post_init__(self) -> None:
        if self.ctx.is_main:
            self.load_before = machine_load()
            self.environment = capture_environment(str(self.device), precision_label(self.cfg.amp))
            self.environment["world_size"] = self.ctx.world_size
            self.environment["distributed_backend"] = self.ctx.backend

    def doc(self, st: RunState) -> dict[str, Any]:
        last = st.eval_curve[-1] if st.eval_curve else {}
        # Another gqnbench process running before or now: this run's timings are not clean.
        load = load_record(self.load_before, machine_load()) if self.ctx.is_main else {}
        return {
            "model": self.model_name,
            "preset": self.preset_name,
            "tag": self.tag,
            "seed": self.cfg.seed,
            "config": self.config,
            "request": self.request,
            "status": st.status,
            "stop_reason": st.stop_reason,
            "error": self.error,
            "diverged_step": st.diverged_step,
            "diverged_reason": st.diverged_reason,
            "eval_curve": st.eval_curve,
            "train_curve": st.train_curve,
            "final": {
                "step": last.get("step"),
                "val_nll": last.get("val_nll", math.nan),
                "val_mse": last.get("val_mse", math.nan),
                "val_fg_mse": last.get("val_fg_mse", math.nan),
                "nll_constant": self.data.baseline.constant,
            },
            "baselines": {
                name: {"val_nll": ref.nll, "val_mse": ref.mse, "val_fg_mse": ref.fg_mse}
                for name, ref in self.data.references.items()
            },
            "foreground_fraction": self.data.baseline.fg_fraction,
            "eval_uses": PRIMARY_EVAL[self.cfg.eval_use_mean],
            "steps_per_s": (st.step / st.train_s) if st.train_s > 0 else None,
            "first_step_s": st.first_step_s,
            "total_wall_s": st.wall_s,
            "eval_wall_s": st.eval_wall_s,
            "device": str(self.device),
            "dtype": precision_label(self.cfg.amp),
            "precision_choice": st.precision_choice,
            "fast_path": self.fast_path or None,
            "world_size": self.ctx.world_size,
            "resumed_from_step": self.resumed_from,
            "machine_load": load,
            "concurrent": load.get("concurrent", False),
            "files": {
                "weights": self.paths.weights.name,
                "checkpoint": str(self.paths.checkpoint.relative_to(self.paths.out_dir)),
                "tensorboard": str(self.paths.tensorboard.relative_to(self.paths.out_dir))
                if self.cfg.tensorboard
                else None,
            },
        }

    def write(self, st: RunState) -> dict[str, Any]:
        """Rewrite the results file from ``st`` (atomically; rank 0 only) and return the document."""
        doc = self.doc(st)
        if self.ctx.is_main:
            write_result(self.paths.result, "training_run", doc, self.environment)
            for old in self.replaces:  # this run has started: the one it replaces goes now
                old.unlink(missing_ok=True)
            self.replaces = ()
        return doc

    def fail(self, st: RunState, exc: BaseException) -> None:
        """Mark the run ``failed`` with ``exc`` in its results file, if that can still be written (a full disk may not let it)."""
        st.stop("failed", "error")
        self.error = f"{type(exc).__name__}: {exc}"
        try:
            self.write(st)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass

    def save_weights(self, st: RunState, model: nn.Module) -> None:
        if self.ctx.is_main:
            save_torch_atomic(
                self.paths.weights,
                {
                    "model_name": self.model_name,
                    "model_config": self.config["model"],
                    "preset": self.preset_name,
                    "step": st.step,
                    "state_dict": model_state_dict_of(model),
                },
            )
