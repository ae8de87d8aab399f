"""The embedded generator: DeepMind layout, determinism, and a lossless-up-to-JPEG round trip."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gqnbench.config import DataConfig
from gqnbench.data.errors import DataError, MissingDataError
from gqnbench.data.generate import (
    MARKER,
    embedded_name,
    encode_jpeg,
    ensure_dataset,
    generate_dataset,
    render_scene_arrays,
)
from gqnbench.data.layout import DATASET, list_shards
from gqnbench.data.tfrecord_io import read_scenes

pytest_plugins = ["conftest_data"]  # fixtures tiny_dataset, dataset_copy


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / DATASET).rglob("*.tfrecord"))}


def test_layout_and_split(tiny_dataset: Path, tiny_meta: dict):
    train, test = list_shards(tiny_dataset, "train"), list_shards(tiny_dataset, "test")
    assert [p.name for p in train] == [f"00{i}-of-004.tfrecord" for i in range(1, 5)]
    assert [p.name for p in test] == ["001-of-002.tfrecord", "002-of-002.tfrecord"]
    assert sum(len(list(read_scenes(p))) for p in train) == 18
    assert [len(list(read_scenes(p))) for p in test] == [tiny_meta["per_file"], 1]
    meta = json.loads((tiny_dataset / DATASET / MARKER).read_text())
    assert meta["splits"] == {"train": 18, "test": 6} and meta["scenes"] == tiny_meta["scenes"]


def test_same_seed_same_bytes_any_worker_count_other_seed_differs(tmp_path: Path):
    a = shard_bytes(generate_dataset(tmp_path / "a", 6, seed=5, scenes_per_file=2, workers=1, progress=False))
    b = shard_bytes(generate_dataset(tmp_path / "b", 6, seed=5, scenes_per_file=2, workers=2, progress=False))
    c = shard_bytes(generate_dataset(tmp_path / "c", 6, seed=6, scenes_per_file=2, workers=1, progress=False))
    assert len(a) == 4 and a == b  # 5 train in 3 files + 1 test, identical bytes
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_round_trip_frames_within_jpeg_error_and_cameras_exact(tiny_dataset: Path, tiny_meta: dict):
    errors = []
    for split in ("train", "test"):
        index = 0
        for shard in list_shards(tiny_dataset, split):
            for scene in read_scenes(shard):
                frames, cameras = render_scene_arrays(tiny_meta["seed"], split, index)
                assert np.array_equal(scene.cameras, cameras)  # float32 bit-exact
                errors.append(np.abs(scene.frames.astype(np.int16) - frames.astype(np.int16)))
                index += 1
                if index == 1:  # exactly what Pillow's encoder + decoder make of the rendered frames
                    redecoded = [np.asarray(Image.open(io.BytesIO(encode_jpeg(f)))) for f in frames]
                    assert np.array_equal(scene.frames, np.stack(redecoded))
    err = np.stack(errors).astype(np.float64)
    # Levels of 255. Quality 95 with 4:2:0 chroma (TensorFlow's default; about 1.5 KB a frame):
    # small on the black background, largest where saturated colours meet at cube edges.
    assert 0 < err.mean() < 2.5
    assert np.median(err) <= 1 and np.percentile(err, 90) <= 6


def test_refuses_to_overwrite_and_cleans_partial(tmp_path: Path):
    root = generate_dataset(tmp_path, 2, scenes_per_file=1, workers=1, progress=False)
    with pytest.raises(DataError, match="already exists"):
        generate_dataset(tmp_path, 2, workers=1, progress=False)
    stale = tmp_path / f".{DATASET}.partial" / "train"
    stale.mkdir(parents=True)  # as left by an interrupted run
    (stale / "junk.tfrecord").write_bytes(b"x")
    generate_dataset(root, 2, seed=1, scenes_per_file=1, workers=1, overwrite=True, progress=False)
    assert not (tmp_path / f".{DATASET}.partial").exists()
    assert [p.name for p in list_shards(root, "train")] == ["001-of-001.tfrecord"]


@pytest.mark.parametrize(("scenes", "frac"), [(1, 0.1), (10, 0.0), (10, 1.0), (2, 0.9)])
def test_bad_sizes(tmp_path: Path, scenes: int, frac: float):
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, scenes, val_fraction=frac, workers=1, progress=False)


def test_ensure_dataset_generates_once_and_honours_root(tmp_path: Path, tiny_dataset: Path):
    cfg = DataConfig(generate_scenes=3, generate_seed=2, val_fraction=0.34, scenes_per_file=2)
    root = ensure_dataset(cfg, tmp_path / "cache", progress=False)
    assert root == tmp_path / "cache" / embedded_name(cfg)
    marker = root / DATASET / MARKER
    first = marker.stat().st_mtime_ns
    assert ensure_dataset(cfg, tmp_path / "cache", progress=False) == root
    assert marker.stat().st_mtime_ns == first  # reused, not regenerated
    assert len(list_shards(root, "train")) == 1 and len(list_shards(root, "test")) == 1
    assert ensure_dataset(DataConfig(root=str(tiny_dataset)), tmp_path / "unused") == tiny_dataset
    assert not (tmp_path / "unused").exists()
    with pytest.raises(MissingDataError, match="does not exist"):
        ensure_dataset(DataConfig(root=str(tmp_path / "nope")), tmp_path)
