"""``gqnbench data info``: what a data set root holds, and a contact sheet to look at it.

By default every record of every shard is validated as the training data reader would
(CRC32C, a ``tf.train.Example`` with 15 finite cameras and 15 64x64 RGB JPEG frames), so a
data set that ``info`` calls healthy trains; the first bad record raises a
:class:`~gqnbench.data.errors.DataError` naming file, record and view. ``fast=True`` counts
records from the framing alone (length CRCs and truncation; no payload), which is quick even
on the real data set. Empty (zero-byte) shards count as zero scenes and are listed.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gqnbench.data.errors import MissingDataError
from gqnbench.data.generate import MARKER
from gqnbench.data.layout import DATASET, SPLITS, dataset_dir, list_shards
from gqnbench.data.tfrecord_io import count_records, iter_records, parse_example, read_scenes
from gqnbench.files import atomic_write_bytes


def _validated_count(path: Path) -> int:
    """Records in ``path``, each checked as the reader would (CRC, features, finite cameras, frames)."""
    return sum(1 for _ in read_scenes(path))


@dataclass(frozen=True)
class SplitInfo:
    files: int
    scenes: int
    bytes: int
    empty_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    splits: dict[str, SplitInfo | None]  # None: the split folder is missing or empty
    image_size: int
    views: int
    generated: dict[str, Any] | None = field(default=None)  # the embedded generator's settings, if it made it
    validated: bool = False  # every record decoded and checked (False: framing only, --fast)


def dataset_info(root: str | Path, dataset: str = DATASET, fast: bool = False) -> DatasetInfo:
    """Files, scenes and bytes per split, the frame size and view count (from the first record).

    Every record is validated unless ``fast`` (then only the framing is read)."""
    folder = dataset_dir(root, dataset)
    splits: dict[str, SplitInfo | None] = {}
    first: Path | None = None
    found_any = False
    for split in SPLITS:
        try:
            shards = list_shards(root, split, dataset)
        except MissingDataError:
            splits[split] = None
            continue
        found_any = True
        counts = [count_records(p) if fast else _validated_count(p) for p in shards]
        first = first or next((p for p, n in zip(shards, counts) if n), None)
        splits[split] = SplitInfo(
            files=len(shards),
            scenes=sum(counts),
            bytes=sum(p.stat().st_size for p in shards),
            empty_files=tuple(p.name for p, n in zip(shards, counts) if n == 0),
        )
    if not found_any:
        raise MissingDataError(f"{folder}: neither train/ nor test/ holds any *.tfrecord files", folder)
    if first is None:
        raise MissingDataError(f"{folder}: every *.tfrecord file is empty (no records)", folder)
    image_size, views = 0, 0
    for index, payload in iter_records(first):
        frames, _ = parse_example(payload, first, index)
        views = len(frames)
        image_size = Image.open(io.BytesIO(frames[0])).size[0]
        break
    marker = folder / MARKER
    generated = json.loads(marker.read_text()) if marker.exists() else None
    return DatasetInfo(
        path=folder, splits=splits, image_size=image_size, views=views, generated=generated, validated=not fast
    )


def format_info(info: DatasetInfo) -> str:
    lines = [f"data set: {info.path}"]
    for split, s in info.splits.items():
        if s is None:
            lines.append(f"  {split:<5}  missing")
        else:
            kb = s.bytes / max(1, s.scenes * info.views) / 1024
            lines.append(
                f"  {split:<5}  {s.scenes:>9,} scenes in {s.files:>4} files  ({s.bytes / 2**20:,.1f} MiB, {kb:.2f} KiB a frame)"
            )
            if s.empty_files:
                lines.append(f"         {len(s.empty_files)} empty file(s) (no records): {', '.join(s.empty_files)}")
    lines.append(f"  frames {info.image_size}x{info.image_size}x3 JPEG, {info.views} views a scene")
    lines.append(
        "  every record checked (CRC, features, finite cameras, frames)"
        if info.validated
        else "  --fast: framing checked only (records not decoded)"
    )
    if info.generated:
        g = info.generated
        lines.append(
            f"  embedded set: gqnbench generator v{g.get('version')}, seed {g.get('seed')}, "
            f"{g.get('scenes')} scenes, val_fraction {g.get('val_fraction')}"
        )
    else:
        lines.append("  source: not made by gqnbench's generator (e.g. DeepMind's files)")
    return "\n".join(lines)


def contact_sheet(
    root: str | Path,
    out_png: str | Path,
    split: str = "train",
    num_scenes: int = 4,
    scale: int = 2,
    dataset: str = DATASET,
) -> Path:
    """A PNG grid: one row per scene (the first ``num_scenes`` of ``split``), all views side by side."""
    rows: list[np.ndarray] = []
    for shard in list_shards(root, split, dataset):
        for scene in read_scenes(shard):
            rows.append(scene.frames)
            if len(rows) == num_scenes:
                break
        if len(rows) == num_scenes:
            break
    views, size = rows[0].shape[0], rows[0].shape[1]
    gap = 2
    tile = size * scale
    sheet = np.full((len(rows) * (tile + gap) + gap, views * (tile + gap) + gap, 3), 64, dtype=np.uint8)
    for r, frames in enumerate(rows):
        for v in range(views):
            big = frames[v].repeat(scale, axis=0).repeat(scale, axis=1)  # nearest: shows the real pixels
            y, x = gap + r * (tile + gap), gap + v * (tile + gap)
            sheet[y : y + tile, x : x + tile] = big
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG")
    return atomic_write_bytes(out_png, buf.getvalue())
