"""What a run shows while it trains: the train_curve points, TensorBoard scalars and the progress bar.

TensorBoard (rank 0, ``train.tensorboard``): ``train/{loss,reconstruction,kl,lr,sigma}`` and
``perf/steps_per_s`` at every logged update, ``val_{z_sampled,z_mean}/{nll,mse,fg_mse}`` at
every evaluation; a resumed run purges the events after its checkpoint's step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gqnbench.training.run_state import RunState

TRAIN_SCALARS = ("loss", "reconstruction", "kl", "lr", "sigma")


class RunLog:
    """The progress bar and (optionally) a TensorBoard writer of one run; close it when done."""

    def __init__(
        self, name: str, total: int, st: RunState, tensorboard: Path | None, resumed: bool, show: bool
    ) -> None:
        self.writer = None
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tensorboard), purge_step=st.step if resumed else None)
        self.bar = tqdm(
            total=total, initial=st.step, desc=name, unit="step", disable=not show, dynamic_ncols=True, leave=False
        )

    def train_point(self, st: RunState, record: dict[str, Any]) -> None:
        """Append ``record`` (one update's loss terms, lr, sigma) to the train curve and show it."""
        st.train_curve.append(record)
        step = record["step"]
        if self.writer is not None:
            for key in TRAIN_SCALARS:
                self.writer.add_scalar(f"train/{key}", record[key], step)
            self.writer.add_scalar("perf/steps_per_s", st.step / st.train_s, step)
        last_nll = st.eval_curve[-1]["val_nll"] if st.eval_curve else math.nan
        self.bar.set_postfix(loss=f"{record['loss']:.1f}", nll=f"{last_nll:.1f}", refresh=False)

    def eval_point(self, step: int, metrics: dict[str, dict[str, float]]) -> None:
        if self.writer is not None:
            for mode, values in metrics.items():
                for key, value in values.items():
                    self.writer.add_scalar(f"val_{mode}/{key[4:]}", value, step)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
