"""Tiny D4RL-layout files made by the tests (random actions in a Gymnasium env)."""

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest


def write_d4rl_file(path, env_id, n_steps, seed=0):
    """``n_steps`` random transitions of ``env_id`` in D4RL's flat layout, its env id and mean
    episode return in the ``metadata`` attribute (as the shared files)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    rows = {
        key: []
        for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    }
    observation, _ = env.reset(seed=seed)
    returns, episode_return = [], 0.0
    for step in range(n_steps):
        action = env.action_space.sample()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        last = step == n_steps - 1
        for key, value in zip(
            rows, (observation, action, reward, next_observation, terminated, truncated or last), strict=True
        ):
            rows[key].append(value)
        episode_return += float(reward)
        observation = next_observation
        if terminated or truncated or last:
            returns.append(episode_return)
            observation, episode_return = env.reset()[0], 0.0
    with h5py.File(path, "w") as file:
        for key, values in rows.items():
            file[key] = np.asarray(values, dtype=bool if key in ("terminals", "timeouts") else np.float32)
        file.attrs["metadata"] = json.dumps({"env_id": env_id, "mean_return": float(np.mean(returns))})
    return path


@pytest.fixture(scope="session")
def pendulum_file(tmp_path_factory):
    """``pendulum-tiny.hdf5``: 400 random Pendulum-v1 steps (2 episodes)."""
    return write_d4rl_file(tmp_path_factory.mktemp("data") / "pendulum-tiny.hdf5", "Pendulum-v1", 400)


@pytest.fixture(scope="session")
def hopper_file(tmp_path_factory):
    """``hopper-medium-replay.hdf5``: 100 random Hopper-v5 steps, named as a file with its own hyperparameters."""
    return write_d4rl_file(tmp_path_factory.mktemp("data") / "hopper-medium-replay.hdf5", "Hopper-v5", 100)
