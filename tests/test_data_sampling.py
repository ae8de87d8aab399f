"""Episode sampling (SPEC section 4): queries never among the context, M ~ U{1..14}, batches a pure
function of (seed, step), rank slices, DataLoader workers, and the fixed validation set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gqnbench.data.cache import SceneArrays, open_scenes
from gqnbench.data.episode import Episode
from gqnbench.data.sampling import EpisodeSampler, make_train_loader, validation_episode, validation_episodes

pytest_plugins = ["conftest_data"]  # fixtures tiny_dataset, dataset_copy


@pytest.fixture(scope="module")
def train(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> SceneArrays:
    return open_scenes(tiny_dataset, "train", 16, cache_dir=tmp_path_factory.mktemp("cache"), workers=1, progress=False)


@pytest.fixture(scope="module")
def test_split(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> SceneArrays:
    return open_scenes(tiny_dataset, "test", 16, cache_dir=tmp_path_factory.mktemp("cache"), workers=1, progress=False)


def same(a: Episode, b: Episode) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a._tensors(), b._tensors()))


def view_index(scenes: SceneArrays, viewpoints: torch.Tensor, scene: int) -> list[int]:
    """Which of scene's 15 views each viewpoint row is (viewpoints are distinct within a scene)."""
    table = torch.from_numpy(np.array(scenes.viewpoints[scene]))
    return [int((table == v).all(dim=1).nonzero()) for v in viewpoints]


def test_episode_shapes_and_values(train: SceneArrays):
    ep = EpisodeSampler(train, batch_size=4, seed=0).batch(0)
    assert ep.query_images.shape == (4, 1, 3, 16, 16) and ep.query_viewpoints.shape == (4, 1, 7)
    assert ep.context_images.shape == (ep.num_context, 3, 16, 16) and ep.context_viewpoints.shape == (ep.num_context, 7)
    assert (
        ep.context_images.dtype == torch.float32 and 0.0 <= ep.context_images.min() and ep.context_images.max() <= 1.0
    )
    assert ep.context_scene.dtype == torch.int64 and torch.equal(ep.context_scene, ep.context_scene.sort().values)
    # images are the cached frames / 255 in [3, H, W] layout, with the viewpoints of the same views
    scene, m, order = EpisodeSampler(train, batch_size=4, seed=0).draw(0)
    q = order[0, m[0]]
    assert torch.equal(
        ep.query_images[0, 0], torch.from_numpy(np.array(train.images[scene[0], q])).permute(2, 0, 1) / 255.0
    )
    assert torch.equal(ep.query_viewpoints[0, 0], torch.from_numpy(np.array(train.viewpoints[scene[0], q])))


def test_query_never_in_context_and_views_distinct(train: SceneArrays):
    sampler = EpisodeSampler(train, batch_size=8, seed=1)
    for step in range(20):
        scene, _, _ = sampler.draw(step)
        ep = sampler.batch(step)
        assert len(set(scene.tolist())) == 8  # distinct scenes in a batch (the split has 18)
        for b in range(8):
            ctx = view_index(train, ep.context_viewpoints[ep.context_scene == b], scene[b])
            (query,) = view_index(train, ep.query_viewpoints[b], scene[b])
            assert len(set(ctx)) == len(ctx) and query not in ctx


def test_context_sizes_cover_1_to_14_uniformly(train: SceneArrays):
    sampler = EpisodeSampler(train, batch_size=16, seed=2)
    sizes = np.concatenate([np.bincount(sampler.batch(s).context_scene.numpy(), minlength=16) for s in range(100)])
    counts = np.bincount(sizes, minlength=15)
    assert counts[0] == 0 and set(np.nonzero(counts)[0]) == set(range(1, 15))
    assert counts[1:].min() > 1600 / 14 * 0.6 and counts[1:].max() < 1600 / 14 * 1.4  # 114 expected each
    narrow = EpisodeSampler(train, batch_size=16, seed=2, min_context=3, max_context=5)
    assert set(np.bincount(narrow.batch(0).context_scene.numpy()).tolist()) <= {3, 4, 5}
    with pytest.raises(ValueError, match="max_context"):
        EpisodeSampler(train, batch_size=4, seed=0, max_context=15)


