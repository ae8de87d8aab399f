"""Episodes from decoded scenes: training batches as a pure function of the step, and the fixed
validation set (SPEC section 4).

Training: the global batch of step ``t`` is drawn from ``np.random.default_rng([seed, t])``,
in this order: ``batch_size`` distinct scenes (with replacement only if the split has fewer),
one context size M ~ U{min_context..max_context} per scene, and a random permutation of the
15 views per scene whose first M entries are the context and entry M the query. So the
query is never a context view, resuming at step t gives exactly the batches of an
uninterrupted run, and rank k of a W-rank run gets rows ``[k B/W, (k+1) B/W)`` of the same
global batch a 1-rank run sees.

:func:`make_train_loader` wraps the sampler in a map-style ``Dataset`` indexed by step with
``batch_size=None``: the DataLoader hands each step index to exactly one worker, so workers
never duplicate a batch (the pitfall of iterable TFRecord readers, SPEC section 5).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gqnbench.data.cache import SceneArrays
from gqnbench.data.episode import Episode

_VALIDATION_STREAM = 0x56414C  # "VAL"


def _to_float_images(images: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [0, 1].

    Converted in numpy (one thread) on purpose: these tensors are small, and torch's
    intra-op thread pool made this 10-40x slower on a busy 2-core machine (measured).
    """
    out = np.empty((*images.shape[:-3], 3, *images.shape[-3:-1]), dtype=np.float32)
    np.divide(np.moveaxis(images, -1, -3), np.float32(255.0), out=out, dtype=np.float32)
    return torch.from_numpy(out)


class EpisodeSampler:
    """Draws training episodes from ``scenes``; :meth:`batch` is a pure function of ``(seed, step)``."""

    def __init__(
        self, scenes: SceneArrays, batch_size: int, seed: int, min_context: int = 1, max_context: int = 14
    ) -> None:
        views = scenes.num_views
        if not 1 <= min_context <= max_context <= views - 1:
            raise ValueError(
                f"need 1 <= min_context <= max_context <= {views - 1} (one of the {views} views is the query), "
                f"got {min_context}..{max_context}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(scenes) == 0:
            raise ValueError("no scenes to sample from")
        self.scenes = scenes
        self.batch_size = batch_size
        self.seed = seed
        self.min_context = min_context
        self.max_context = max_context

    def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The global batch's indices: scenes [B], context sizes M [B], view orders [B, 15]
        (context = ``order[b, :M[b]]``, query = ``order[b, M[b]]``)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = np.random.default_rng([self.seed, step])
        n = len(self.scenes)
        scene = rng.choice(n, size=self.batch_size, replace=n < self.batch_size)
        m = rng.integers(self.min_context, self.max_context + 1, size=self.batch_size)
        order = rng.random((self.batch_size, self.scenes.num_views)).argsort(axis=1)
        return scene, m, order

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> Episode:
        """Rank ``rank``'s contiguous slice (``batch_size / world_size`` scenes) of the global batch of ``step``."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if self.batch_size % world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by world_size {world_size}")
        scene, m, order = self.draw(step)
        per = self.batch_size // world_size
        rows = slice(rank * per, (rank + 1) * per)
        return build_episode(self.scenes, scene[rows], m[rows], order[rows])


def build_episode(scenes: SceneArrays, scene: np.ndarray, m: np.ndarray, order: np.ndarray) -> Episode:
    """Gather an episode: scene ``scene[b]`` with context views ``order[b, :m[b]]`` and query ``order[b, m[b]]``."""
    b = len(scene)
    images = np.asarray(scenes.images[scene])  # [b, V, H, W, 3]: reads only the rows used
    views = np.asarray(scenes.viewpoints[scene])
    ctx_scene = np.repeat(np.arange(b), m)
    ctx_view = order[np.arange(order.shape[1])[None, :] < m[:, None]]  # row-major: scene by scene, first m[b]
    query_view = order[np.arange(b), m]
    return Episode(
        context_images=_to_float_images(images[ctx_scene, ctx_view]),
        context_viewpoints=torch.from_numpy(np.ascontiguousarray(views[ctx_scene, ctx_view])),
        context_scene=torch.from_numpy(ctx_scene.astype(np.int64)),
        query_images=_to_float_images(images[np.arange(b), query_view][:, None]),
        query_viewpoints=torch.from_numpy(np.ascontiguousarray(views[np.arange(b), query_view][:, None])),
    )


class StepDataset(Dataset):
    """Map-style dataset: item ``step`` is rank ``rank``'s episode of training step ``step``."""

    def __init__(self, sampler: EpisodeSampler, rank: int = 0, world_size: int = 1) -> None:
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size

    def __getitem__(self, step: int) -> Episode:
        return self.sampler.batch(int(step), self.rank, self.world_size)


class _Steps(Sampler[int]):
    """Step indices ``start, start + 1, ...`` (forever when ``stop`` is None)."""

    def __init__(self, start: int, stop: int | None) -> None:
        self.start = start
        self.stop = stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop)) if self.stop is not None else itertools.count(self.start)

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless step sampler has no length; pass num_steps")
        return max(0, self.stop - self.start)


