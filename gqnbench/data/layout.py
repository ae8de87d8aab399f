"""DeepMind's Shepard-Metzler data set layout: constants, folders and shard listing.

``<root>/shepard_metzler_7_parts/{train,test}/NNN-of-MMM.tfrecord``, numbered from 001.
Each record is one scene: 15 views of 64x64x3 JPEG frames and 15 cameras of 5 floats.
"""

from __future__ import annotations

import re
from pathlib import Path

from gqnbench.data.errors import MissingDataError

DATASET = "shepard_metzler_7_parts"
SPLITS = ("train", "test")
CAMERA_DIM = 5  # (x, y, z, yaw, pitch)
SHARD_PATTERN = re.compile(r"^(\d+)-of-(\d+)\.tfrecord$")


def shard_name(index: int, count: int) -> str:
    """``001-of-012.tfrecord`` for index 0 of 12 (1-based, at least 3 digits, as DeepMind names them)."""
    width = max(3, len(str(count)))
    return f"{index + 1:0{width}d}-of-{count:0{width}d}.tfrecord"


def dataset_dir(root: str | Path, dataset: str = DATASET) -> Path:
    """The folder holding ``train/`` and ``test/``: ``<root>/<dataset>``, or ``root`` itself if it holds them."""
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingDataError(f"{root}: data folder does not exist (expected <root>/{dataset}/{{train,test}}/)", root)
    if not root.is_dir():
        raise MissingDataError(f"{root}: not a folder (expected <root>/{dataset}/{{train,test}}/)", root)
    if (root / dataset).is_dir():
        return root / dataset
    if any((root / s).is_dir() for s in SPLITS):
        return root
    raise MissingDataError(
        f"{root}: no {dataset}/ folder and no train/ or test/ split folders "
        f"(expected <root>/{dataset}/{{train,test}}/NNN-of-MMM.tfrecord)",
        root,
    )


def list_shards(root: str | Path, split: str, dataset: str = DATASET) -> list[Path]:
    """The split's ``*.tfrecord`` files in order; errors if the split folder is missing or empty."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = dataset_dir(root, dataset) / split
    if not folder.is_dir():
        raise MissingDataError(
            f"{folder}: missing split folder {split!r} (expected {folder}/NNN-of-MMM.tfrecord)", folder
        )
    shards = sorted(p for p in folder.iterdir() if p.suffix == ".tfrecord" and not p.name.startswith("."))
    if not shards:
        raise MissingDataError(f"{folder}: split {split!r} holds no *.tfrecord files (empty folder)", folder)
    return shards
