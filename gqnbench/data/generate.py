"""The embedded data set: render Shepard-Metzler scenes into DeepMind-format TFRecord shards.

Every scene is a pure function of ``(seed, split, index)``: its random generator is
``np.random.default_rng([seed, split_id, index, 0x534D37])`` (train 0, test 1), so the same seed gives
byte-identical files whatever the number of worker processes, and train scenes do not
change when ``val_fraction`` does. Workers render and JPEG-encode scenes in parallel; the
parent writes them in order, one atomically written shard at a time. The whole data set is
built in a hidden ``.partial`` folder and renamed into place at the end, so an interrupted
run never leaves a data set that looks complete.

JPEG: Pillow at quality 95 with 4:2:0 chroma subsampling (the default of TensorFlow's
``encode_jpeg``), about 1.5 KB a frame like DeepMind's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from gqnbench.config import FRAME_SIZE
from gqnbench.data.errors import DataError
from gqnbench.data.layout import DATASET, SPLITS, shard_name
from gqnbench.data.parallel import default_workers, keep_freed_memory, pool_context
from gqnbench.data.render import render_scene, sample_scene
from gqnbench.data.tfrecord_io import encode_example, write_tfrecord
from gqnbench.files import atomic_write_bytes, hold_lock

if TYPE_CHECKING:
    from gqnbench.config import DataConfig

GENERATOR_VERSION = 1  # bump when the rendering changes, so cached embedded sets are regenerated
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = 2  # 4:2:0
MARKER = "GENERATED.json"  # written last; its presence marks a complete generated set
DEFAULT_SCENES_PER_FILE = 100
_SPLIT_ID = {"train": 0, "test": 1}
# A non-zero last entropy word: numpy's SeedSequence pads short entropy with zeros, so without it
# [seed, 0, 0] would be the same stream as the sampler's [seed, step=0].
_SCENE_STREAM = 0x534D37  # "SM7"


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_ID[split], index, _SCENE_STREAM])


def render_scene_arrays(seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(frames uint8 [15, 64, 64, 3], cameras float32 [15, 5])`` of one scene before JPEG."""
    scene = sample_scene(scene_rng(seed, split, index))
    return render_scene(scene), scene.cameras


def encode_jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    return buf.getvalue()


def scene_payload(seed: int, split: str, index: int) -> bytes:
    """The serialised ``tf.train.Example`` of one scene."""
    frames, cameras = render_scene_arrays(seed, split, index)
    return encode_example([encode_jpeg(f) for f in frames], cameras)


def _payload_task(task: tuple[int, str, int]) -> bytes:
    return scene_payload(*task)


def split_sizes(scenes: int, val_fraction: float) -> dict[str, int]:
    """Scenes per split: ``round(scenes * val_fraction)`` test scenes (at least 1), the rest train (at least 1)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    test = max(1, int(round(scenes * val_fraction)))
    sizes = {"train": scenes - test, "test": test}
    if min(sizes.values()) < 1:
        raise ValueError(f"{scenes} scenes with val_fraction {val_fraction} leave an empty split: {sizes}")
    return sizes


def generate_dataset(
    out_root: str | Path,
    scenes: int,
    seed: int = 0,
    val_fraction: float = 0.1,
    scenes_per_file: int = DEFAULT_SCENES_PER_FILE,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``scenes`` scenes into ``<out_root>/shepard_metzler_7_parts/{train,test}/NNN-of-MMM.tfrecord``.

    Returns ``out_root`` (the root :func:`open_scenes` takes). ``workers`` processes render in
    parallel (default: every core this process may use); the files do not depend on it.
    """
    if scenes < 2:
        raise ValueError(f"need at least 2 scenes (one per split), got {scenes}")
    if scenes_per_file < 1:
        raise ValueError(f"scenes_per_file must be >= 1, got {scenes_per_file}")
    sizes = split_sizes(scenes, val_fraction)
    out_root = Path(out_root).expanduser()
    final = out_root / DATASET
    if final.exists() and not overwrite:
        raise DataError(f"{final}: already exists; choose another --out or pass overwrite=True / --overwrite", final)
    partial = out_root / f".{DATASET}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run: start again (it is deterministic)
    tasks: list[tuple[int, str, int]] = []
    files: list[tuple[Path, int]] = []  # (path, number of scenes), in task order
    for split in SPLITS:
        (partial / split).mkdir(parents=True)
        n = sizes[split]
        count = -(-n // scenes_per_file)
        for f in range(count):
            files.append((partial / split / shard_name(f, count), min(scenes_per_file, n - f * scenes_per_file)))
        tasks.extend((seed, split, i) for i in range(n))

    workers = max(1, min(workers or default_workers(), scenes))
    from tqdm.auto import tqdm  # lazy: keeps `import gqnbench.data` light

    bar = tqdm(total=scenes, unit="scene", desc="rendering", disable=not progress)
    try:
        # A pool even for one worker: its processes get malloc tuned for the renderer (see
        # keep_freed_memory) without changing the caller's process.
        with pool_context().Pool(workers, initializer=keep_freed_memory) as pool:
            _write_shards(pool.imap(_payload_task, tasks, chunksize=4), files, bar)
    finally:
        bar.close()
    meta = {
        "generator": "gqnbench",
        "version": GENERATOR_VERSION,
        "scenes": scenes,
        "seed": seed,
        "val_fraction": val_fraction,
        "scenes_per_file": scenes_per_file,
        "splits": sizes,
        "image_size": FRAME_SIZE,
        "jpeg_quality": JPEG_QUALITY,
    }
    atomic_write_bytes(partial / MARKER, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return out_root


def _write_shards(payloads, files: list[tuple[Path, int]], bar) -> None:  # noqa: ANN001
    it = iter(payloads)
    for path, n in files:
        batch = []
        for _ in range(n):
            batch.append(next(it))
            bar.update(1)
        write_tfrecord(path, batch)


def embedded_name(cfg: DataConfig) -> str:
    """The folder name of the embedded set of ``cfg``: every setting that changes the files is in it."""
    return (
        f"sm7-{cfg.generate_scenes}scenes-seed{cfg.generate_seed}-val{cfg.val_fraction:g}"
        f"-{cfg.scenes_per_file}perfile-v{GENERATOR_VERSION}"
    )


def ensure_dataset(cfg: DataConfig, cache_root: str | Path, progress: bool = True, workers: int | None = None) -> Path:
    """A data set root for ``cfg``: ``cfg.root`` when given (checked to exist), otherwise the embedded
    set, generated once under ``cache_root/<embedded_name(cfg)>`` and reused afterwards."""
    if cfg.root:
        from gqnbench.data.layout import dataset_dir

        dataset_dir(cfg.root, cfg.dataset)  # raises MissingDataError with the expected layout
        return Path(cfg.root).expanduser()
    root = Path(cache_root).expanduser() / embedded_name(cfg)
    marker = root / DATASET / MARKER
    if marker.exists():
        return root
    with hold_lock(root.parent / f".{root.name}.lock", f"the data set {root}", wait=True):
        if not marker.exists():  # another process may have built it while we waited
            generate_dataset(
                root,
                cfg.generate_scenes,
                seed=cfg.generate_seed,
                val_fraction=cfg.val_fraction,
                scenes_per_file=cfg.scenes_per_file,
                workers=workers,
                overwrite=True,
                progress=progress,
            )
    return root
