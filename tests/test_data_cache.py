"""The decoded cache: contents, BOX resizing, reuse, invalidation, resume, and no poisoning by a bad shard."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from gqnbench.data.cache import SceneArrays, open_scenes
from gqnbench.data.errors import CorruptRecordError, MissingDataError, RecordFormatError
from gqnbench.data.layout import list_shards
from gqnbench.data.tfrecord_io import read_scenes
from gqnbench.data.viewpoint import cameras_to_viewpoints

pytest_plugins = ["conftest_data"]  # fixtures tiny_dataset, dataset_copy


def decoded(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    scenes = [s for p in list_shards(root, split) for s in read_scenes(p)]
    return np.stack([s.frames for s in scenes]), np.stack([s.cameras for s in scenes])


def test_cache_holds_the_decoded_split(tiny_dataset: Path, tmp_path: Path):
    scenes = open_scenes(tiny_dataset, "train", 64, cache_dir=tmp_path, workers=1, progress=False)
    frames, cameras = decoded(tiny_dataset, "train")
    assert isinstance(scenes.images, np.memmap) and not scenes.images.flags.writeable
    assert scenes.images.shape == (18, 15, 64, 64, 3) and len(scenes) == 18 and scenes.image_size == 64
    assert np.array_equal(scenes.images, frames)
    assert np.array_equal(scenes.cameras, cameras)
    assert np.array_equal(scenes.viewpoints, cameras_to_viewpoints(cameras))


def test_resized_cache_is_the_box_average(tiny_dataset: Path, tmp_path: Path):
    """BOX at 64 -> 32 is the mean of each 2x2 block (Pillow rounds; allow 1 level)."""
    small = open_scenes(tiny_dataset, "test", 32, cache_dir=tmp_path, workers=2, progress=False)
    frames, _ = decoded(tiny_dataset, "test")
    mean = frames.reshape(6, 15, 32, 2, 32, 2, 3).astype(np.float64).mean(axis=(3, 5))
    diff = np.abs(small.images.astype(np.float64) - mean)
    assert small.images.shape == (6, 15, 32, 32, 3) and diff.max() <= 1.0 and diff.mean() < 0.3
    with pytest.raises(ValueError, match="only shrinks"):
        open_scenes(tiny_dataset, "test", 128, cache_dir=tmp_path)


def test_reused_then_rebuilt_when_a_shard_changes(dataset_copy: Path, tmp_path: Path):
    open_scenes(dataset_copy, "test", 16, cache_dir=tmp_path, workers=1, progress=False)
    manifest = tmp_path / "test-16px.json"
    built = manifest.stat().st_mtime_ns
    open_scenes(dataset_copy, "test", 16, cache_dir=tmp_path, workers=1, progress=False)
    assert manifest.stat().st_mtime_ns == built  # valid: reused, not rebuilt
    shard = list_shards(dataset_copy, "test")[0]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the source changed
    open_scenes(dataset_copy, "test", 16, cache_dir=tmp_path, workers=1, progress=False)
    assert manifest.stat().st_mtime_ns != built
    assert json.loads(manifest.read_text())["key"]["shards"][0][2] == st.st_mtime_ns + 10**9


def test_default_cache_dir_beside_the_splits(dataset_copy: Path):
    scenes = open_scenes(dataset_copy, "test", 16, workers=1, progress=False)
    assert (dataset_copy / "shepard_metzler_7_parts" / ".gqnbench-cache" / "test-16px.json").exists()
    assert len(scenes) == 6


def test_corrupt_shard_never_poisons_the_cache_and_the_build_resumes(dataset_copy: Path, tmp_path: Path):
    shards = list_shards(dataset_copy, "train")
    good = shards[2].read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    shards[2].write_bytes(bytes(bad))
    with pytest.raises(CorruptRecordError) as exc:
        open_scenes(dataset_copy, "train", 16, cache_dir=tmp_path, workers=1, progress=False)
    assert exc.value.path == shards[2] and str(shards[2]) in str(exc.value) and "record" in str(exc.value)
    assert not (tmp_path / "train-16px.json").exists() and not (tmp_path / "train-16px.images.npy").exists()
    with pytest.raises(CorruptRecordError):  # asking again raises again: nothing half-built is served
        open_scenes(dataset_copy, "train", 16, cache_dir=tmp_path, workers=1, progress=False)
    progress = json.loads((tmp_path / ".train-16px.partial.progress.json").read_text())
    assert progress["done"] == [shards[0].name, shards[1].name]  # what was decoded before the bad shard

    shards[2].write_bytes(good)  # repaired: the signature changes, the build starts over and succeeds
    scenes = open_scenes(dataset_copy, "train", 16, cache_dir=tmp_path, workers=2, progress=False)
    assert len(scenes) == 18 and not (tmp_path / ".train-16px.partial.progress.json").exists()


def test_interrupted_build_resumes_from_finished_shards(dataset_copy: Path, tmp_path: Path, monkeypatch):
    import gqnbench.data.cache as cache

    calls: list[str] = []
    real = cache._decode_shard

    def flaky(task):
        calls.append(Path(task[0]).name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(cache, "_decode_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        open_scenes(dataset_copy, "train", 16, cache_dir=tmp_path, workers=1, progress=False)
    assert calls == [f"00{i}-of-004.tfrecord" for i in (1, 2, 3)]
    calls.clear()
    monkeypatch.setattr(cache, "_decode_shard", lambda task: calls.append(Path(task[0]).name) or real(task))
    scenes = open_scenes(dataset_copy, "train", 16, cache_dir=tmp_path, workers=1, progress=False)
    assert calls == ["003-of-004.tfrecord", "004-of-004.tfrecord"]  # shards 1 and 2 were kept
    fresh = open_scenes(dataset_copy, "train", 16, cache_dir=tmp_path / "fresh", workers=1, progress=False)
    assert np.array_equal(scenes.images, fresh.images)


def test_bad_frame_error_names_file_and_record(dataset_copy: Path, tmp_path: Path):
    from gqnbench.data.tfrecord_io import encode_example, iter_records, parse_example, write_tfrecord

    shard = list_shards(dataset_copy, "test")[0]
    payloads = [p for _, p in iter_records(shard)]
    frames, cameras = parse_example(payloads[3], shard, 3)
    payloads[3] = encode_example(frames, cameras[:14])
    write_tfrecord(shard, payloads)
    with pytest.raises(RecordFormatError) as exc:
        open_scenes(dataset_copy, "test", 16, cache_dir=tmp_path, workers=1, progress=False)
    assert exc.value.record == 3 and f"{shard}, record 3" in str(exc.value) and "expected 75" in str(exc.value)


def test_missing_split_and_empty_folder(tmp_path: Path):
    with pytest.raises(MissingDataError, match="no shepard_metzler_7_parts"):
        open_scenes(tmp_path, "train", 16)
    (tmp_path / "shepard_metzler_7_parts" / "test").mkdir(parents=True)
    with pytest.raises(MissingDataError, match="missing split folder 'train'"):
        open_scenes(tmp_path, "train", 16)


def test_pickles_by_file_name(tiny_dataset: Path, tmp_path: Path):
    scenes = open_scenes(tiny_dataset, "train", 16, cache_dir=tmp_path, workers=1, progress=False)
    blob = pickle.dumps(scenes)
    assert len(blob) < 2000  # file names, not 18 * 15 * 16 * 16 * 3 bytes of pixels
    again = pickle.loads(blob)
    assert isinstance(again, SceneArrays) and np.array_equal(again.images, scenes.images)
    in_memory = SceneArrays(np.array(scenes.images), np.array(scenes.viewpoints))
    assert np.array_equal(pickle.loads(pickle.dumps(in_memory)).images, scenes.images)
