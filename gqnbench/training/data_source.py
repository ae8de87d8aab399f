"""Where a training run's scenes come from: the data API, opened once per process.

``load_training_data`` resolves the data set (``ensure_dataset``: a DeepMind-format root, or
the embedded generated set cached under ``cache_root``), opens the train and test splits
at the preset's image size, builds the fixed validation episode (``validation_episode``:
the same scenes, context views and queries for every model and run) and the mean-frame
baseline that "learned" is judged against. Opening is cheap (memmaps) and memoised, so a
sweep running many settings in one process opens the data once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gqnbench.config import DataConfig
from gqnbench.data.episode import Episode
from gqnbench.metrics import NLLResult
from gqnbench.training.evaluation import reference_results

_CACHE: dict[tuple, TrainingData] = {}


def default_cache_root() -> Path:
    """``$GQNBENCH_CACHE`` or ``~/.cache/gqnbench``: the generated data set lives here, shared by runs."""
    env = os.environ.get("GQNBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gqnbench"


@dataclass
class TrainingData:
    """Scenes to sample training batches from and the fixed validation episode."""

    train_scenes: Any  # SceneArrays-like: .images uint8 [S, 15, H, W, 3], .viewpoints float32 [S, 15, 7]
    val_episode: Episode
    references: dict[str, NLLResult]  # reference predictors on val_episode: mean_image, nearest_context
    root: Path | None = None
    # Another sampler class with EpisodeSampler's signature (e.g. in tests); None = the data API's.
    sampler_class: Any = None

    @property
    def baseline(self) -> NLLResult:
        """Always predicting the mean training frame: the level a model must beat to have learned."""
        return self.references["mean_image"]

    def sampler(self, batch_size: int, seed: int, data_cfg: DataConfig) -> Any:
        if self.sampler_class is None:
            from gqnbench.data import EpisodeSampler
        else:
            EpisodeSampler = self.sampler_class  # noqa: N806
        return EpisodeSampler(
            self.train_scenes,
            batch_size=batch_size,
            seed=seed,
            min_context=data_cfg.min_context,
            max_context=data_cfg.max_context,
        )


def load_training_data(
    data_cfg: DataConfig, cache_root: str | Path | None = None, progress: bool = True
) -> TrainingData:
    """Open (generating on first use) the preset's data set and its validation episode."""
    from gqnbench.data import ensure_dataset, open_scenes, validation_episode

    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    key = (dataclasses.astuple(data_cfg), str(cache_root.resolve()))
    if key in _CACHE:
        return _CACHE[key]
    root = Path(ensure_dataset(data_cfg, cache_root, progress=progress))
    # data.cache_dir: where the decoded frames go (None: next to the data, or ~/.cache if read-only).
    train = open_scenes(root, "train", data_cfg.image_size, cache_dir=data_cfg.cache_dir, progress=progress)
    test = open_scenes(root, "test", data_cfg.image_size, cache_dir=data_cfg.cache_dir, progress=progress)
    if len(test) < data_cfg.val_scenes:
        raise ValueError(
            f"{root}: the test split has {len(test)} scenes but data.val_scenes={data_cfg.val_scenes}; "
            "generate more scenes (data.generate_scenes) or lower data.val_scenes"
        )
    val = validation_episode(test, data_cfg.val_scenes, num_context=data_cfg.val_context, seed=data_cfg.val_seed)
    data = TrainingData(train, val, reference_results(train.images, val), root)
    _CACHE[key] = data
    return data
