"""gqn_dataset.py: GQNDataset (torch-gqn's contract), the context samplers and the loaders."""

import numpy as np
import pytest
import torch

import gqn_dataset as gd
from dataset.errors import DatasetError
from dataset.shards import write_split
from dataset.viewpoints import raw_to_viewpoint
from scene_files import make_scenes, pil_decode


# --- GQNDataset: the original contract --------------------------------------------------------

def test_gqn_dataset_items_match_the_source_scenes(tmp_path):
    scenes = make_scenes(7)
    write_split(tmp_path, scenes, scenes_per_shard=3)
    dataset = gd.GQNDataset(tmp_path)
    assert len(dataset) == 7
    images, viewpoints = dataset[6]                                # the last scene, read first
    assert images.shape == (5, 3, 64, 64) and images.dtype == torch.float32
    assert viewpoints.shape == (5, 7) and viewpoints.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.is_contiguous()
    expected = np.stack([pil_decode(f) for f in scenes[6][0]]).transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(viewpoints.numpy(), raw_to_viewpoint(scenes[6][1]), rtol=1e-6, atol=1e-6)
    flipped = gd.GQNDataset(tmp_path, transform=lambda x: 1 - x, target_transform=lambda v: v[:, :3])
    images2, viewpoints2 = flipped[6]
    assert torch.equal(images2, 1 - images) and viewpoints2.shape == (5, 3)


def test_scene_views_decodes_the_asked_views_in_order(tmp_path):
    scenes = make_scenes(4)
    write_split(tmp_path, scenes, scenes_per_shard=2)
    frames, viewpoints = gd.SceneViews(tmp_path)[(3, (4, 0, 2))]
    assert frames.shape == (3, 3, 64, 64) and frames.dtype == torch.uint8
    for j, v in enumerate((4, 0, 2)):
        np.testing.assert_array_equal(frames[j].permute(1, 2, 0).numpy(), pil_decode(scenes[3][0][v]))
    np.testing.assert_allclose(viewpoints.numpy(), raw_to_viewpoint(scenes[3][1][[4, 0, 2]]), atol=1e-6)


# --- samplers ---------------------------------------------------------------------------------

