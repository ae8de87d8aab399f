"""Validation NLL on the fixed validation episode, and the baselines a curve is judged against.

The metric is the study's (``gqnbench.metrics.study_nll``: unit variance, nats per image)
on ``model.predict``. Both models are evaluated the same way: z is **sampled** (GQN from its
prior pi(z | r, v_q), the proposed model from q(z | D)), as the study does, unless
``TrainConfig.eval_use_mean`` asks for the mean. The sampling noise is seeded per chunk of
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
from gqnbench.metrics import NLLResult, nll_constant, study_nll


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

    def result(self) -> NLLResult:
        if self.num_images == 0:
            raise ValueError("no validation images were evaluated")
        return NLLResult(
            nll=self.nll_sum / self.num_images,
            mse=self.sq_err_sum / (self.num_images * self.values_per_image),
            constant=nll_constant(self.values_per_image),
            num_images=self.num_images,
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
    nll_sum, sq_sum, n_img, per_image = 0.0, 0.0, 0, 0
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
    finally:
        model.train(was_training)
    if per_image == 0:
        per_image = int(episode.query_images[0, 0].numel())
    return EvalSums(nll_sum, sq_sum, n_img, per_image)


def mean_image_baseline(train_images: np.ndarray, episode: Episode, max_scenes: int = 2000) -> NLLResult:
    """The study's NLL of always predicting the per-pixel mean training frame.

    This is the best prediction that ignores context and viewpoint; a model has *learned*
    something about scenes only if it beats it. ``train_images`` is uint8 [S, 15, H, W, 3].
    """
    n = min(len(train_images), max_scenes)
    acc = np.zeros(train_images.shape[2:], dtype=np.float64)
    for a in range(0, n, 256):
        acc += np.asarray(train_images[a : min(a + 256, n)], dtype=np.float64).sum(axis=(0, 1))
    mean = acc / (n * train_images.shape[1] * 255.0)  # [H, W, 3]
    target = episode.query_images.flatten(0, 1).float().cpu()
    if mean.shape[0] != target.shape[-1]:
        raise ValueError(
            f"training frames are {mean.shape[0]}x{mean.shape[1]} but validation queries are "
            f"{target.shape[-2]}x{target.shape[-1]}"
        )
    pred = torch.from_numpy(mean).permute(2, 0, 1).float().expand_as(target)
    return study_nll(target, pred)