def _identity(x: Episode) -> Episode:
    return x


def make_train_loader(
    sampler: EpisodeSampler,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    num_steps: int | None = None,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """Episodes of steps ``start_step, start_step + 1, ...`` (``num_steps`` of them, or endless).

    The i-th item equals ``sampler.batch(start_step + i, rank, world_size)`` whatever ``num_workers``.
    """
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    stop = None if num_steps is None else start_step + num_steps
    kwargs = {}
    if num_workers > 0 and prefetch_factor is not None:
        kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(
        StepDataset(sampler, rank, world_size),
        batch_size=None,
        sampler=_Steps(start_step, stop),
        num_workers=num_workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        **kwargs,
    )


def validation_indices(
    num_total: int, num_scenes: int, num_views: int, num_context: int = 3, seed: int = 1234
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed validation draw: sorted scene indices [N] and view orders [N, num_views]
    (context = the first ``num_context`` views, query = the next one)."""
    if not 1 <= num_context <= num_views - 1:
        raise ValueError(f"num_context must be in 1..{num_views - 1}, got {num_context}")
    if not 1 <= num_scenes <= num_total:
        raise ValueError(f"num_scenes must be in 1..{num_total} (scenes in the split), got {num_scenes}")
    # The tag keeps this stream apart from a training sampler's [seed, 0] (SeedSequence zero-pads short entropy).
    rng = np.random.default_rng([seed, _VALIDATION_STREAM])
    scene = np.sort(rng.choice(num_total, size=num_scenes, replace=False))
    order = rng.random((num_scenes, num_views)).argsort(axis=1)
    return scene, order


def validation_episode(scenes: SceneArrays, num_scenes: int, num_context: int = 3, seed: int = 1234) -> Episode:
    """The fixed validation episode: ``num_scenes`` scenes chosen by ``seed``, each with ``num_context``
    context views and K = 1 query, all fixed by ``seed``; identical for every model and run."""
    scene, order = validation_indices(len(scenes), num_scenes, scenes.num_views, num_context, seed)
    return build_episode(scenes, scene, np.full(len(scene), num_context), order)


def validation_episodes(
    scenes: SceneArrays, num_scenes: int, batch_size: int, num_context: int = 3, seed: int = 1234
) -> list[Episode]:
    """:func:`validation_episode` in chunks of ``batch_size`` scenes (same scenes and views, in order),
    for evaluating without holding every validation scene's activations at once."""
    scene, order = validation_indices(len(scenes), num_scenes, scenes.num_views, num_context, seed)
    m = np.full(len(scene), num_context)
    return [
        build_episode(scenes, scene[i : i + batch_size], m[i : i + batch_size], order[i : i + batch_size])
        for i in range(0, len(scene), batch_size)
    ]
