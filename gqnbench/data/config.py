"""DataConfig: where scenes come from and how episodes are drawn from them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # a DeepMind-format root; None = the embedded generated set
    dataset: str = "shepard_metzler_7_parts"
    image_size: int = 64  # frames are resized to this in the decoded cache when smaller than 64
    generate_scenes: int = 1200  # size of the embedded set when root is None
    generate_seed: int = 0
    val_fraction: float = 0.1  # 9:1 train/test split of the generated set
    scenes_per_file: int = 100  # scenes per generated TFRecord shard (DeepMind's files hold about 900)
    cache_dir: str | None = None  # decoded-frame cache; None = <root>/.gqnbench-cache (or ~/.cache if read-only)
    min_context: int = 1
    max_context: int = 14  # M ~ U{min..max}; 14 leaves one of the 15 views for the query
    val_scenes: int = 64  # fixed validation episodes (3 context views, 1 query)
    val_context: int = 3
    val_seed: int = 1234
    num_workers: int = 0
