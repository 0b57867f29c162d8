"""Training from a memory-mapped dataset (``dataset_in_memory=False``) draws the in-memory path's batches."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from diffgym.agents.baselines import IQL, TD3BC
from diffgym.agents.diffusion_policy import DiffusionPolicy
from diffgym.batches import MappedBatches, OfflineBatches
from diffgym.normalizers import GaussianNormalizer, MinMaxNormalizer, fit_in_chunks
from diffgym.rl import iql_reward_scale, iql_reward_scale_chunked


def _pair(cls, dataset, **kwargs):
    env = gym.make("Pendulum-v1")
    return [
        cls("MlpPolicy", env, dataset=dataset, seed=0, dataset_in_memory=m, **kwargs) for m in (True, False)
    ]


def test_the_same_draws_give_the_same_batches(minari_store, pendulum_dataset):
    in_memory, mapped = _pair(TD3BC, pendulum_dataset, batch_size=64)
    assert isinstance(in_memory._offline, OfflineBatches) and isinstance(mapped._offline, MappedBatches)
    assert mapped._offline.size == in_memory._offline.size
    first, second = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):
        a, b = in_memory._offline.sample(64, first), mapped._offline.sample(64, second)
        for name, x, y in zip(a._fields[:5], a[:5], b[:5], strict=True):  # SB3's optional discounts: None
            assert x.shape == y.shape and torch.equal(x, y), name


def test_training_is_the_same(minari_store, pendulum_dataset):
    in_memory, mapped = _pair(TD3BC, pendulum_dataset, batch_size=32)
    in_memory.learn(30)
    mapped.learn(30)
    for (name, x), y in zip(
        in_memory.policy.state_dict().items(), mapped.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name


def test_iql_scale_and_normaliser_from_chunks(minari_store, pendulum_dataset):
    in_memory, mapped = _pair(IQL, pendulum_dataset, reward_scale="iql")
    assert mapped.reward_scale == pytest.approx(in_memory.reward_scale, rel=1e-9)
    full, small_chunks = in_memory._offline, list(mapped._offline.chunks(chunk_rows=37))
    assert len(small_chunks) > 10
    expected = iql_reward_scale(full.observations, full.next_observations, full.rewards, full.dones)
    assert iql_reward_scale_chunked(small_chunks) == pytest.approx(expected, rel=1e-9)
    rows = [obs[: len(rewards)] for obs, _, rewards, _ in small_chunks]
    for cls in (GaussianNormalizer, MinMaxNormalizer):
        chunked, whole = fit_in_chunks(cls, rows).state_dict(), cls.fit(full.observations).state_dict()
        for key in whole:
            torch.testing.assert_close(chunked[key], whole[key], rtol=1e-6, atol=1e-7)


def test_iql_scale_sees_episodes_joined_across_chunks():
    """An episode split over chunks counts once: its return is summed across the boundary."""
    observations = torch.arange(7, dtype=torch.float32)[:, None]
    rewards, dones = torch.tensor([1.0, 1, 1, 1, 5, 0]), torch.tensor([0.0, 0, 0, 1, 0, 0])
    expected = iql_reward_scale(observations[:6], observations[1:], rewards, dones)
    chunks = [
        (observations[a : min(b + 1, 6)], observations[a + 1 : b + 1], rewards[a:b], dones[a:b])
        for a, b in ((0, 2), (2, 5), (5, 6))
    ]
    assert iql_reward_scale_chunked(chunks) == pytest.approx(expected)


def test_segment_agents_and_online_learning_refuse(minari_store, pendulum_dataset):
    with pytest.raises(ValueError, match=r"dataset_in_memory=False.*DiffusionQL, IDQL, IQL"):
        DiffusionPolicy(
            "MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, dataset_in_memory=False
        )
    _, mapped = _pair(TD3BC, pendulum_dataset)
    with pytest.raises(ValueError, match="dataset_in_memory=True for learn"):
        mapped.learn(10, online=True)


def test_loading_takes_the_option_again(minari_store, pendulum_dataset, tmp_path):
    _, mapped = _pair(TD3BC, pendulum_dataset, batch_size=32)
    mapped.learn(5).save(tmp_path / "model")
    loaded = TD3BC.load(
        tmp_path / "model", env=gym.make("Pendulum-v1"), dataset=pendulum_dataset, dataset_in_memory=False
    )
    assert isinstance(loaded._offline, MappedBatches)
    assert np.isfinite(loaded.learn(5).policy.state_dict()["obs_normalizer.mean"].numpy()).all()


def test_chunks_are_the_in_memory_rows_a_bounded_chunk_at_a_time(minari_store, pendulum_dataset):
    """``chunks()`` gives the in-memory transitions in order; a pass allocates a few chunks' worth,
    never an array per row of the dataset (tracemalloc sees numpy's allocations)."""
    import itertools
    import tracemalloc

    in_memory, mapped = _pair(TD3BC, pendulum_dataset)
    full, batches = next(in_memory._offline.chunks()), mapped._offline
    chunks = list(batches.chunks(chunk_rows=37))
    for chunk, following in itertools.pairwise(chunks):
        assert len(chunk[0]) == len(chunk[2]) + 1 and torch.equal(chunk[0][-1], following[0][0])
    assert len(chunks[-1][0]) == len(chunks[-1][2])
    for index, name in enumerate(("observations", "next_observations", "rewards", "dones")):
        joined = torch.cat([chunk[index][: len(chunk[2])] for chunk in chunks])
        assert torch.equal(joined, full[index]), name
    tracemalloc.start()
    for _ in batches.chunks(chunk_rows=16):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    dataset_bytes = sum(tensor.nbytes for tensor in full)
    assert peak < dataset_bytes / 2, (peak, dataset_bytes)  # an (N,) int64 array is a quarter of it
