"""The one training loop for every registered model.

Protocol (SPEC section 4): Adam(0.9, 0.999, 1e-8); learning rate linear from
``lr_start`` to ``lr_end`` over ``lr_anneal_steps`` then constant; the model's own pixel
sigma schedule (``model.pixel_sigma(step)``: GQN 2.0 -> 0.7, the proposed model 1.0);
no gradient clipping unless ``grad_clip`` is set. Optional bf16 autocast (CPU or CUDA),
fp16 autocast with a grad scaler (CUDA only) and ``torch.compile``.

Steps are numbered from 0; ``train_curve`` point ``step`` = t is the loss of update t (the
lr and sigma it used); ``eval_curve`` point ``step`` = s is the validation NLL after s
updates (s = 0 is the untrained model). ``wall_s`` is the training wall clock since the
first update (evaluation included, checkpoint writing excluded), carried across resumes.

Outputs of a run named ``<model>-<tag>-seed<k>`` under ``out_dir``:

- ``runs/<name>.json``        the ``training_run`` results file, rewritten atomically at every eval;
- ``runs/<name>.pt``          final weights (model name, config, state dict) for samples;
- ``checkpoints/<name>.ckpt`` the resume point (every ``checkpoint_every`` steps, at the end and
  when interrupted);
- ``tensorboard/<name>/``     TensorBoard scalars (``train/*``, ``val/*``, ``perf/*``).

Resume is exact on the CPU: batches are a pure function of (seed, step), the z-noise RNG
states of every rank are checkpointed, and evaluation runs on its own seeded RNG. A NaN/inf
loss or a validation NLL that is non-finite or above ``nll_blowup`` ends the run with status
``diverged`` (and the step and reason) instead of raising, so a sweep always continues.
A first Ctrl-C or SIGTERM finishes the current step, writes a checkpoint, marks the run
``interrupted`` and raises ``KeyboardInterrupt`` (:class:`~gqnbench.training.interrupt.Interrupted`,
naming the signal); a second Ctrl-C stops at once (the last periodic checkpoint is then the
resume point).

``train`` keywords besides ``resume``: ``tag`` (run label, default the preset name), ``seed``
and ``steps`` (override ``train.seed`` / ``train.steps``), ``data`` (a :class:`TrainingData`;
default: opened from ``cache_root``), ``stop_at_step`` (stop after that many updates as if
killed: checkpoint, status ``interrupted``), ``target_nll`` (stop at the first evaluation with
validation NLL <= target), ``max_seconds`` (stop once the wall clock passes it; both give
status ``completed`` with ``stop_reason`` ``target`` / ``time_budget``), ``progress`` (tqdm
bar), ``callback(step, record)`` (after every update; may raise ``KeyboardInterrupt``),
``dist_ctx`` (from :func:`distributed.init_distributed`; default: the group this process
joined, if any).

The parts, each its own module: the step (:mod:`gqnbench.step`), what a run is on disk and
whether to reuse or continue one (``run_files``), its state, clock and results file
(``run_state``), when to log/evaluate/checkpoint/stop (``schedule``), divergence checks
(``divergence``), Ctrl-C (``interrupt``), curve points and TensorBoard (``run_log``),
checkpoint contents (``checkpoint``) and the update loop tying them together (``session``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gqnbench.config import replace_fields
from gqnbench.data.episode import Episode
from gqnbench.files import hold_lock
from gqnbench.models import build_model
from gqnbench.precision import AUTO, PrecisionChoice, choose_precision, describe
from gqnbench.presets import Preset
from gqnbench.results import read_result
from gqnbench.step import TrainStep, build_step, check_precision, flush_denormals
from gqnbench.training import distributed as D
from gqnbench.training.checkpoint import CheckpointError, check_checkpoint, load_torch, restore_run_checkpoint
from gqnbench.training.data_source import TrainingData, load_training_data
from gqnbench.training.run_files import (
    RunExistsError,
    RunPaths,
    TrainResult,
    existing_run,
    run_config,
    run_lock_path,
    run_name,
)
from gqnbench.training.run_log import RunLog
from gqnbench.training.run_state import RunRecord, RunState
from gqnbench.training.schedule import Schedule
from gqnbench.training.session import Session

# run_name, run_lock_path, TrainResult and RunExistsError are imported from here by callers.
__all__ = ["RunExistsError", "TrainResult", "build_trainer", "noise_seed", "run_lock_path", "run_name", "train"]


def train(
    preset: Preset,
    model_name: str,
    out_dir: str | Path,
    *,
    tag: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    resume: bool | None = None,
    data: TrainingData | None = None,
    cache_root: str | Path | None = None,
    stop_at_step: int | None = None,
    target_nll: float | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    dist_ctx: D.DistContext | None = None,
) -> TrainResult:
    """Train ``model_name`` at ``preset`` and write its ``training_run`` results file (keywords: module docstring).

    The run is owned by this process while it trains (``runs/<name>.lock``; a second writer of
    the same run gets :class:`~gqnbench.files.LockedError`). ``resume`` says what to do
    with a run that already exists: ``None`` (default, safe) reuses a finished run with the same
    request, continues an unfinished one from its checkpoint, and raises :class:`RunExistsError`
    rather than replace a finished run with a different request; ``True`` also continues a
    finished run with a different request (e.g. more steps) from its checkpoint; ``False``
    starts over (the old run is replaced once the new one has started: its first results file
    written). A checkpoint beyond ``steps`` is refused (:class:`RunExistsError`). A run that
    raises once started is marked ``failed`` with the error in its results file.
    """
    ctx = dist_ctx or D.active_context()
    paths = RunPaths(
        Path(out_dir), run_name(model_name, tag or preset.name, preset.train.seed if seed is None else seed)
    )
    lock = hold_lock(paths.lock, f"run {paths.name} in {out_dir}") if ctx.is_main else contextlib.nullcontext()
    with lock, flush_denormals(preset.train.flush_denormal):
        preset = _resolved(preset, model_name, seed, steps, ctx)
        cfg = preset.train
        device = D.resolve_device(cfg.device, ctx)
        if cfg.amp != AUTO:
            check_precision(cfg.amp, device)
        config = run_config(preset, model_name)
        request = {"steps": cfg.steps, "target_nll": target_nll, "max_seconds": max_seconds}
        continue_run = existing_run(paths, config, request, resume)
        if isinstance(continue_run, TrainResult):
            return continue_run  # finished with the same request: reused
        data = data or load_training_data(preset.data, cache_root)
        sampler = data.sampler(cfg.batch_size, cfg.seed, preset.data)
        resumed = continue_run and paths.checkpoint.is_file()
        choice = _precision_choice(preset, model_name, paths, resumed, device, ctx) if cfg.amp == AUTO else None
        if choice is not None:  # the run's config keeps "auto"; its step trains in the chosen precision
            cfg = dataclasses.replace(cfg, amp=choice.chosen)
            preset = dataclasses.replace(preset, train=cfg)
        trainer = build_trainer(model_name, preset, device, ctx)
        st = _restore(paths, model_name, config, trainer, ctx, resume, cfg.steps) if resumed else RunState()
        st.precision_choice = None if choice is None else choice.as_dict()
        args = (model_name, preset.name, tag or preset.name, cfg, config, request, data, device, ctx)
        # Starting from step 0: an earlier run's resume point and weights go once this one has started.
        stale = () if resumed else (paths.checkpoint, paths.weights)
        record = RunRecord(
            paths,
            *args,
            resumed_from=st.step if resumed else None,
            replaces=stale,
            fast_path=trainer.fast_path_record(),
        )
        board = paths.tensorboard if cfg.tensorboard and ctx.is_main else None
        log = RunLog(paths.name, cfg.steps, st, board, resumed, progress and ctx.is_main)
        schedule = Schedule.of(cfg, max_seconds, stop_at_step)
        session = Session(trainer, st, schedule, record, log, sampler, preset.data, ctx, target_nll)
        try:
            with contextlib.closing(log):
                session.run(callback, session.start())
            doc = session.finish()
        except Exception as exc:
            if record.replaces:
                raise  # it never started: the run it would replace is still the one on disk
            record.fail(st, exc)  # a run is completed or says why not: here, the error
            raise
        D.barrier(ctx)
        return TrainResult(paths.result, doc)


def _resolved(preset: Preset, model_name: str, seed: int | None, steps: int | None, ctx: D.DistContext) -> Preset:
    """``preset`` with the call's seed and steps, checked; applies ``train.threads``."""
    overrides = {k: v for k, v in (("seed", seed), ("steps", steps)) if v is not None}
    cfg = replace_fields(preset.train, overrides, "train.")  # range-checked: steps >= 1, seed >= 0
    preset = dataclasses.replace(preset, train=cfg)
    model_cfg = preset.model_config(model_name)
    if model_cfg.image_size != preset.data.image_size:
        raise ValueError(
            f"model.image_size={model_cfg.image_size} but data.image_size={preset.data.image_size}: "
            "the model must be built for the frames it is fed; set both to the same size"
        )
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size={cfg.batch_size} is not divisible by the {ctx.world_size} ranks")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return preset


