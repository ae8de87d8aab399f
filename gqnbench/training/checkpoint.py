"""Checkpoints and final weights: written atomically, read back with a clear error.

A checkpoint holds everything a run needs to continue to exactly the result it would have
had: model, optimizer and grad-scaler state, the next step, the RNG states of every rank
(torch CPU/CUDA, numpy, python) and the curves so far. Batches are a pure function of the
step (``EpisodeSampler.batch(step)``), so the data needs no state of its own.

The weights file (``<run>.pt``) is the small artefact other tools load (samples, reports):
model name, its config and the state dict.

:func:`save_run_checkpoint` / :func:`restore_run_checkpoint` are what the training loop saves
and restores: the step object's model, optimizer and scaler, every rank's RNG states and the
run's state (a plain dict: ``RunState``'s fields).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gqnbench.files import atomic_write_bytes
from gqnbench.step import TrainStep, normalize_amp
from gqnbench.training import distributed as D

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, unreadable or does not match the run."""


def save_torch_atomic(path: str | Path, obj: Any) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        # Our own files hold numpy RNG states and plain dicts, so full unpickling is needed.
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a gqnbench {what} (expected a dict, found {type(obj).__name__})")
    return obj


def rng_state() -> dict[str, Any]:
    """This process's RNG states (the z-noise stream and anything numpy/python draws)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_checkpoint(ckpt: dict[str, Any], path: Path, model: str, config: dict[str, Any], world_size: int) -> None:
    """Refuse to resume a checkpoint of another model, config or world size."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    if ckpt.get("model_name") != model:
        raise CheckpointError(f"{path}: checkpoint is of model {ckpt.get('model_name')!r}, not {model!r}")
    saved = ckpt.get("config", {})
    for section in ("model", "data"):
        if saved.get(section) != config.get(section):
            raise CheckpointError(f"{path}: checkpoint was made with a different {section} config; start a new run")
    # Training fields that change the trajectory; steps/eval cadence may change on resume.
    for key in ("batch_size", "lr_start", "lr_end", "lr_anneal_steps", "seed", "amp", "adam_beta1", "adam_beta2"):
        old, new = saved.get("train", {}).get(key), config.get("train", {}).get(key)
        if key == "amp" and old is not None and new is not None:
            old, new = normalize_amp(old), normalize_amp(new)  # train.amp=off is fp32
        if old != new:
            raise CheckpointError(
                f"{path}: checkpoint has train.{key}={saved.get('train', {}).get(key)!r}, "
                f"this run has {config.get('train', {}).get(key)!r}"
            )
    if len(ckpt.get("rng", [])) != world_size:
        raise CheckpointError(
            f"{path}: checkpoint was written by {len(ckpt.get('rng', []))} rank(s), this run has {world_size}"
        )


def model_state_dict_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_run_checkpoint(
    path: Path, model_name: str, config: dict[str, Any], state: dict[str, Any], step: TrainStep, ctx: D.DistContext
) -> None:
    """Write the resume point (rank 0 writes; every rank contributes its RNG states)."""
    rngs = D.gather_objects(rng_state(), ctx)
    if ctx.is_main:
        save_torch_atomic(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "model_name": model_name,
                "config": config,
                "state": state,
                "rng": rngs,
                "model": model_state_dict_of(step.model),
                "optimizer": step.optimizer.state_dict(),
                "scaler": step.scaler.state_dict(),
            },
        )


def restore_run_checkpoint(ckpt: dict[str, Any], step: TrainStep, ctx: D.DistContext) -> dict[str, Any]:
    """Load a checked checkpoint into ``step`` and this rank's RNGs; returns the run's saved state dict."""
    step.model.load_state_dict(ckpt["model"])
    step.optimizer.load_state_dict(ckpt["optimizer"])
    step.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"][ctx.rank])
    return ckpt["state"]
