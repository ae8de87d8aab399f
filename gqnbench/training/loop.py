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
A first Ctrl-C finishes the current step, writes a checkpoint, marks the run ``interrupted``
and raises ``KeyboardInterrupt``; a second one stops at once (the last periodic checkpoint
is then the resume point).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gqnbench.data.episode import Episode
from gqnbench.models import build_model
from gqnbench.presets import Preset
from gqnbench.reliability import hold_lock, load_record, machine_load
from gqnbench.results import ResultsError, capture_environment, read_result, write_result
from gqnbench.step import build_step, check_precision, flush_denormals, precision_label
from gqnbench.training import distributed as D
from gqnbench.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_checkpoint,
    load_torch,
    rng_state,
    save_torch_atomic,
    set_rng_state,
)
from gqnbench.training.data_source import TrainingData, load_training_data
from gqnbench.training.evaluation import EvalSums, evaluate_sums

FINISHED = ("completed", "diverged")
# Which evaluation the headline val_nll / val_mse / val_fg_mse of a curve point (and every table) use.
PRIMARY_EVAL = {
    False: "z sampled (GQN: prior; metagqn: q(z|D); seeded, the same noise at every eval)",
    True: "z at the mean (GQN: prior mean; metagqn: mean of q(z|D))",
}

_TrainFn = TypeVar("_TrainFn", bound=Callable[..., "TrainResult"])


def run_name(model: str, tag: str, seed: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(tag)).strip("_") or "run"
    return f"{model}-{safe}-seed{seed}"


@dataclass(frozen=True)
class RunPaths:
    out_dir: Path
    name: str

    @property
    def result(self) -> Path:
        return self.out_dir / "runs" / f"{self.name}.json"

    @property
    def weights(self) -> Path:
        return self.out_dir / "runs" / f"{self.name}.pt"

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "checkpoints" / f"{self.name}.ckpt"

    @property
    def tensorboard(self) -> Path:
        return self.out_dir / "tensorboard" / self.name


@dataclass
class TrainResult:
    """What ``train`` returns: the results file and its contents."""

    run_file: Path
    doc: dict[str, Any]
    skipped: bool = False  # True when a finished run with the same request was found and reused

    @property
    def status(self) -> str:
        return self.doc["status"]

    @property
    def final_val_nll(self) -> float:
        return float(self.doc["final"]["val_nll"])


class _InterruptFlag:
    """First SIGINT asks for a clean stop at the end of the step; the second interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def noise_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s z-noise stream (drawn after the weights are initialised)."""
    # Ranks draw independent z noise; rank 0 of any world size gets the same stream.
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def run_config(preset: Preset, model: str) -> dict[str, Any]:
    return {
        "model": dataclasses.asdict(preset.model_config(model)),
        "train": dataclasses.asdict(preset.train),
        "data": dataclasses.asdict(preset.data),
    }


def _same_request(doc: dict[str, Any], config: dict[str, Any], request: dict[str, Any]) -> bool:
    return doc.get("config") == config and doc.get("request") == request


class RunExistsError(ValueError):
    """The run already exists and this request would replace it: the caller must say ``fresh``."""


def _differences(doc: dict[str, Any], config: dict[str, Any], request: dict[str, Any]) -> str:
    """What differs between a recorded run and a new request, in a few words."""
    diffs = []
    old_request = doc.get("request") or {}
    for key, value in request.items():
        if old_request.get(key) != value:
            diffs.append(f"{key} {value} (recorded: {old_request.get(key)})")
    old_config = doc.get("config") or {}
    for section, values in config.items():
        old = old_config.get(section) or {}
        for key, value in (values or {}).items():
            if json_safe(old.get(key)) != json_safe(value):
                diffs.append(f"{section}.{key}={value} (recorded: {old.get(key)})")
    return ", ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "") or "a different configuration"


