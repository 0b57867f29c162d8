"""Shared test settings, and tiny datasets for agent tests in a Minari store private to the session."""

import gymnasium as gym
import pytest
import torch

from diffgym.data import collect_dataset


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One thread per test process: small networks run faster than with two contending threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minari_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(store))
        yield store


@pytest.fixture(scope="session")
def pendulum_dataset(minari_store):
    """600 random Pendulum steps: obs (3,), action in [-2, 2]."""
    return collect_dataset(gym.make("Pendulum-v1"), None, "test/pendulum/random-v0", n_steps=600, seed=0)


@pytest.fixture(scope="session")
def mountain_car_dataset(minari_store):
    """A dataset whose spaces do not match Pendulum's."""
    env = gym.make("MountainCarContinuous-v0")
    return collect_dataset(env, None, "test/mountaincar/random-v0", n_steps=200, seed=0)
