import numpy as np
import pytest

from diffgym.data import SegmentDataset, discounted_returns_to_go


def test_padding_repeats_final_observation(make_dataset, box_episode):
    make_dataset([4, 3])
    segments = SegmentDataset("test/tiny/data-v0", horizon=3, discount=0.5)
    assert len(segments) == 7  # every step of both episodes starts a segment
    episode0 = box_episode(0, 4)
    batch = segments[np.array([2, 3])]
    np.testing.assert_array_equal(batch.observations[0], [[0, 2, 1], [0, 3, 1.5], [0, 4, 2]])
    np.testing.assert_array_equal(batch.observations[1], [[0, 3, 1.5], [0, 4, 2], [0, 4, 2]])
    np.testing.assert_array_equal(
        batch.actions[0], np.concatenate([episode0["actions"][2:4], np.zeros((1, 2))])
    )
    np.testing.assert_array_equal(batch.actions[1, 1:], np.zeros((2, 2)))
    np.testing.assert_array_equal(batch.rewards, [[2, 3, 0], [3, 0, 0]])
    np.testing.assert_array_equal(batch.mask, [[True, True, False], [True, False, False]])
    np.testing.assert_allclose(batch.returns, [2 + 0.5 * 3, 3])
    assert batch.goals is None
    first_of_episode1 = segments[np.array([4])]
    np.testing.assert_array_equal(first_of_episode1.observations[0, :, 0], [1, 1, 1])
    np.testing.assert_allclose(first_of_episode1.returns, [1 + 0.5 * 2 + 0.25 * 3])


def test_without_padding_only_full_segments(make_dataset):
    make_dataset([2, 5])
    segments = SegmentDataset("test/tiny/data-v0", horizon=3, discount=1.0, use_padding=False)
    assert len(segments) == 3  # the 2-step episode is too short
    batch = segments[np.arange(3)]
    assert batch.mask.all()
    np.testing.assert_array_equal(batch.observations[:, 0, 1], [0, 1, 2])
    np.testing.assert_allclose(batch.returns, [1 + 2 + 3 + 4 + 5, 2 + 3 + 4 + 5, 3 + 4 + 5])
    assert segments.sample(16, np.random.default_rng(0)).observations.shape == (16, 3, 3)
    assert segments.observations.shape == (7, 3) and segments.actions.shape == (7, 2)


def test_goals_and_obs_key(make_dataset):
    make_dataset([3, 2], dict_obs=True)
    by_key = SegmentDataset("test/tiny/data-v0", horizon=2, obs_key="observation", goal_key="desired_goal")
    batch = by_key[np.array([0, 3])]
    assert batch.observations.shape == (2, 2, 3)
    np.testing.assert_array_equal(batch.goals, [[0, 0], [1, -1]])
    from_infos = SegmentDataset("test/tiny/data-v0", horizon=2, goal_key="infos/goal")
    np.testing.assert_array_equal(from_infos[np.array([4])].goals, [[2, -2]])
    assert from_infos[np.array([0])].observations.shape == (1, 2, 5)  # all Dict keys flattened
    with pytest.raises(KeyError, match="goal_key"):
        SegmentDataset("test/tiny/data-v0", horizon=2, goal_key="nope")


def test_discounted_returns_to_go():
    rng = np.random.default_rng(0)
    lengths = np.array([5, 1, 7])
    rewards = rng.normal(size=lengths.sum()).astype(np.float32)
    expected, start = [], 0
    for length in lengths:
        chunk = rewards[start : start + length].astype(np.float64)
        expected += [sum(0.9**k * r for k, r in enumerate(chunk[t:])) for t in range(length)]
        start += length
    np.testing.assert_allclose(discounted_returns_to_go(rewards, lengths, 0.9), expected, rtol=1e-5)


def test_pad_before_repeats_the_first_step(make_dataset, box_episode):
    make_dataset([4, 3])
    segments = SegmentDataset("test/tiny/data-v0", horizon=3, discount=1.0, pad_before=1)
    assert len(segments) == 7 + 2  # one extra start before each episode
    episode0 = box_episode(0, 4)
    first = segments[np.array([0])]
    np.testing.assert_array_equal(first.observations[0], [[0, 0, 0], [0, 0, 0], [0, 1, 0.5]])
    np.testing.assert_array_equal(first.actions[0], episode0["actions"][[0, 0, 1]])
    np.testing.assert_array_equal(first.mask[0], [False, True, True])
    np.testing.assert_array_equal(first.rewards[0], [0, 0, 1])
    np.testing.assert_allclose(first.returns, [0 + 1 + 2 + 3])  # the episode's return from step 0
    last_of_episode0 = segments[np.array([4])]
    np.testing.assert_array_equal(last_of_episode0.mask[0], [True, False, False])
    np.testing.assert_array_equal(segments[np.array([5])].observations[0, :, 0], [1, 1, 1])