def json_safe(value: Any) -> Any:
    """A value as it reads back from a results file (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def run_lock_path(out_dir: str | Path, name: str) -> Path:
    """The lock file of run ``name`` under ``out_dir`` (held while a process writes the run)."""
    return Path(out_dir) / "runs" / f"{name}.lock"


@dataclass
class _State:
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


def _flushing_denormals(fn: _TrainFn) -> _TrainFn:
    """Run ``fn`` with flush-to-zero as ``preset.train.flush_denormal`` asks, and undo it after."""

    # A decorator keeps the long keyword signature in one place instead of a forwarding copy.
    @functools.wraps(fn)
    def wrapper(preset: Preset, *args: Any, **kwargs: Any) -> TrainResult:
        with flush_denormals(preset.train.flush_denormal):
            return fn(preset, *args, **kwargs)

    return cast(_TrainFn, wrapper)


def train(
    preset: Preset,
    model_name: str,
    out_dir: str | Path,
    *,
    tag: str | None = None,
    seed: int | None = None,
    resume: bool | None = None,
    dist_ctx: D.DistContext | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train ``model_name`` at ``preset`` and write its ``training_run`` results file.

    The run is owned by this process while it trains (``runs/<name>.lock``; a second writer of
    the same run gets :class:`~gqnbench.reliability.LockedError`). ``resume`` says what to do
    with a run that already exists: ``None`` (default, safe) reuses a finished run with the same
    request, continues an unfinished one from its checkpoint, and raises :class:`RunExistsError`
    rather than replace a finished run with a different request; ``True`` also continues a
    finished run with a different request (e.g. more steps) from its checkpoint; ``False``
    starts over (the old run is replaced). Other keywords: see :func:`_train`.
    """
    ctx = dist_ctx or D.active_context()
    name = run_name(model_name, tag or preset.name, seed if seed is not None else preset.train.seed)
    lock = (
        hold_lock(run_lock_path(out_dir, name), f"run {name} in {out_dir}") if ctx.is_main else contextlib.nullcontext()
    )
    with lock:
        return _train(preset, model_name, out_dir, tag=tag, seed=seed, resume=resume, dist_ctx=dist_ctx, **kwargs)


