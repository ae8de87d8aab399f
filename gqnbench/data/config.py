"""DataConfig: where scenes come from and how episodes are drawn from them.

Every numeric field declares the values it allows (:func:`gqnbench.config.ranged`); a config
outside them is refused when it is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from gqnbench.config import ConfigError, check_ranges, ranged
from gqnbench.data.layout import FRAME_SIZE, NUM_VIEWS

# A context of at most every view but one: one view of each scene is the query.
MAX_CONTEXT = NUM_VIEWS - 1


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # a DeepMind-format root; None = the embedded generated set
    dataset: str = "shepard_metzler_7_parts"
    # Frames are resized to this in the decoded cache (the cache only shrinks the 64x64 frames).
    image_size: int = ranged(64, lo=1, hi=FRAME_SIZE)
    generate_scenes: int = ranged(1200, lo=2)  # size of the embedded set when root is None (>= 1 train + 1 test)
    generate_seed: int = ranged(0, lo=0)
    val_fraction: float = ranged(0.1, lo=0, hi=1, lo_open=True, hi_open=True)  # 9:1 train/test split of the generated set
    scenes_per_file: int = ranged(100, lo=1)  # scenes per generated TFRecord shard (DeepMind's files hold about 900)
    cache_dir: str | None = None  # decoded-frame cache; None = <root>/.gqnbench-cache (or ~/.cache if read-only)
    min_context: int = ranged(1, lo=1, hi=MAX_CONTEXT)
    max_context: int = ranged(MAX_CONTEXT, lo=1, hi=MAX_CONTEXT)  # M ~ U{min..max}
    val_scenes: int = ranged(64, lo=1)  # fixed validation episodes (3 context views, 1 query)
    val_context: int = ranged(3, lo=1, hi=MAX_CONTEXT)
    val_seed: int = ranged(1234, lo=0)
    num_workers: int = ranged(0, lo=0)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.max_context < self.min_context:
            raise ConfigError(f"max_context={self.max_context}: must be >= min_context ({self.min_context})")