def _precision_choice(
    preset: Preset, model_name: str, paths: RunPaths, resumed: bool, device: torch.device, ctx: D.DistContext
) -> PrecisionChoice:
    """``amp = auto`` resolved once: the main job's choice, the one a resumed run recorded, or measured now."""
    if preset.train.amp_choice:
        return PrecisionChoice.from_dict(json.loads(preset.train.amp_choice), source="main job")
    if resumed and paths.result.is_file():
        recorded = read_result(paths.result, "training_run").get("precision_choice")
        if recorded:
            return PrecisionChoice.from_dict(recorded, source="checkpoint")
    choice = choose_precision(preset, [model_name], device)
    if ctx.enabled:  # every rank measured; all must train in one precision
        votes = D.all_reduce_sum([float(choice.chosen == "bf16")], ctx, device)[0]
        if votes < ctx.world_size and choice.chosen == "bf16":
            choice = dataclasses.replace(choice, chosen="fp32", reason="another rank measured bf16 no faster")
    if ctx.is_main:
        tqdm.write(f"{paths.name}: {describe(choice)}", file=sys.stderr)
    return choice


def noise_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s z-noise stream (drawn after the weights are initialised)."""
    # Ranks draw independent z noise; rank 0 of any world size gets the same stream.
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def build_trainer(model_name: str, preset: Preset, device: torch.device, ctx: D.DistContext) -> TrainStep:
    """The model (weights from ``train.seed``: the same on every rank) and its step, DDP-wrapped across ranks."""
    torch.manual_seed(preset.train.seed)
    model = build_model(model_name, preset.model_config(model_name)).to(device)
    torch.manual_seed(noise_seed(preset.train.seed, ctx.rank))
    unused = ctx.enabled and _has_unused_parameters(model, device)
    return build_step(
        model, preset.train, device, distribute=lambda objective: D.wrap_ddp(objective, ctx, device, unused)
    )


def _restore(
    paths: RunPaths,
    model_name: str,
    config: dict[str, Any],
    trainer: TrainStep,
    ctx: D.DistContext,
    resume: bool | None,
    steps: int,
) -> RunState:
    """The run's state from its checkpoint, with model, optimizer, scaler and RNGs restored.

    A checkpoint beyond the requested ``steps`` is refused: the run cannot be un-trained, and
    calling it completed at ``steps`` would misreport weights that have seen more updates.
    """
    ckpt = load_torch(paths.checkpoint)
    try:
        check_checkpoint(ckpt, paths.checkpoint, model_name, config, ctx.world_size)
    except CheckpointError as exc:
        if resume is None:
            raise RunExistsError(f"{exc}; pass --fresh to start this run over") from exc
        raise
    done = int(ckpt["state"]["step"])
    if done > steps:
        raise RunExistsError(
            f"{paths.checkpoint}: run {paths.name} has its checkpoint at step {done}, beyond the {steps} steps "
            f"requested (--steps {steps}); ask for at least {done} steps to continue it, or pass --fresh to start over"
        )
    st = RunState(**restore_run_checkpoint(ckpt, trainer, ctx))
    st.status, st.stop_reason = "running", None
    if ctx.is_main:
        tqdm.write(f"{paths.name}: continuing from the checkpoint at step {st.step}", file=sys.stderr)
    return st


def _has_unused_parameters(model: nn.Module, device: torch.device) -> bool:
    """Whether one backward of the loss leaves some parameter without a gradient (probe on one scene)."""
    cfg = model.config
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        episode = Episode.random(1, cfg.image_size, num_context=1, device=device)
        model.loss(episode, 0).loss.backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    return unused
