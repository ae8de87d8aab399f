"""Validation NLL on the fixed validation episode, and the reference predictors a curve is judged against.

The metric is the study's (``gqnbench.metrics.study_nll``: unit variance, nats per image)
on ``model.predict``, with the per-pixel MSE and the MSE on foreground pixels beside it.
Both models are evaluated the same way, twice: z **sampled** (GQN from its prior
pi(z | r, v_q), the proposed model from q(z | D)), as the study does, and z at the **mean** of
that distribution; ``TrainConfig.eval_use_mean`` says which of the two the curve's headline
``val_*`` numbers (and so every table) use. The reference predictors (:func:`reference_results`)
are the mean training frame (ignores the scene) and the nearest context view (copies the
context image whose camera is closest to the query camera). The sampling noise is seeded per chunk of
``eval_batch_size`` scenes (seed = val_seed + chunk index) inside ``torch.random.fork_rng``,
so:

- every evaluation of a run sees the same noise (the curve moves only because weights do);
- evaluating never advances the training RNG (resume stays exact);
- the result does not depend on how many ranks share the chunks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from gqnbench.data.episode import Episode
from gqnbench.judging import nll_constant
from gqnbench.metrics import NLLResult, study_nll


def slice_episode(episode: Episode, start: int, stop: int) -> Episode:
    """Scenes ``start:stop`` of a batch, with their packed context views re-indexed from 0."""
    keep = (episode.context_scene >= start) & (episode.context_scene < stop)
    return Episode(
        context_images=episode.context_images[keep],
        context_viewpoints=episode.context_viewpoints[keep],
        context_scene=episode.context_scene[keep] - start,
        query_images=episode.query_images[start:stop],
        query_viewpoints=episode.query_viewpoints[start:stop],
    )


def chunk_bounds(num_scenes: int, chunk: int) -> list[tuple[int, int]]:
    chunk = max(1, int(chunk))
    return [(a, min(a + chunk, num_scenes)) for a in range(0, num_scenes, chunk)]


@dataclass(frozen=True)
class EvalSums:
    """Additive pieces of the metric, so ranks can sum them before dividing."""

    nll_sum: float  # sum over images of the per-image NLL (nats)
    sq_err_sum: float  # sum over all pixel values of the squared error
    num_images: int
    values_per_image: int
    fg_sq_err_sum: float = 0.0  # the same over foreground pixel values only
    fg_values: int = 0

    def additive(self) -> list[float]:
        """The summable parts, in the order :meth:`from_additive` takes them."""
        return [self.nll_sum, self.sq_err_sum, float(self.num_images), self.fg_sq_err_sum, float(self.fg_values)]

    @classmethod
    def from_additive(cls, parts: list[float], values_per_image: int) -> EvalSums:
        nll, sq, n, fg_sq, fg_n = parts
        return cls(nll, sq, int(n), values_per_image, fg_sq, int(fg_n))

    def result(self) -> NLLResult:
        if self.num_images == 0:
            raise ValueError("no validation images were evaluated")
        values = self.num_images * self.values_per_image
        return NLLResult(
            nll=self.nll_sum / self.num_images,
            mse=self.sq_err_sum / values,
            constant=nll_constant(self.values_per_image),
            num_images=self.num_images,
            fg_mse=self.fg_sq_err_sum / self.fg_values if self.fg_values else float("nan"),
            fg_fraction=self.fg_values / values,
        )


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def evaluate_sums(
    model: torch.nn.Module,
    episode: Episode,
    *,
    seed: int,
    chunk: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    use_mean: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> EvalSums:
    """Sum of per-image NLL and squared error over the chunks this rank owns (chunk i -> rank i % W)."""
    was_training = model.training
    model.eval()
    nll_sum, sq_sum, n_img, per_image, fg_sq, fg_n = 0.0, 0.0, 0, 0, 0.0, 0
    try:
        for index, (a, b) in enumerate(chunk_bounds(episode.num_scenes, chunk)):
            if index % world_size != rank:
                continue
            part = slice_episode(episode, a, b).to(device)
            with _seeded(seed + index, device), autocast():
                pred = model.predict(part, use_mean=use_mean)
            target = part.query_images.flatten(0, 1).float()
            res = study_nll(target, pred.flatten(0, 1).float())
            nll_sum += res.nll * res.num_images
            per_image = target[0].numel()
            sq_sum += res.mse * res.num_images * per_image
            n_img += res.num_images
            values_fg = round(res.fg_fraction * res.num_images * per_image)
            fg_n += values_fg
            fg_sq += res.fg_mse * values_fg if values_fg else 0.0
    finally:
        model.train(was_training)
    if per_image == 0:
        per_image = int(episode.query_images[0, 0].numel())
    return EvalSums(nll_sum, sq_sum, n_img, per_image, fg_sq, fg_n)


def mean_frame(train_images: np.ndarray, max_scenes: int = 2000) -> np.ndarray:
    """The per-pixel mean training frame, float64 [H, W, 3] in [0, 1]; ``train_images`` is uint8 [S, V, H, W, 3]."""
    n = min(len(train_images), max_scenes)
    acc = np.zeros(train_images.shape[2:], dtype=np.float64)
    for a in range(0, n, 256):
        acc += np.asarray(train_images[a : min(a + 256, n)], dtype=np.float64).sum(axis=(0, 1))
    return acc / (n * train_images.shape[1] * 255.0)


def mean_image_baseline(train_images: np.ndarray, episode: Episode, max_scenes: int = 2000) -> NLLResult:
    """The study's NLL of always predicting the per-pixel mean training frame.

    This is the best prediction that ignores context and viewpoint; a model has *learned*
    something about scenes only if it beats it. ``train_images`` is uint8 [S, 15, H, W, 3].
    """
    mean = mean_frame(train_images, max_scenes)  # [H, W, 3]
    target = episode.query_images.flatten(0, 1).float().cpu()
    if mean.shape[0] != target.shape[-1]:
        raise ValueError(
            f"training frames are {mean.shape[0]}x{mean.shape[1]} but validation queries are "
            f"{target.shape[-2]}x{target.shape[-1]}"
        )
    pred = torch.from_numpy(mean).permute(2, 0, 1).float().expand_as(target)
    return study_nll(target, pred)


def nearest_context_prediction(episode: Episode) -> torch.Tensor:
    """[B, K, 3, H, W]: for every query, the scene's context image whose camera position is closest.

    Knows the scene but nothing of 3-D: the reference that a model using its context must beat
    once it has learned more than colours (with 3 views it is worse than the mean frame).
    """
    out = torch.empty_like(episode.query_images)
    positions = episode.context_viewpoints[:, :3]
    for b in range(episode.num_scenes):
        index = torch.nonzero(episode.context_scene == b).flatten()
        if index.numel() == 0:
            raise ValueError(f"scene {b} of the episode has no context view")
        dist = torch.cdist(episode.query_viewpoints[b, :, :3].double(), positions[index].double())  # [K, M]
        out[b] = episode.context_images[index[dist.argmin(dim=1)]]
    return out


def reference_results(train_images: np.ndarray, episode: Episode) -> dict[str, NLLResult]:
    """The reference predictors on ``episode``: ``mean_image`` and ``nearest_context`` (see the module docstring)."""
    target = episode.query_images.flatten(0, 1).float().cpu()
    nearest = nearest_context_prediction(episode.to("cpu")).flatten(0, 1).float()
    return {
        "mean_image": mean_image_baseline(train_images, episode),
        "nearest_context": study_nll(target, nearest),
    }
