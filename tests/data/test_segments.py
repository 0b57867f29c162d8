import h5py
import numpy as np
import pytest

from diffgym.data import (
    SegmentDataset,
    discounted_returns_to_go,
    join_continuing_episodes,
    load_dataset,
    penalize_terminations,
    read_episodes,
)


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


def test_termination_penalty_enters_the_terminal_reward_before_discounting(make_dataset):
    """Episode 0 (rewards 0, 1, 2) terminates, episode 1 (rewards 1, 2) is truncated (conftest)."""
    make_dataset([3, 2])
    segments = SegmentDataset("test/tiny/data-v0", horizon=2, discount=0.5, termination_penalty=-100.0)
    batch = segments[np.arange(5)]  # with padding every step starts a segment
    terminal = 2 - 100  # the last reward of the terminated episode, penalised
    expected = [0 + 0.5 * 1 + 0.25 * terminal, 1 + 0.5 * terminal, terminal, 1 + 0.5 * 2, 2]
    np.testing.assert_allclose(batch.returns, expected)
    np.testing.assert_array_equal(batch.rewards[:, 0], [0, 1, terminal, 1, 2])  # no penalty on a truncation
    unpenalised = SegmentDataset("test/tiny/data-v0", horizon=2, discount=0.5)[np.arange(5)]
    np.testing.assert_allclose(unpenalised.returns, [0 + 0.5 + 0.5, 1 + 1, 2, 2, 2])


def test_penalize_terminations():
    rewards = np.array([1.0, 2.0, 3.0], np.float32)
    penalised = penalize_terminations(rewards, np.array([False, False, True]), -100.0)
    np.testing.assert_array_equal(penalised, [1, 2, -97])
    assert penalised.dtype == np.float32
    np.testing.assert_array_equal(rewards, [1, 2, 3])  # not modified in place


def write_goal_stream(path, n=60, legs=(0, 7, 9, 30, 38, 55), seed=0):
    """A continual maze-like stream in D4RL's layout: position and velocity of a moving point, a new
    goal drawn (and a timeout marked) at the last row of each leg; the unterminated tail after the
    last timeout is a leg too. Observation row t is [t, t / 2, 1, 0.5], so runs are easy to check."""
    t = np.arange(n + 1, dtype=np.float32)
    states = np.stack([t, t / 2, np.ones_like(t), np.full_like(t, 0.5)], axis=1)
    timeouts = np.zeros(n, bool)
    timeouts[list(legs[1:])] = True
    leg = np.cumsum(np.concatenate([[0], timeouts[:-1]]))
    goals = np.random.default_rng(seed).uniform(-1, 1, size=(int(leg.max()) + 1, 2)).astype(np.float32)
    with h5py.File(path, "w") as file:
        file["observations"], file["next_observations"] = states[:-1], states[1:]
        file["actions"] = np.zeros((n, 2), np.float32)
        file["rewards"] = (np.arange(n) % 7 == 0).astype(np.float32)
        file["terminals"], file["timeouts"] = np.zeros(n, bool), timeouts
        file["infos/goal"] = goals[leg]
    return states


def test_joined_goal_legs_give_windows_of_real_consecutive_steps(tmp_path):
    path = tmp_path / "stream.hdf5"
    states = write_goal_stream(path)
    n, horizon = len(states) - 1, 16
    assert load_dataset(path).total_episodes == 6  # one episode per goal leg, as imported
    padded = SegmentDataset(path, horizon=horizon)  # the legs, padded: the old maze setting
    assert (~padded[np.arange(len(padded))].mask).any()
    joined = SegmentDataset(
        path, horizon=horizon, use_padding=False, join_episodes=True, goal_key="infos/goal"
    )
    assert len(joined) == n - horizon + 1  # every window of the stream, across the goal re-draws
    batch = joined[np.arange(len(joined))]
    assert batch.mask.all()
    first = batch.observations[:, 0, 0].astype(int)
    np.testing.assert_array_equal(first, np.arange(n - horizon + 1))
    np.testing.assert_array_equal(batch.observations, states[first[:, None] + np.arange(horizon)])
    assert joined.observations.shape == (n, 4)  # each real step once
    with h5py.File(path) as file:
        np.testing.assert_array_equal(batch.goals, file["infos/goal"][()][first])  # each window's first goal
        np.testing.assert_allclose(  # returns run to the stream's end, not the leg's
            batch.returns[0], discounted_returns_to_go(file["rewards"][()], np.array([n]), 0.99)[0], rtol=1e-6
        )


def test_join_needs_continuity_and_no_termination(make_dataset):
    """Dict observations: the state continues across episodes 0 -> 1 -> 2 while ``desired_goal``
    changes; episode 2 terminates (episode 3 starts at its final state, yet is not joined to it) and
    episode 4 starts elsewhere."""
    lengths, offsets = [3, 2, 4, 2, 3], [0, 3, 5, 9, 100]

    def edit(index, arrays):
        t = offsets[index] + np.arange(lengths[index] + 1, dtype=np.float32)
        arrays["observations"]["observation"] = np.stack([t, t, t], axis=1)
        last = np.arange(lengths[index]) == lengths[index] - 1
        arrays["terminations"], arrays["truncations"] = last & (index == 2), last & (index != 2)

    make_dataset(lengths, dict_obs=True, edit=edit)
    episodes = read_episodes("test/tiny/data-v0")
    joined = join_continuing_episodes(episodes)
    np.testing.assert_array_equal(joined.lengths, [9, 2, 3])
    np.testing.assert_array_equal(joined.episode_ids, [0, 3, 4])
    np.testing.assert_array_equal(
        joined.observations["observation"][:10, 0], np.arange(10)
    )  # each state once
    np.testing.assert_array_equal(joined.observations["desired_goal"][:10, 0], [0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(joined.truncations[:9], [False] * 9)  # cleared at the joins
    np.testing.assert_array_equal(joined.terminations, episodes.terminations)
    np.testing.assert_array_equal(joined.rewards, episodes.rewards)
    segments = SegmentDataset(
        "test/tiny/data-v0", horizon=4, use_padding=False, join_episodes=True, obs_key="observation"
    )
    assert len(segments) == 9 - 4 + 1  # the shorter episodes hold no window of 4 steps
    assert segments[np.arange(len(segments))].mask.all()
