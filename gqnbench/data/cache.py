"""The decoded cache: every frame of a split decoded once into memory-mappable ``.npy`` files.

Decoding 15 JPEGs per scene at every training step would cost more than a ``cpu``-preset
step, so each split is decoded once (resized to the preset's image size with Pillow's BOX
filter, i.e. area averaging, when smaller than 64) into::

    <cache_dir>/<split>-<S>px.images.npy      uint8   [scenes, 15, S, S, 3]
    <cache_dir>/<split>-<S>px.cameras.npy     float32 [scenes, 15, 5]   (as in the records)
    <cache_dir>/<split>-<S>px.viewpoints.npy  float32 [scenes, 15, 7]   (see viewpoint.py)
    <cache_dir>/<split>-<S>px.json            manifest, written last

The manifest records each source shard's name, size and modification time (ns); any
change to the split's files makes the cache stale and it is rebuilt. Building writes into
hidden ``.partial`` files, records finished shards in a progress file (so an interrupted
build resumes where it stopped), and only renames the arrays into place and writes the
manifest once every shard decoded cleanly: a truncated or corrupt shard raises its error
(naming file and record) and never leaves a cache that looks valid. An ``flock`` makes
concurrent processes (ranks of a distributed run) build it once.

Default location: ``<dataset>/.gqnbench-cache/`` beside ``train/`` and ``test/`` when that
folder is writable, otherwise ``$XDG_CACHE_HOME/gqnbench/decoded/<hash of the path>/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gqnbench.config import FRAME_SIZE, NUM_VIEWS
from gqnbench.data.errors import RecordFormatError
from gqnbench.data.layout import CAMERA_DIM, DATASET, dataset_dir, list_shards
from gqnbench.data.parallel import default_workers, pool_context
from gqnbench.data.tfrecord_io import RESIZE_FILTER, count_records, decode_scene, iter_records
from gqnbench.data.viewpoint import VIEWPOINT_DIM, VIEWPOINT_ORDER, cameras_to_viewpoints
from gqnbench.files import atomic_write_bytes, hold_lock

CACHE_VERSION = 1
RESIZE_FILTER_NAME = "BOX"
_ARRAYS = ("images", "cameras", "viewpoints")


class SceneArrays:
    """All scenes of one split: ``images`` uint8 [S, 15, H, W, 3], ``viewpoints`` float32 [S, 15, 7],
    ``cameras`` float32 [S, 15, 5]. Arrays from the cache are read-only memory maps; pickling
    (e.g. to DataLoader workers started by spawn) sends the file names, not the pixels."""

    def __init__(
        self,
        images: np.ndarray,
        viewpoints: np.ndarray,
        cameras: np.ndarray | None = None,
        files: dict[str, str] | None = None,
    ) -> None:
        if images.ndim != 5 or images.shape[-1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be [S, V, H, H, 3], got {images.shape}")
        if viewpoints.shape != (*images.shape[:2], VIEWPOINT_DIM):
            raise ValueError(f"viewpoints must be {(*images.shape[:2], VIEWPOINT_DIM)}, got {viewpoints.shape}")
        self.images = images
        self.viewpoints = viewpoints
        self.cameras = cameras
        self._files = files

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    def __repr__(self) -> str:
        src = f", cache={self._files['images']}" if self._files else ""
        return f"SceneArrays({len(self)} scenes, {self.num_views} views, {self.image_size}px{src})"

    def __getstate__(self) -> dict[str, Any]:
        if self._files:
            return {"files": self._files}
        return {"images": self.images, "viewpoints": self.viewpoints, "cameras": self.cameras, "files": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        files = state.get("files")
        if files:
            arrays = {k: np.load(files[k], mmap_mode="r") for k in _ARRAYS}
            self.__init__(arrays["images"], arrays["viewpoints"], arrays["cameras"], files)
        else:
            self.__init__(state["images"], state["viewpoints"], state["cameras"], None)


def default_cache_dir(root: str | Path, dataset: str = DATASET) -> Path:
    """``<dataset>/.gqnbench-cache`` if writable, else a per-path folder under the user cache."""
    folder = dataset_dir(root, dataset)
    if os.access(folder, os.W_OK):
        return folder / ".gqnbench-cache"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gqnbench" / "decoded"
    return base / hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]


def _stem(split: str, image_size: int) -> str:
    return f"{split}-{image_size}px"


def _paths(cache_dir: Path, stem: str, partial: bool) -> dict[str, Path]:
    prefix = f".{stem}.partial" if partial else stem
    out = {k: cache_dir / f"{prefix}.{k}.npy" for k in _ARRAYS}
    out["manifest"] = cache_dir / (f"{prefix}.progress.json" if partial else f"{stem}.json")
    return out


def _signature(shards: list[Path]) -> list[list[Any]]:
    out = []
    for p in shards:
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def _key(split: str, image_size: int, shards: list[Path]) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "split": split,
        "image_size": image_size,
        "frame_size": FRAME_SIZE,
        "resize_filter": RESIZE_FILTER_NAME,
        "viewpoint_order": list(VIEWPOINT_ORDER),
        "shards": _signature(shards),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _open_valid(paths: dict[str, Path], key: dict[str, Any]) -> SceneArrays | None:
    manifest = _read_json(paths["manifest"])
    if manifest is None or manifest.get("key") != key:
        return None
    try:
        arrays = {k: np.load(paths[k], mmap_mode="r") for k in _ARRAYS}
    except (OSError, ValueError):
        return None
    n, size = manifest["scenes"], key["image_size"]
    expected = {
        "images": (n, NUM_VIEWS, size, size, 3),
        "cameras": (n, NUM_VIEWS, CAMERA_DIM),
        "viewpoints": (n, NUM_VIEWS, VIEWPOINT_DIM),
    }
    if any(arrays[k].shape != expected[k] for k in _ARRAYS):
        return None
    files = {k: str(paths[k]) for k in _ARRAYS}
    return SceneArrays(arrays["images"], arrays["viewpoints"], arrays["cameras"], files)


def open_scenes(
    root: str | Path,
    split: str,
    image_size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    dataset: str = DATASET,
) -> SceneArrays:
    """The decoded scenes of ``split``, from the cache (built or rebuilt first when missing or stale).

    ``workers`` processes decode shards in parallel when building (default: one per core,
    at most one per shard).
    """
    if not 1 <= image_size <= FRAME_SIZE:
        raise ValueError(
            f"image_size must be in 1..{FRAME_SIZE} (the cache only shrinks the 64x64 frames), got {image_size}"
        )
    shards = list_shards(root, split, dataset)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(root, dataset)
    stem = _stem(split, image_size)
    final = _paths(cache_dir, stem, partial=False)
    key = _key(split, image_size, shards)
    scenes = _open_valid(final, key)
    if scenes is not None:
        return scenes
    with hold_lock(cache_dir / f".{stem}.lock", f"the decoded cache {stem}", wait=True):
        scenes = _open_valid(final, key)  # another process may have built it while we waited
        if scenes is None:
            _build(shards, key, cache_dir, stem, workers, progress)
            scenes = _open_valid(final, key)
    if scenes is None:  # pragma: no cover - _build either writes a valid cache or raises
        raise RuntimeError(f"{final['manifest']}: cache build finished but the cache does not validate")
    return scenes


def _decode_shard(task: tuple[str, int, int, str, str, int]) -> str:
    """Decode one shard into rows [start, start+count) of the partial arrays (runs in a worker)."""
    shard, start, count, images_path, cameras_path, image_size = task
    images = np.load(images_path, mmap_mode="r+")
    cameras = np.load(cameras_path, mmap_mode="r+")
    n = 0
    for index, payload in iter_records(shard):
        if n >= count:
            raise RecordFormatError(f"{shard}: changed while the cache was built (more than {count} records)", shard)
        rec = decode_scene(payload, shard, index, image_size, RESIZE_FILTER)
        images[start + n] = rec.frames
        cameras[start + n] = rec.cameras
        n += 1
    if n != count:
        raise RecordFormatError(f"{shard}: changed while the cache was built ({n} records, counted {count})", shard)
    images.flush()
    cameras.flush()
    del images, cameras
    return Path(shard).name


def _build(
    shards: list[Path], key: dict[str, Any], cache_dir: Path, stem: str, workers: int | None, progress: bool
) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = _paths(cache_dir, stem, partial=True)
    final = _paths(cache_dir, stem, partial=False)
    counts = [count_records(p) for p in shards]  # framing only: fast, and finds truncation early
    total = sum(counts)
    if total == 0:
        raise RecordFormatError(f"{shards[0].parent}: split holds no records ({len(shards)} empty files)", shards[0])
    size = key["image_size"]
    progress_state = _read_json(part["manifest"])
    shapes = {"images": (total, NUM_VIEWS, size, size, 3), "cameras": (total, NUM_VIEWS, CAMERA_DIM)}
    resume = progress_state is not None and progress_state.get("key") == key and _shapes_ok(part, shapes)
    done = set(progress_state.get("done", [])) if resume else set()
    if not resume:
        np.lib.format.open_memmap(part["images"], "w+", np.uint8, shapes["images"]).flush()
        np.lib.format.open_memmap(part["cameras"], "w+", np.float32, shapes["cameras"]).flush()
        _write_progress(part["manifest"], key, done)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    tasks = [
        (str(p), start, n, str(part["images"]), str(part["cameras"]), size)
        for p, start, n in zip(shards, starts, counts)
        if p.name not in done
    ]
    from tqdm.auto import tqdm  # lazy: keeps `import gqnbench.data` light

    workers = max(1, min(workers or default_workers(), len(tasks) or 1))
    with tqdm(
        total=len(shards), initial=len(shards) - len(tasks), unit="shard", desc=f"decoding {stem}", disable=not progress
    ) as bar:
        with contextlib.ExitStack() as stack:
            if workers == 1:
                results = map(_decode_shard, tasks)
            else:
                pool = stack.enter_context(pool_context().Pool(workers))
                results = pool.imap_unordered(_decode_shard, tasks)
            for name in results:  # a bad shard raises here, before it is marked done
                done.add(name)
                _write_progress(part["manifest"], key, done)
                bar.update(1)

    cameras = np.load(part["cameras"], mmap_mode="r")
    viewpoints = np.lib.format.open_memmap(part["viewpoints"], "w+", np.float32, (total, NUM_VIEWS, VIEWPOINT_DIM))
    for i in range(0, total, 65536):
        viewpoints[i : i + 65536] = cameras_to_viewpoints(cameras[i : i + 65536])
    viewpoints.flush()
    del viewpoints, cameras
    for k in _ARRAYS:
        with open(part[k], "rb+") as fh:
            os.fsync(fh.fileno())
    final["manifest"].unlink(missing_ok=True)  # a crash below must leave no manifest that validates
    for k in _ARRAYS:
        os.replace(part[k], final[k])
    manifest = {
        "key": key,
        "scenes": total,
        "shard_scenes": counts,
        "arrays": {k: final[k].name for k in _ARRAYS},
    }
    atomic_write_bytes(final["manifest"], (json.dumps(manifest, indent=1) + "\n").encode())
    part["manifest"].unlink(missing_ok=True)


def _shapes_ok(paths: dict[str, Path], shapes: dict[str, tuple[int, ...]]) -> bool:
    """Partial arrays from an interrupted build exist, open, and have the expected shapes."""
    try:
        return all(np.load(paths[k], mmap_mode="r").shape == shape for k, shape in shapes.items())
    except (OSError, ValueError):
        return False


def _write_progress(path: Path, key: dict[str, Any], done: set[str]) -> None:
    atomic_write_bytes(path, json.dumps({"key": key, "done": sorted(done)}).encode())


def build_cache(
    root: str | Path,
    image_size: int,
    splits: tuple[str, ...] = ("train", "test"),
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    dataset: str = DATASET,
) -> dict[str, SceneArrays]:
    """Build (or validate) the cache of every split; returns the opened arrays by split."""
    return {s: open_scenes(root, s, image_size, cache_dir, workers, progress, dataset) for s in splits}
