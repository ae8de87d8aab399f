"""pytest-benchmark of the data pipeline: the scene renderer, the generator, and the episode loader.

    pytest benchmarks/test_bench_data.py                    # fast ones (seconds)
    pytest benchmarks/test_bench_data.py -m slow            # the cpu preset's 1200-scene set, 1 and 2 workers
    pytest benchmarks/test_bench_data.py --benchmark-json=bench-data.json

Each benchmark's ``extra_info`` carries ``preset, mode, batch, workers``, the throughput in
its unit (``scenes_per_s`` or ``episodes_per_s``, where an episode is one batch of scenes) and
the ratio to an fp32 matmul on the CPU timed before each round (``benchmarks/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gqnbench.data.cache import open_scenes
from gqnbench.data.generate import generate_dataset, render_scene_arrays, scene_payload
from gqnbench.data.sampling import EpisodeSampler, make_train_loader
from gqnbench.presets import get_preset

CPU = get_preset("cpu")


@pytest.fixture(scope="module")
def cpu_scenes(tmp_path_factory: pytest.TempPathFactory):
    """A 200-scene set decoded at the cpu preset's image size (32x32)."""
    root = generate_dataset(tmp_path_factory.mktemp("bench") / "root", 200, seed=0, progress=False)
    return open_scenes(root, "train", CPU.data.image_size, progress=False)


def _info(benchmark, mode: str, **extra) -> None:  # noqa: ANN001
    benchmark.group = f"data-{mode}-cpu"
    benchmark.extra_info.update({"preset": "cpu", "mode": mode, "device": "cpu", **extra})


def test_render_one_scene(measured, benchmark, reference):
    """Ray casting only: 15 views at 64x64 with 2x2 supersampling, one core."""
    counter = iter(range(10**9))
    ref = reference()
    _info(benchmark, "render", batch=1, workers=1)
    benchmark.pedantic(lambda: render_scene_arrays(0, "train", next(counter)), setup=ref.setup, rounds=30,
                       warmup_rounds=3)  # fmt: skip
    ref.record(benchmark)
    benchmark.extra_info["scenes_per_s"] = 1.0 / measured()[0]


def test_encode_one_scene(measured, benchmark, reference):
    """Ray casting + 15 JPEG encodes + Example serialisation, one core (one generator work item)."""
    counter = iter(range(10**9))
    ref = reference()
    _info(benchmark, "generate-scene", batch=1, workers=1)
    benchmark.pedantic(lambda: scene_payload(0, "train", next(counter)), setup=ref.setup, rounds=30, warmup_rounds=3)
    ref.record(benchmark)
    benchmark.extra_info["scenes_per_s"] = 1.0 / measured()[0]


def test_sampler_batch_cpu_preset(measured, benchmark, reference, cpu_scenes):
    """One training episode (batch 16 at 32x32, M ~ U{1..14}) gathered from the memory-mapped cache."""
    sampler = EpisodeSampler(cpu_scenes, CPU.train.batch_size, seed=0)
    counter = iter(range(10**9))
    ref = reference()
    _info(benchmark, "load", batch=CPU.train.batch_size, workers=0)
    benchmark.pedantic(lambda: sampler.batch(next(counter)), setup=ref.setup, rounds=200, warmup_rounds=10)
    ref.record(benchmark)
    benchmark.extra_info["episodes_per_s"] = 1.0 / measured()[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_cpu_preset(measured, benchmark, reference, cpu_scenes, workers):
    """200 episodes through the DataLoader (map-style, indexed by step), with 0 or 2 worker processes."""
    sampler = EpisodeSampler(cpu_scenes, CPU.train.batch_size, seed=0)
    steps = 200

    def run():
        for _ in make_train_loader(sampler, num_workers=workers, num_steps=steps):
            pass

    ref = reference()
    _info(benchmark, "loader", batch=CPU.train.batch_size, workers=workers)
    benchmark.pedantic(run, setup=ref.setup, rounds=3, warmup_rounds=1)
    ref.record(benchmark)
    benchmark.extra_info["episodes_per_s"] = steps / measured()[0]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_generate_cpu_preset_set(measured, benchmark, reference, tmp_path: Path, workers):
    """The cpu preset's embedded set (1200 scenes, 9:1) written end to end."""
    scenes = CPU.data.generate_scenes
    runs = iter(range(10**6))

    def run():
        generate_dataset(tmp_path / f"r{next(runs)}", scenes, seed=0, workers=workers, progress=False)

    ref = reference()
    _info(benchmark, "generate", batch=scenes, workers=workers)
    benchmark.pedantic(run, setup=ref.setup, rounds=1, iterations=1)
    ref.record(benchmark)
    benchmark.extra_info["scenes_per_s"] = scenes / measured()[0]
