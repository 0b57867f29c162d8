"""Tiny Minari datasets built in a per-test Minari store (never ~/.minari)."""

import warnings
from collections.abc import Callable

import minari
import numpy as np
import pytest
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer

OBS_SPACE = spaces.Box(-10.0, 10.0, (3,), np.float32)
ACT_SPACE = spaces.Box(-1.0, 1.0, (2,), np.float32)
DICT_SPACE = spaces.Dict(
    {
        "observation": spaces.Box(-10.0, 10.0, (3,), np.float32),
        "desired_goal": spaces.Box(-10.0, 10.0, (2,), np.float32),
    }
)


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch):
    """Point Minari at a fresh directory for every test."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def box_episode(episode: int, length: int) -> dict[str, np.ndarray]:
    """Recognisable arrays: observation t of episode e is [e, t, t * 0.5]; reward t is e + t."""
    t = np.arange(length + 1, dtype=np.float32)
    return {
        "observations": np.stack([np.full_like(t, episode), t, t * 0.5], axis=1),
        "actions": np.stack([np.full(length, episode / 10), np.arange(length) / 100], axis=1).astype(
            np.float32
        ),
        "rewards": (episode + np.arange(length)).astype(np.float64),
        "terminations": np.arange(length) == length - 1 if episode % 2 == 0 else np.zeros(length, bool),
        "truncations": np.arange(length) == length - 1 if episode % 2 == 1 else np.zeros(length, bool),
    }


def dict_episode(episode: int, length: int) -> dict:
    arrays = box_episode(episode, length)
    goal = np.tile(np.array([episode, -episode], np.float32), (length + 1, 1))
    arrays["observations"] = {"observation": arrays["observations"], "desired_goal": goal}
    arrays["infos"] = {"goal": goal * 2}
    return arrays


@pytest.fixture(name="box_episode")
def box_episode_fixture() -> Callable[[int, int], dict[str, np.ndarray]]:
    """The arrays :func:`make_dataset` stores for a Box-observation episode."""
    return box_episode


@pytest.fixture(name="dict_space")
def dict_space_fixture() -> spaces.Dict:
    return DICT_SPACE


@pytest.fixture
def make_dataset() -> Callable[..., minari.MinariDataset]:
    """``make_dataset(lengths, dict_obs=False, dataset_id=..., edit=None)`` builds a local dataset.

    ``edit(episode_index, arrays)`` may change an episode's arrays before they are stored.
    """

    def make(lengths, dict_obs=False, dataset_id="test/tiny/data-v0", edit=None):
        buffers = []
        for index, length in enumerate(lengths):
            arrays = dict_episode(index, length) if dict_obs else box_episode(index, length)
            if edit is not None:
                edit(index, arrays)
            buffers.append(EpisodeBuffer(id=index, **arrays))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # no env / eval env: intended here
            return minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                observation_space=DICT_SPACE if dict_obs else OBS_SPACE,
                action_space=ACT_SPACE,
                author="tests",
                author_email="tests@example.org",
                algorithm_name="synthetic",
                code_permalink="none",
                description="tiny test data",
            )

    return make