def test_batch_is_a_pure_function_of_seed_and_step(train: SceneArrays):
    a, b = EpisodeSampler(train, 6, seed=3), EpisodeSampler(train, 6, seed=3)
    assert same(a.batch(7), b.batch(7)) and same(a.batch(7), a.batch(7))
    _ = [a.batch(s) for s in range(5)]  # no hidden state: earlier calls change nothing
    assert same(a.batch(7), b.batch(7))
    assert not same(a.batch(7), a.batch(8)) and not same(a.batch(7), EpisodeSampler(train, 6, seed=4).batch(7))


def test_rank_slices_make_the_global_batch(train: SceneArrays):
    sampler = EpisodeSampler(train, batch_size=8, seed=5)
    for step in (0, 11):
        whole = sampler.batch(step)
        parts = [sampler.batch(step, rank=r, world_size=2) for r in range(2)]
        assert [p.num_scenes for p in parts] == [4, 4]
        assert torch.equal(torch.cat([p.query_images for p in parts]), whole.query_images)
        assert torch.equal(torch.cat([p.context_images for p in parts]), whole.context_images)
        assert torch.equal(torch.cat([parts[0].context_scene, parts[1].context_scene + 4]), whole.context_scene)
    with pytest.raises(ValueError, match="divisible"):
        sampler.batch(0, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank"):
        sampler.batch(0, rank=2, world_size=2)


def test_loader_with_two_workers_neither_duplicates_nor_drops(train: SceneArrays):
    sampler = EpisodeSampler(train, batch_size=4, seed=6)
    loader = make_train_loader(sampler, start_step=10, num_workers=2, num_steps=6)
    got = list(loader)
    assert len(got) == 6
    for i, ep in enumerate(got):
        assert same(ep, sampler.batch(10 + i))  # item i is step 10 + i, from whichever worker
    keys = [tuple(ep.query_viewpoints.flatten().tolist()) for ep in got]
    assert len(set(keys)) == 6  # no batch twice
    # endless by default; resuming at step 12 continues exactly
    endless = iter(make_train_loader(sampler, start_step=12, rank=1, world_size=2))
    assert same(next(endless), sampler.batch(12, rank=1, world_size=2))


def test_validation_set_is_fixed(test_split: SceneArrays):
    ep = validation_episode(test_split, 5, num_context=3, seed=1234)
    again = validation_episode(test_split, 5)
    assert same(ep, again)
    assert ep.num_scenes == 5 and ep.num_queries == 1 and ep.num_context == 15
    assert torch.equal(torch.bincount(ep.context_scene), torch.full((5,), 3))
    assert not same(ep, validation_episode(test_split, 5, seed=1))
    chunks = validation_episodes(test_split, 5, batch_size=2)
    assert [c.num_scenes for c in chunks] == [2, 2, 1]
    assert torch.equal(torch.cat([c.query_images for c in chunks]), ep.query_images)
    assert torch.equal(torch.cat([c.context_images for c in chunks]), ep.context_images)
    with pytest.raises(ValueError, match="num_scenes"):
        validation_episode(test_split, 7)


def test_models_train_on_real_episodes(train: SceneArrays):
    """The contract with the models: a real episode goes through both tiny models to a finite loss."""
    from gqnbench.models import build_model
    from gqnbench.presets import get_preset

    preset = get_preset("tiny")
    ep = EpisodeSampler(train, batch_size=preset.train.batch_size, seed=0).batch(0)
    for name in ("gqn", "metagqn"):
        model = build_model(name, preset.model_config(name))
        loss = model(ep, 0)
        loss.backward()
        assert torch.isfinite(loss)
