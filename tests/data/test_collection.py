"""Collecting datasets from a policy: random, callables, SB3 models; seeds, budgets and infos."""

import gymnasium as gym
import numpy as np
import pytest

from diffgym.data import collect_dataset, load_transitions, read_episodes


def short_pendulum():
    return gym.make("Pendulum-v1", max_episode_steps=30)


def test_collect_random_is_seeded_and_cut_at_n_steps():
    first = collect_dataset(short_pendulum(), "random", "test/pendulum/a-v0", n_steps=70, seed=3)
    second = collect_dataset(short_pendulum(), None, "test/pendulum/b-v0", n_steps=70, seed=3)
    assert first.total_episodes == 3 and first.total_steps == 70
    assert first.env_spec.id == "Pendulum-v1"
    a, b = load_transitions(first), load_transitions(second)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(np.flatnonzero(a.timeouts), [29, 59, 69])  # the cut episode is truncated
    seeds = [m["seed"] for m in first.storage.get_episode_metadata(range(3))]
    assert seeds == [3, 4, 5]


def test_collect_callable_by_episodes_with_infos():
    def push_right(obs):
        return np.array([1.0], dtype=np.float32)

    env = gym.make("MountainCarContinuous-v0", max_episode_steps=10)
    dataset = collect_dataset(env, push_right, "test/car/right-v0", n_episodes=2, info_keys=())
    tr = load_transitions(dataset)
    assert dataset.total_episodes == 2 and len(tr.rewards) == 20
    np.testing.assert_array_equal(tr.actions, np.ones((20, 1)))
    assert dataset.storage.metadata["algorithm_name"] == "push_right"


def test_collect_info_keys():
    env = gym.make("Hopper-v5", max_episode_steps=5)
    dataset = collect_dataset(env, "random", "test/hopper/random-v0", n_episodes=1, info_keys=("x_position",))
    episodes = read_episodes(dataset, info_keys=("x_position",))
    assert episodes.infos["x_position"].shape == (5,)
    with pytest.raises(KeyError, match="lacks"):
        collect_dataset(env, "random", "test/hopper/random-v1", n_episodes=1, info_keys=("nope",))


def test_collect_sb3_model():
    from stable_baselines3 import PPO

    env = short_pendulum()
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0, device="cpu")
    dataset = collect_dataset(env, model, "test/pendulum/ppo-v0", n_steps=40, deterministic=True)
    tr = load_transitions(dataset)
    expected = model.predict(tr.observations[:5], deterministic=True)[0]
    np.testing.assert_allclose(tr.actions[:5], expected, rtol=1e-6)
    assert dataset.storage.metadata["algorithm_name"] == "PPO"
