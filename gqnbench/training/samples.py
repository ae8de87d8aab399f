"""Prediction grids for the report: context views, the true query and each model's prediction.

Loads trained weights (``runs/<name>.pt``, written by the training loop at the end of a
run; a ``training_run`` JSON file is accepted too and its weights file is found next to
it), predicts the first ``num_scenes`` validation scenes (z sampled from the prior / q(z|D)
with a fixed seed, as in evaluation), adds the two reference predictors (the mean training
frame and the nearest context view) and writes a ``samples`` results file with every image
as a base64 PNG, so the report can draw the figure without importing a model.

Only a run that completed is a model's prediction: a run whose ``training_run`` file says it
diverged, was interrupted or failed is left out and listed under ``left_out`` with the reason
(a bare weights file without its run file is taken as it is).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gqnbench.config import ModelConfig
from gqnbench.data.episode import Episode
from gqnbench.models import build_model
from gqnbench.presets import Preset, get_preset
from gqnbench.results import read_result, write_result
from gqnbench.training.checkpoint import CheckpointError, load_torch
from gqnbench.training.data_source import load_training_data
from gqnbench.training.evaluation import mean_frame, nearest_context_prediction, slice_episode
from gqnbench.training.run_files import row_outcome


def png_base64(image: torch.Tensor | np.ndarray) -> str:
    """[3, H, W] float in [0, 1] (or [H, W, 3] uint8) -> base64-encoded PNG."""
    if isinstance(image, torch.Tensor):
        arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    else:
        arr = np.asarray(image, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def weights_path(run: str | Path) -> Path:
    """The weights file of a run: the ``.pt`` itself, or the one a ``training_run`` JSON names."""
    run = Path(run)
    if run.suffix == ".pt":
        return run
    doc = read_result(run, "training_run")
    name = (doc.get("files") or {}).get("weights") or run.with_suffix(".pt").name
    return run.parent / name


def run_doc(run: str | Path) -> dict[str, Any] | None:
    """The ``training_run`` document of a run file, or of the run beside a weights file; None for a bare weights file."""
    run = Path(run)
    doc_path = run if run.suffix == ".json" else run.with_suffix(".json")
    return read_result(doc_path, "training_run") if doc_path.is_file() else None


def load_trained_model(run: str | Path, device: str | torch.device = "cpu") -> tuple[str, torch.nn.Module, int]:
    """(model name, model with the run's final weights, its step) from a weights or run file."""
    path = weights_path(run)
    blob = load_torch(path, "weights file")
    for key in ("model_name", "model_config", "state_dict"):
        if key not in blob:
            raise CheckpointError(f"{path}: weights file has no {key!r}")
    model = build_model(blob["model_name"], ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    return blob["model_name"], model.to(device).eval(), int(blob.get("step", 0))


def _labelled(runs: Mapping[str, str | Path] | Sequence[str | Path]) -> list[tuple[str | None, str | Path]]:
    """``(label, file)`` pairs; a plain list has no labels (the model's name is used)."""
    return list(runs.items()) if isinstance(runs, Mapping) else [(None, r) for r in runs]


def _predict(run: str | Path, episode: Episode, seed: int, use_mean: bool) -> tuple[str, torch.Tensor, int]:
    """(model name, its predictions of the episode's queries, its step) from a run's weights.

    z is drawn with ``seed`` in a forked RNG, so every run sees the same draws and the caller's RNG is untouched.
    """
    name, model, step = load_trained_model(run)
    if model.config.image_size != episode.image_size:
        raise ValueError(
            f"{weights_path(run)}: model is for {model.config.image_size}px images, "
            f"the episode has {episode.image_size}px"
        )
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return name, model.predict(episode, use_mean=use_mean), step


def _scene(
    episode: Episode,
    b: int,
    predictions: Mapping[str, torch.Tensor],
    mean_image: torch.Tensor,
    nearest: torch.Tensor,
) -> dict[str, Any]:
    """Scene ``b`` as PNGs: its context views, the true query, each model's prediction and the two references."""
    ctx = episode.context_images[episode.context_scene == b]
    return {
        "index": b,
        "context": [png_base64(img) for img in ctx],
        "query": png_base64(episode.query_images[b, 0]),
        "predictions": {label: png_base64(pred[b, 0]) for label, pred in predictions.items()},
        "references": {
            "mean frame": png_base64(mean_image),
            "nearest context view": png_base64(nearest[b, 0]),
        },
    }


def write_samples(
    preset: str | Preset,
    runs: Mapping[str, str | Path] | Sequence[str | Path],
    out_path: str | Path,
    *,
    num_scenes: int = 4,
    episode: Episode | None = None,
    cache_root: str | Path | None = None,
    seed: int = 0,
    use_mean: bool = False,
) -> Path:
    """Predict ``num_scenes`` validation scenes with every run's weights and write ``samples``.

    ``runs``: weights (``.pt``) or ``training_run`` files, as a list (labelled by model name)
    or a ``{label: file}`` mapping. ``episode`` defaults to the preset's validation episode.
    Runs that did not complete are left out (``left_out``: label -> reason).
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    data = load_training_data(preset.data, cache_root)
    if episode is None:
        episode = data.val_episode
    episode = slice_episode(episode, 0, min(num_scenes, episode.num_scenes))
    mean_image = torch.from_numpy(mean_frame(data.train_scenes.images)).permute(2, 0, 1).float()
    nearest = nearest_context_prediction(episode)
    predictions: dict[str, torch.Tensor] = {}
    steps: dict[str, int] = {}
    left_out: dict[str, str] = {}
    for label, run in _labelled(runs):
        doc = run_doc(run)
        if doc is not None and doc["status"] != "completed":
            left_out[label or doc["model"]] = row_outcome(doc)
            continue
        name, prediction, step = _predict(run, episode, seed, use_mean)
        predictions[label or name], steps[label or name] = prediction, step
    document = {
        "preset": preset.name,
        "step": max(steps.values()) if steps else 0,
        "steps": steps,
        "left_out": left_out,
        "image_size": episode.image_size,
        "z": "mean" if use_mean else f"sampled (seed {seed})",
        "scenes": [_scene(episode, b, predictions, mean_image, nearest) for b in range(episode.num_scenes)],
    }
    return write_result(out_path, "samples", document)