def batches(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_context_sampler_draws_distinct_views_and_m_in_range():
    sampler = gd.ContextBatchSampler(num_scenes=50, num_views=10, batch_size=8, max_context=5, seed=3)
    seen_m = set()
    for batch in batches(sampler, 60):
        assert len(batch) == 8
        m = len(batch[0][1]) - 1
        seen_m.add(m)
        for scene, views in batch:
            assert len(views) == m + 1                                   # same M for the whole batch
            # the query (last) is not a context view
            assert len(set(views)) == m + 1
            assert all(0 <= v < 10 for v in views) and 0 <= scene < 50
    assert seen_m == {1, 2, 3, 4, 5}


def test_context_sampler_visits_every_scene_once_per_epoch():
    sampler = gd.ContextBatchSampler(num_scenes=20, num_views=4, batch_size=6, max_context=3, seed=0)
    assert sampler.batches_per_epoch == 3                                # the partial batch is dropped
    for epoch in range(2):
        scenes = [s for k in range(3 * epoch, 3 * epoch + 3) for s, _ in sampler.batch(k)]
        assert len(set(scenes)) == 18
    assert [s for s, _ in sampler.batch(0)] != [s for s, _ in sampler.batch(3)]   # reshuffled per epoch


def test_context_sampler_is_a_function_of_seed_and_step():
    make = lambda seed, start=0: gd.ContextBatchSampler(40, 8, 6, 4, seed, start_batch=start)
    assert batches(make(1), 10) == batches(make(1), 10)
    assert batches(make(1), 10) != batches(make(2), 10)
    assert batches(make(1, start=7), 5) == batches(make(1), 12)[7:]    # resuming = skipping


def test_context_sampler_ranks_partition_the_global_batch_with_one_m():
    whole = gd.ContextBatchSampler(40, 8, 6, 4, seed=5)
    ranks = [gd.ContextBatchSampler(40, 8, 6, 4, seed=5, rank=r, world_size=3) for r in range(3)]
    for k in range(10):
        parts = [sampler.batch(k) for sampler in ranks]
        assert [len(p) for p in parts] == [2, 2, 2]
        assert parts[0] + parts[1] + parts[2] == whole.batch(k)
        assert len({len(views) for part in parts for _, views in part}) == 1


def test_sampler_settings_that_cannot_work_are_refused():
    with pytest.raises(DatasetError, match="divisible by the world size"):
        gd.ContextBatchSampler(40, 8, 6, 4, seed=0, rank=0, world_size=4)
    with pytest.raises(DatasetError, match="needs 9 views"):
        gd.ContextBatchSampler(40, 8, 6, 8, seed=0)
    with pytest.raises(DatasetError, match="does not fit 4 scenes"):
        gd.ContextBatchSampler(4, 8, 6, 3, seed=0)


def test_fixed_context_sampler_is_finite_and_repeatable():
    sampler = gd.FixedContextSampler(num_scenes=10, num_views=6, batch_size=4, num_context=3, seed=9)
    first, second = list(sampler), list(sampler)
    assert first == second and len(first) == len(sampler) == 3
    assert [s for batch in first for s, _ in batch] == list(range(10))
    assert all(len(views) == 4 and len(set(views)) == 4 for batch in first for _, views in batch)
    halves = [list(gd.FixedContextSampler(10, 6, 4, 3, seed=9, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*halves)] == first


def test_context_count_for_dataset():
    names = ("Shepard-Metzler", "room", "JACO", "Labyrinth")
    assert [gd.context_count_for_dataset(n) for n in names] == [15, 5, 7, 20]
    with pytest.raises(DatasetError, match="Shepard-Metzler, Room, Jaco, Labyrinth"):
        gd.context_count_for_dataset("mazes")


# --- loaders ----------------------------------------------------------------------------------

def test_loader_batches_hold_the_sampled_views(tmp_path):
    scenes = make_scenes(9)
    write_split(tmp_path, scenes, scenes_per_shard=4)
    loader = gd.make_loader(tmp_path, batch_size=4, max_context=3, seed=0, workers=0)
    frames, viewpoints, skipped = next(iter(loader))
    assert skipped == 0
    keys = loader.batch_sampler.batch(0)
    m1 = len(keys[0][1])
    assert frames.shape == (4, m1, 3, 64, 64) and frames.dtype == torch.uint8
    assert viewpoints.shape == (4, m1, 7) and viewpoints.dtype == torch.float32
    dataset = gd.GQNDataset(tmp_path)
    for b, (scene, views) in enumerate(keys):
        images, v = dataset[scene]
        assert torch.equal(frames[b], (images[list(views)] * 255).round().to(torch.uint8))
        assert torch.allclose(viewpoints[b], v[list(views)])


def test_loader_with_workers_gives_the_same_batches(tmp_path):
    write_split(tmp_path, make_scenes(12), scenes_per_shard=5)
    take = lambda workers: batches(gd.make_loader(tmp_path, 4, 3, seed=1, workers=workers, start_batch=2), 4)
    serial, parallel = take(0), take(2)
    for (f0, v0, _), (f2, v2, _) in zip(serial, parallel):
        assert torch.equal(f0, f2) and torch.equal(v0, v2)


def test_eval_loader_covers_the_first_scenes_with_fixed_context(tmp_path):
    write_split(tmp_path, make_scenes(6))
    loader = gd.make_eval_loader(tmp_path, num_scenes=5, batch_size=2, num_context=3, seed=0)
    shapes = [tuple(frames.shape) for frames, _ in loader]
    assert shapes == [(2, 4, 3, 64, 64), (2, 4, 3, 64, 64), (1, 4, 3, 64, 64)]
    with pytest.raises(DatasetError, match="fewer than the 7"):
        gd.make_eval_loader(tmp_path, num_scenes=7, batch_size=2, num_context=3, seed=0)
