import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from diffgym.data import flatten_observations, load_dataset, load_transitions, read_episodes


def test_transitions_respect_episode_boundaries(make_dataset, box_episode):
    make_dataset([4, 3, 5])
    tr = load_transitions("test/tiny/data-v0")
    expected = [box_episode(e, n) for e, n in enumerate([4, 3, 5])]
    np.testing.assert_array_equal(tr.observations, np.concatenate([x["observations"][:-1] for x in expected]))
    np.testing.assert_array_equal(
        tr.next_observations, np.concatenate([x["observations"][1:] for x in expected])
    )
    np.testing.assert_array_equal(tr.actions, np.concatenate([x["actions"] for x in expected]))
    np.testing.assert_array_equal(tr.rewards, np.concatenate([x["rewards"] for x in expected]))
    np.testing.assert_array_equal(tr.episode_ids, [0] * 4 + [1] * 3 + [2] * 5)
    np.testing.assert_array_equal(np.flatnonzero(tr.terminals), [3, 11])
    np.testing.assert_array_equal(np.flatnonzero(tr.timeouts), [6])
    assert tr.observations.dtype == tr.rewards.dtype == np.float32
    assert tr.terminals.dtype == bool and tr.episode_ids.dtype == np.int64
    # the last next-observation of episode 0 is its final observation, not episode 1's first
    np.testing.assert_array_equal(tr.next_observations[3], [0, 4, 2])


def test_dict_observations(make_dataset, dict_space):
    make_dataset([3, 2], dict_obs=True)
    tr = load_transitions("test/tiny/data-v0")
    assert set(tr.observations) == {"observation", "desired_goal"}
    assert tr.observations["observation"].shape == (5, 3)
    np.testing.assert_array_equal(tr.next_observations["desired_goal"][3], [1, -1])
    flat = flatten_observations(tr.observations, dict_space)
    expected = np.stack(
        [spaces.flatten(dict_space, {k: v[i] for k, v in tr.observations.items()}) for i in range(5)]
    )
    np.testing.assert_array_equal(flat, expected)


def test_flatten_matches_gymnasium_for_discrete_parts():
    space = spaces.Dict(
        {
            "a": spaces.Discrete(4, start=1),
            "b": spaces.MultiDiscrete([2, 3]),
            "c": spaces.Tuple((spaces.Box(0, 1, (2, 2)), spaces.MultiBinary(3))),
        }
    )
    space.seed(0)
    samples = [space.sample() for _ in range(6)]
    batch = {
        "a": np.array([s["a"] for s in samples]),
        "b": np.stack([s["b"] for s in samples]),
        "c": (np.stack([s["c"][0] for s in samples]), np.stack([s["c"][1] for s in samples])),
    }
    expected = np.stack([spaces.flatten(space, s) for s in samples]).astype(np.float32)
    np.testing.assert_array_equal(flatten_observations(batch, space), expected)


def test_load_dataset_forms(make_dataset):
    dataset = make_dataset([2])
    assert load_dataset(dataset) is dataset
    root = dataset.storage.data_path.parent
    for form in (root, str(root), root / "data"):
        assert load_dataset(form).id == "test/tiny/data-v0"


def test_load_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("test/missing/data-v0")
    with pytest.raises(ValueError, match="neither a Minari dataset directory"):
        load_dataset(tmp_path)


def test_read_episodes_infos(make_dataset):
    make_dataset([3, 2], dict_obs=True)
    episodes = read_episodes("test/tiny/data-v0", info_keys=("goal",))
    np.testing.assert_array_equal(episodes.lengths, [3, 2])
    np.testing.assert_array_equal(episodes.infos["goal"][:, 0], [0, 0, 0, 2, 2])
    with pytest.raises(KeyError, match="no info field 'missing'"):
        read_episodes("test/tiny/data-v0", info_keys=("missing",))


def test_transitions_from_collected_gym_dataset():
    from diffgym.data import collect_dataset

    env = gym.make("Pendulum-v1", max_episode_steps=20)
    collect_dataset(env, "random", "test/pendulum/random-v0", n_steps=50)
    tr = load_transitions("test/pendulum/random-v0")
    assert tr.observations.shape == (50, 3) and tr.actions.shape == (50, 1)
    np.testing.assert_array_equal(np.flatnonzero(tr.timeouts), [19, 39, 49])
