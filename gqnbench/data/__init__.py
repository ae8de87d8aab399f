"""Shepard-Metzler scenes: DeepMind's TFRecord format, the embedded generator, the decoded
cache and episode sampling.

Owns everything about scenes and batches; imports nothing else of gqnbench (the leaf of
the data flow). ``Episode`` (the batch type every model consumes) lives in
:mod:`gqnbench.data.episode` and is re-exported here.

Public API (the rest is loaded on first use, so ``import gqnbench.data`` costs only torch):

- ``generate_dataset(out_root, scenes, seed=0, val_fraction=0.1, scenes_per_file=100, workers=None) -> Path``
- ``ensure_dataset(cfg, cache_root) -> Path``
- ``open_scenes(root, split, image_size, cache_dir=None) -> SceneArrays``
- ``EpisodeSampler(scenes, batch_size, seed, min_context=1, max_context=14).batch(step, rank=0, world_size=1)``
- ``make_train_loader(sampler, start_step=0, rank=0, world_size=1, num_workers=0) -> DataLoader``
- ``validation_episode(scenes, num_scenes, num_context=3, seed=1234) -> Episode``

Modules: layout (paths), tfrecord_io (records, CRCs, JPEG), viewpoint (5 -> 7-d), render
(ray caster), generate (scenes -> shards), cache (decoded .npy), sampling (episodes), info,
errors, parallel (process pools).

Using DeepMind's real data: download ``shepard_metzler_7_parts`` from the gqn-datasets
bucket (e.g. ``gsutil -m cp -R gs://gqn-dataset/shepard_metzler_7_parts DIR/``) so that
``DIR/shepard_metzler_7_parts/{train,test}/*.tfrecord`` exist, then train with
``--set data.root=DIR`` (``gqnbench data info DIR`` checks it; ``gqnbench data cache DIR
--image-size 32`` decodes it once ahead of time). No TensorFlow is needed.

Making the embedded set: ``gqnbench data generate --scenes 1200 --seed 0 --out DIR``;
with ``data.root`` unset, training does this itself (``ensure_dataset``) under the cache
root, once per (scenes, seed, val_fraction, scenes_per_file).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gqnbench.config import DataConfig
from gqnbench.data.episode import Episode

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily via __getattr__
    from gqnbench.data.cache import SceneArrays, build_cache, open_scenes
    from gqnbench.data.errors import CorruptRecordError, DataError, MissingDataError, RecordFormatError
    from gqnbench.data.generate import ensure_dataset, generate_dataset
    from gqnbench.data.info import contact_sheet, dataset_info
    from gqnbench.data.sampling import EpisodeSampler, make_train_loader, validation_episode, validation_episodes
    from gqnbench.data.viewpoint import cameras_to_viewpoints

_LAZY = {
    "generate_dataset": "gqnbench.data.generate",
    "ensure_dataset": "gqnbench.data.generate",
    "open_scenes": "gqnbench.data.cache",
    "build_cache": "gqnbench.data.cache",
    "SceneArrays": "gqnbench.data.cache",
    "EpisodeSampler": "gqnbench.data.sampling",
    "make_train_loader": "gqnbench.data.sampling",
    "validation_episode": "gqnbench.data.sampling",
    "validation_episodes": "gqnbench.data.sampling",
    "cameras_to_viewpoints": "gqnbench.data.viewpoint",
    "dataset_info": "gqnbench.data.info",
    "contact_sheet": "gqnbench.data.info",
    "DataError": "gqnbench.data.errors",
    "MissingDataError": "gqnbench.data.errors",
    "CorruptRecordError": "gqnbench.data.errors",
    "RecordFormatError": "gqnbench.data.errors",
}

__all__ = [  # spelled out (not *_LAZY) so linters see what the TYPE_CHECKING imports are for
    "DataConfig",
    "Episode",
    "generate_dataset",
    "ensure_dataset",
    "open_scenes",
    "build_cache",
    "SceneArrays",
    "EpisodeSampler",
    "make_train_loader",
    "validation_episode",
    "validation_episodes",
    "cameras_to_viewpoints",
    "dataset_info",
    "contact_sheet",
    "DataError",
    "MissingDataError",
    "CorruptRecordError",
    "RecordFormatError",
]
assert set(__all__) == {"DataConfig", "Episode", *_LAZY}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