@_flushing_denormals
def _train(
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
    """The body of :func:`train` (called with the run's lock held).

    Keyword arguments: ``tag`` (run label, default the preset name), ``seed`` and
    ``steps`` (override ``train.seed`` / ``train.steps``), ``resume`` (reuse a finished run with
    the same config and request, else continue from its checkpoint if there is one), ``data``
    (a :class:`TrainingData`; default: opened from ``cache_root``), ``stop_at_step`` (stop after
    that many updates as if killed: checkpoint, status ``interrupted``), ``target_nll`` (stop at
    the first evaluation with validation NLL <= target), ``max_seconds`` (stop once the wall
    clock passes it; both give status ``completed`` with ``stop_reason`` ``target`` /
    ``time_budget``), ``progress`` (tqdm bar), ``callback(step, record)`` (after every update;
    may raise ``KeyboardInterrupt``), ``dist_ctx`` (from :func:`distributed.init_distributed`; default:
    the group this process joined, if any).
    """
    ctx = dist_ctx or D.active_context()
    overrides = {k: v for k, v in (("seed", seed), ("steps", steps)) if v is not None}
    cfg = dataclasses.replace(preset.train, **overrides)
    if cfg.steps < 1:
        raise ValueError(f"train.steps must be at least 1, got {cfg.steps} (an untrained model is not a run)")
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
    device = D.resolve_device(cfg.device, ctx)
    check_precision(cfg.amp, device)
    tag = tag or preset.name
    paths = RunPaths(Path(out_dir), run_name(model_name, tag, cfg.seed))
    config = run_config(preset, model_name)
    request = {"steps": cfg.steps, "target_nll": target_nll, "max_seconds": max_seconds}

    continue_run = resume is True
    if resume is False:
        if ctx.is_main:
            paths.checkpoint.unlink(missing_ok=True)  # starting over: the old resume point would mislead a re-run
    elif paths.result.is_file() or paths.checkpoint.is_file():
        doc: dict[str, Any] = {}
        if paths.result.is_file():
            try:
                doc = read_result(paths.result, "training_run")
            except ResultsError as exc:
                if resume is None:
                    raise RunExistsError(f"{exc}; pass --fresh to start this run over") from exc
        status = doc.get("status")
        if status in FINISHED and _same_request(doc, config, request):
            return TrainResult(paths.result, doc, skipped=True)
        if resume is None:
            if status in FINISHED:
                raise RunExistsError(
                    f"{paths.result} already holds a finished run ({status} at step {(doc.get('final') or {}).get('step')}); "
                    f"this request differs: {_differences(doc, config, request)}. Pass --fresh to replace it, "
                    "--resume to continue it with the new settings, or choose another --out or --tag"
                )
            continue_run = paths.checkpoint.is_file()

    data = data or load_training_data(preset.data, cache_root)
    sampler = data.sampler(cfg.batch_size, cfg.seed, preset.data)

    torch.manual_seed(cfg.seed)  # weight init: the same on every rank (DDP broadcasts rank 0's anyway)
    model = build_model(model_name, model_cfg).to(device)
    torch.manual_seed(noise_seed(cfg.seed, ctx.rank))
    trainer = build_step(
        model,
        cfg,
        device,
        distribute=lambda objective: D.wrap_ddp(
            objective, ctx, device, ctx.enabled and _has_unused_parameters(model, device)
        ),
    )
    optimizer, scaler, autocast = trainer.optimizer, trainer.scaler, trainer.autocast

    st = _State()
    resumed_from: int | None = None
    if continue_run and paths.checkpoint.is_file():
        ckpt = load_torch(paths.checkpoint)
        try:
            check_checkpoint(ckpt, paths.checkpoint, model_name, config, ctx.world_size)
        except CheckpointError as exc:
            if resume is None:
                raise RunExistsError(f"{exc}; pass --fresh to start this run over") from exc
            raise
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"][ctx.rank])
        st = _State(**ckpt["state"])
        st.status, st.stop_reason = "running", None
        resumed_from = st.step
        if ctx.is_main:
            tqdm.write(f"{paths.name}: continuing from the checkpoint at step {st.step}", file=sys.stderr)

    load_before = machine_load() if ctx.is_main else {}
    environment = capture_environment(str(device), precision_label(cfg.amp)) if ctx.is_main else {}
    if ctx.is_main:
        environment["world_size"] = ctx.world_size
        environment["distributed_backend"] = ctx.backend
    writer = None
    if cfg.tensorboard and ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(paths.tensorboard), purge_step=st.step if resumed_from is not None else None)

    def evaluate() -> tuple[dict[str, dict[str, float]], float]:
        """Validation metrics with z sampled and at its mean, and the seconds they took."""
        t0 = time.perf_counter()
        metrics = {}
        for mode, use_mean in (("z_sampled", False), ("z_mean", True)):
            sums = evaluate_sums(
                model,
                data.val_episode,
                seed=preset.data.val_seed,
                chunk=cfg.eval_batch_size,
                device=device,
                autocast=autocast,
                use_mean=use_mean,
                rank=ctx.rank,
                world_size=ctx.world_size,
            )
            total = D.all_reduce_sum(sums.additive(), ctx, device)
            res = EvalSums.from_additive(total, sums.values_per_image).result()
            metrics[mode] = {"val_nll": res.nll, "val_mse": res.mse, "val_fg_mse": res.fg_mse}
        return metrics, time.perf_counter() - t0

    def payload() -> dict[str, Any]:
        last = st.eval_curve[-1] if st.eval_curve else {}
        # Another gqnbench process running before or now: this run's timings are not clean.
        load = load_record(load_before, machine_load()) if ctx.is_main else {}
        return {
            "model": model_name,
            "preset": preset.name,
            "tag": tag,
            "seed": cfg.seed,
            "config": config,
            "request": request,
            "status": st.status,
            "stop_reason": st.stop_reason,
            "diverged_step": st.diverged_step,
            "diverged_reason": st.diverged_reason,
            "eval_curve": st.eval_curve,
            "train_curve": st.train_curve,
            "final": {
                "step": last.get("step"),
                "val_nll": last.get("val_nll", math.nan),
                "val_mse": last.get("val_mse", math.nan),
                "val_fg_mse": last.get("val_fg_mse", math.nan),
                "nll_constant": data.baseline.constant,
            },
            "baselines": {
                name: {"val_nll": ref.nll, "val_mse": ref.mse, "val_fg_mse": ref.fg_mse}
                for name, ref in data.references.items()
            },
            "foreground_fraction": data.baseline.fg_fraction,
            "eval_uses": PRIMARY_EVAL[cfg.eval_use_mean],
            "steps_per_s": (st.step / st.train_s) if st.train_s > 0 else None,
            "first_step_s": st.first_step_s,
            "total_wall_s": st.wall_s,
            "eval_wall_s": st.eval_wall_s,
            "device": str(device),
            "dtype": precision_label(cfg.amp),
            "world_size": ctx.world_size,
            "resumed_from_step": resumed_from,
            "machine_load": load,
            "concurrent": load.get("concurrent", False),
            "files": {
                "weights": paths.weights.name,
                "checkpoint": str(paths.checkpoint.relative_to(paths.out_dir)),
                "tensorboard": str(paths.tensorboard.relative_to(paths.out_dir)) if cfg.tensorboard else None,
            },
        }

    def write_doc() -> dict[str, Any]:
        doc = payload()
        if ctx.is_main:
            write_result(paths.result, "training_run", doc, environment)
        return doc

    def save_checkpoint() -> float:
        t0 = time.perf_counter()
        rngs = D.gather_objects(rng_state(), ctx)
        if ctx.is_main:
            save_torch_atomic(
                paths.checkpoint,
                {
                    "format": CHECKPOINT_FORMAT,
                    "model_name": model_name,
                    "config": config,
                    "state": dataclasses.asdict(st),
                    "rng": rngs,
                    "model": model_state_dict_of(model),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                },
            )
        return time.perf_counter() - t0

    def save_weights() -> None:
        if ctx.is_main:
            save_torch_atomic(
                paths.weights,
                {
                    "model_name": model_name,
                    "model_config": config["model"],
                    "preset": preset.name,
                    "step": st.step,
                    "state_dict": model_state_dict_of(model),
                },
            )

    def record_eval(wall: float) -> None:
        metrics, spent = evaluate()
        st.eval_wall_s += spent
        primary = metrics["z_mean" if cfg.eval_use_mean else "z_sampled"]
        st.eval_curve.append({"step": st.step, "wall_s": wall + spent, **primary, **metrics})
        nll = primary["val_nll"]
        if writer is not None:
            for mode, values in metrics.items():
                for key, value in values.items():
                    writer.add_scalar(f"val_{mode}/{key[4:]}", value, st.step)
        if not math.isfinite(nll) or nll > cfg.nll_blowup:
            st.status, st.stop_reason = "diverged", "diverged"
            st.diverged_step = st.step
            st.diverged_reason = f"validation NLL {nll:.6g} is non-finite or above nll_blowup={cfg.nll_blowup:g}"
        elif target_nll is not None and nll <= target_nll:
            st.status, st.stop_reason = "completed", "target"

    bar = tqdm(
        total=cfg.steps,
        initial=st.step,
        desc=paths.name,
        unit="step",
        disable=not (progress and ctx.is_main),
        dynamic_ncols=True,
        leave=False,
    )
    if not st.eval_curve:
        record_eval(0.0)  # the untrained model, before the clock starts
        st.wall_s = st.eval_curve[-1]["wall_s"] = 0.0
        write_doc()
    session_start = time.perf_counter()
    wall_base, excluded = st.wall_s, 0.0

    def wall_now() -> float:
        return wall_base + (time.perf_counter() - session_start) - excluded

    batches = _batches(sampler, st.step, ctx, preset.data.num_workers)
    model.train()
    in_step = False  # True while params/optimizer/RNG may be between two consistent states
    try:
        with _InterruptFlag() as interrupt:
            while st.status == "running" and st.step < cfg.steps:
                step = st.step
                in_step = True
                t_step = time.perf_counter()
                lr = trainer.lr_at(step)
                episode = next(batches).to(device)
                terms = trainer.forward_loss(episode, step)
                loss, recon, kl = terms.loss, terms.reconstruction, terms.kl
                if cfg.inject_nan_at_step is not None and step == cfg.inject_nan_at_step:
                    loss = loss * float("nan")
                loss_v, recon_v, kl_v, stop_v = D.all_reduce_sum(
                    [loss.item(), recon.item(), kl.item(), float(interrupt.requested)], ctx, device
                )
                loss_v, recon_v, kl_v = (v / ctx.world_size for v in (loss_v, recon_v, kl_v))
                if not math.isfinite(loss_v):
                    st.status, st.stop_reason, st.diverged_step = "diverged", "diverged", step
                    st.diverged_reason = f"training loss is {loss_v} at step {step}"
                    break
                trainer.update(loss, step)
                spent = time.perf_counter() - t_step
                st.train_s += spent
                if st.first_step_s is None:
                    st.first_step_s = spent
                st.step = step + 1
                wall = wall_now()
                st.wall_s = wall
                record = {
                    "step": step,
                    "wall_s": wall,
                    "loss": loss_v,
                    "reconstruction": recon_v,
                    "kl": kl_v,
                    "lr": lr,
                    "sigma": float(model.pixel_sigma(step)),
                }
                if step % cfg.log_every == 0 or st.step == cfg.steps:
                    st.train_curve.append(record)
                    if writer is not None:
                        for key in ("loss", "reconstruction", "kl", "lr", "sigma"):
                            writer.add_scalar(f"train/{key}", record[key], step)
                        writer.add_scalar("perf/steps_per_s", st.step / st.train_s, step)
                    last_nll = st.eval_curve[-1]["val_nll"] if st.eval_curve else math.nan
                    bar.set_postfix(loss=f"{loss_v:.1f}", nll=f"{last_nll:.1f}", refresh=False)
                bar.update(1)
                over_time = max_seconds is not None and wall >= max_seconds
                if st.step % cfg.eval_every == 0 or st.step == cfg.steps or over_time:
                    record_eval(wall)
                    st.wall_s = st.eval_curve[-1]["wall_s"]
                    write_doc()
                    if st.status == "running" and over_time:
                        st.status, st.stop_reason = "completed", "time_budget"
                in_step = False
                if callback is not None:
                    callback(st.step, record)
                stopping = bool(stop_v) or (stop_at_step is not None and st.step >= stop_at_step)
                in_step = True
                if st.status == "running" and (st.step % cfg.checkpoint_every == 0 or stopping):
                    excluded += save_checkpoint()
                if st.status == "running" and stopping:
                    st.status, st.stop_reason = "interrupted", "interrupt"
                    write_doc()
                    if stop_v:
                        raise KeyboardInterrupt
                    break
                in_step = False
    except KeyboardInterrupt:
        # Raised by a callback at a step boundary (state consistent: checkpoint it) or by a
        # second Ctrl-C mid-step (state may be half-updated: keep the last periodic checkpoint).
        if st.status == "running":
            if not in_step:
                save_checkpoint()
            st.status, st.stop_reason = "interrupted", "interrupt"
            write_doc()
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.flush()
            writer.close()

    if st.status == "running":
        st.status, st.stop_reason = "completed", "steps"
    if st.status == "completed":
        save_checkpoint()  # lets a later call extend the run with more steps
    if st.status in FINISHED:
        save_weights()
    doc = write_doc()
    D.barrier(ctx)
    return TrainResult(paths.result, doc)


def _batches(sampler: Any, start: int, ctx: D.DistContext, num_workers: int) -> Iterator[Episode]:
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


def _has_unused_parameters(model: nn.Module, device: torch.device) -> bool:
    """Whether one backward of the loss leaves some parameter without a gradient (probe on one scene)."""
    cfg = model.config
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        episode = Episode.random(1, cfg.image_size, num_context=1, device=device)
        model.loss(episode, 0).loss.backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    return unused


def model_state_dict_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
