"""One training session: the update loop that ties the step object, the schedule, the divergence checks,
checkpoints, interruption and logging together (``train`` builds it; see :mod:`gqnbench.training.loop`).

Each update: the batch of step ``t`` (a pure function of seed and ``t``), the loss terms
(:meth:`TrainStep.forward_loss`), the rank-averaged loss checked before it reaches the weights,
the update (:meth:`TrainStep.update`), then by :class:`~gqnbench.training.schedule.Schedule` a
curve point, an evaluation (which rewrites the results file), the caller's callback, a
checkpoint and an early stop.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gqnbench.config import DataConfig
from gqnbench.data.episode import Episode
from gqnbench.step import TrainStep
from gqnbench.training import distributed as D
from gqnbench.training.checkpoint import save_run_checkpoint
from gqnbench.training.data_source import TrainingData
from gqnbench.training.divergence import inject_nan, loss_divergence, nll_divergence
from gqnbench.training.evaluation import EvalSums, evaluate_sums
from gqnbench.training.interrupt import InterruptFlag
from gqnbench.training.run_files import FINISHED
from gqnbench.training.run_log import RunLog
from gqnbench.training.run_state import RunRecord, RunState, WallClock
from gqnbench.training.schedule import Schedule

Callback = Callable[[int, dict[str, Any]], None]


def batches(sampler: Any, start: int, ctx: D.DistContext, num_workers: int) -> Iterator[Episode]:
    """Episodes of steps start, start+1, ...: built here, or prefetched by DataLoader workers.

    Either way the episode of step t is ``sampler.batch(t, rank, world_size)``, so resuming and
    the number of workers never change the data.
    """
    if num_workers <= 0:
        return (sampler.batch(t, ctx.rank, ctx.world_size) for t in itertools.count(start))
    from gqnbench.data import make_train_loader

    # Starting the workers draws their base seed from the global RNG: keep it off the z-noise stream.
    with torch.random.fork_rng(devices=[]):
        return iter(make_train_loader(sampler, start, ctx.rank, ctx.world_size, num_workers=num_workers))


def validation_metrics(
    trainer: TrainStep, data: TrainingData, seed: int, chunk: int, ctx: D.DistContext
) -> dict[str, dict[str, float]]:
    """Validation NLL/MSE with z sampled and at its mean, summed over ranks."""
    metrics = {}
    for mode, use_mean in (("z_sampled", False), ("z_mean", True)):
        sums = evaluate_sums(
            trainer.model,
            data.val_episode,
            seed=seed,
            chunk=chunk,
            device=trainer.device,
            autocast=trainer.autocast,
            use_mean=use_mean,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        total = D.all_reduce_sum(sums.additive(), ctx, trainer.device)
        res = EvalSums.from_additive(total, sums.values_per_image).result()
        metrics[mode] = {"val_nll": res.nll, "val_mse": res.mse, "val_fg_mse": res.fg_mse}
    return metrics


@dataclass
class Session:
    trainer: TrainStep
    st: RunState
    schedule: Schedule
    record: RunRecord
    log: RunLog
    sampler: Any  # EpisodeSampler: the batch of step t is sampler.batch(t, rank, world_size)
    data_cfg: DataConfig  # val_seed, num_workers
    ctx: D.DistContext
    target_nll: float | None = None

    def start(self) -> WallClock:
        """Evaluate the untrained model (a new run), before the clock starts; the clock then runs on from ``wall_s``."""
        if not self.st.eval_curve:
            self.evaluate(0.0)
            self.st.wall_s = self.st.eval_curve[-1]["wall_s"] = 0.0
            self.record.write(self.st)
        return WallClock(self.st.wall_s)

    def finish(self) -> dict[str, Any]:
        """Mark a run that ran out of steps completed, write its final checkpoint and weights; the results document."""
        st = self.st
        if st.running:
            st.stop("completed", "steps")
        if st.status == "completed":
            self.checkpoint()  # lets a later call extend the run with more steps
        if st.status in FINISHED:
            self.record.save_weights(st, self.trainer.model)
        return self.record.write(st)

    def evaluate(self, wall: float) -> None:
        """Append an eval_curve point after ``st.step`` updates; mark divergence or the target reached."""
        cfg = self.record.cfg
        t0 = time.perf_counter()
        metrics = validation_metrics(
            self.trainer, self.record.data, self.data_cfg.val_seed, cfg.eval_batch_size, self.ctx
        )
        spent = time.perf_counter() - t0
        self.st.eval_wall_s += spent
        primary = metrics["z_mean" if cfg.eval_use_mean else "z_sampled"]
        self.st.eval_curve.append({"step": self.st.step, "wall_s": wall + spent, **primary, **metrics})
        self.log.eval_point(self.st.step, metrics)
        nll = primary["val_nll"]
        if (reason := nll_divergence(nll, cfg.nll_blowup)) is not None:
            self.st.diverge(self.st.step, reason)
        elif self.target_nll is not None and nll <= self.target_nll:
            self.st.stop("completed", "target")

    def checkpoint(self) -> float:
        """Write the resume point; returns the seconds it took (left out of the wall clock)."""
        t0 = time.perf_counter()
        r = self.record
        save_run_checkpoint(
            r.paths.checkpoint, r.model_name, r.config, dataclasses.asdict(self.st), self.trainer, r.ctx
        )
        return time.perf_counter() - t0

    def update(self, stream: Iterator[Episode], interrupt: InterruptFlag) -> tuple[dict[str, Any] | None, bool]:
        """One update on the next batch: its curve record (None when the loss diverged) and whether any rank asked to stop."""
        step, cfg, trainer = self.st.step, self.record.cfg, self.trainer
        t0 = time.perf_counter()  # the update's time includes fetching its batch
        terms = trainer.forward_loss(next(stream).to(trainer.device), step)
        loss = inject_nan(terms.loss, step, cfg.inject_nan_at_step)
        loss_v, recon_v, kl_v, stop_v = D.all_reduce_sum(
            [loss.item(), terms.reconstruction.item(), terms.kl.item(), float(interrupt.requested)],
            self.ctx,
            trainer.device,
        )
        loss_v, recon_v, kl_v = (v / self.ctx.world_size for v in (loss_v, recon_v, kl_v))
        if (reason := loss_divergence(loss_v, step)) is not None:
            self.st.diverge(step, reason)
            return None, bool(stop_v)
        trainer.update(loss, step)
        self.st.count_update(time.perf_counter() - t0)
        sigma = float(trainer.model.pixel_sigma(step))
        record = {"step": step, "wall_s": 0.0, "loss": loss_v, "reconstruction": recon_v, "kl": kl_v}
        return {**record, "lr": trainer.lr_at(step), "sigma": sigma}, bool(stop_v)

    def run(self, callback: Callback | None, clock: WallClock) -> None:
        """Update until the schedule, a divergence, the target, the time budget or an interruption stops the run."""
        st, schedule = self.st, self.schedule
        stream = batches(self.sampler, st.step, self.ctx, self.data_cfg.num_workers)
        self.trainer.model.train()
        interrupt = InterruptFlag()
        try:
            with interrupt:
                while st.running and st.step < schedule.steps:
                    record, stop_requested = self.update(stream, interrupt)
                    if record is None:
                        break
                    self.after_update(record, clock)
                    if callback is not None:
                        interrupt.call_at_boundary(callback, st.step, record)
                    if self.stops(stop_requested, clock, interrupt):
                        break
        except KeyboardInterrupt:
            # From the callback at a step boundary (state consistent: checkpoint it) or from a
            # second Ctrl-C mid-step (state may be half-updated: keep the last periodic checkpoint).
            if st.running:
                if interrupt.at_boundary:
                    self.checkpoint()
                st.stop("interrupted", "interrupt")
                self.record.write(st)
            raise

    def after_update(self, record: dict[str, Any], clock: WallClock) -> None:
        """The clock, a curve point and an evaluation (with the results file and the time budget) as scheduled."""
        st = self.st
        st.wall_s = record["wall_s"] = clock.now()
        if self.schedule.logs(record["step"]):
            self.log.train_point(st, record)
        self.log.advance()
        if self.schedule.evaluates(st.step, st.wall_s):
            self.evaluate(st.wall_s)
            st.wall_s = st.eval_curve[-1]["wall_s"]
            self.record.write(st)
            if st.running and self.schedule.over_time(record["wall_s"]):
                st.stop("completed", "time_budget")

    def stops(self, stop_requested: bool, clock: WallClock, interrupt: InterruptFlag) -> bool:
        """The periodic checkpoint, and an early stop (a stop signal on any rank: raised; stop_at_step); True to stop."""
        st = self.st
        stopping = self.schedule.stops_early(st.step, stop_requested)
        if st.running and self.schedule.checkpoints(st.step, stopping):
            clock.exclude(self.checkpoint())
        if not (st.running and stopping):
            return False
        st.stop("interrupted", "interrupt")
        self.record.write(st)
        if stop_requested:
            raise interrupt.interrupted()
        return True
