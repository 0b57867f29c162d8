"""ActionChunkWrapper and make_chunked_env: exact reward sums, early stops, spaces, env checker."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import TimeLimit

from diffgym.wrappers import ActionChunkWrapper, make_chunked_env


class CounterEnv(gym.Env):
    """obs = [t, last action]; reward of step t = 10 t + action[0]; terminates after ``terminate_at`` steps."""

    def __init__(self, terminate_at: int = 1_000) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 5.0], np.float32))
        self.terminate_at = terminate_at
        self.t = 0
        self.steps_taken = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        reward = 10.0 * self.t + float(action[0])
        self.t += 1
        self.steps_taken += 1
        obs = np.array([self.t, action[0]], np.float32)
        return obs, reward, self.t >= self.terminate_at, False, {"t": self.t}


def chunk(*firsts: float) -> np.ndarray:
    return np.array([[a, 1.0] for a in firsts], np.float32)


def test_action_space_tiles_the_bounds():
    env = ActionChunkWrapper(CounterEnv(), n_action_steps=3)
    assert env.action_space.shape == (3, 2)
    np.testing.assert_array_equal(env.action_space.low, [[-1, 0]] * 3)
    np.testing.assert_array_equal(env.action_space.high, [[1, 5]] * 3)
    assert env.observation_space == CounterEnv().observation_space


def test_full_chunk_sums_the_rewards_exactly():
    inner = CounterEnv()
    env = ActionChunkWrapper(inner, n_action_steps=3)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(chunk(0.5, -0.25, 0.125))
    np.testing.assert_array_equal(info["chunk_rewards"], [0.5, 9.75, 20.125])
    assert reward == 0.5 + 9.75 + 20.125
    assert info["chunk_executed"] == 3 and inner.steps_taken == 3
    np.testing.assert_array_equal(obs, [3, 0.125])  # the observation after the last action
    assert info["t"] == 3 and not terminated and not truncated
    _, reward, *_, info = env.step(chunk(0.0, 0.0, 0.0))  # the next chunk continues the episode
    assert reward == 30 + 40 + 50 and info["chunk_executed"] == 3


def test_stops_at_termination_inside_a_chunk():
    inner = CounterEnv(terminate_at=2)
    env = ActionChunkWrapper(inner, n_action_steps=4)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(chunk(1.0, 2.0, 3.0, 4.0))
    assert terminated and not truncated
    assert info["chunk_executed"] == 2 and inner.steps_taken == 2  # actions 3 and 4 never ran
    np.testing.assert_array_equal(info["chunk_rewards"], [1.0, 12.0, 0.0, 0.0])
    assert reward == 13.0
    np.testing.assert_array_equal(obs, [2, 2.0])


def test_stops_at_truncation_inside_a_chunk():
    inner = CounterEnv()
    env = ActionChunkWrapper(TimeLimit(inner, max_episode_steps=5), n_action_steps=4)
    env.reset(seed=0)
    _, first, terminated, truncated, info = env.step(chunk(0, 0, 0, 0))
    assert (first, terminated, truncated, info["chunk_executed"]) == (60.0, False, False, 4)
    _, reward, terminated, truncated, info = env.step(chunk(0.5, 0.5, 0.5, 0.5))
    assert truncated and not terminated
    assert info["chunk_executed"] == 1 and inner.steps_taken == 5
    np.testing.assert_array_equal(info["chunk_rewards"], [40.5, 0, 0, 0])
    assert reward == 40.5


def test_last_action_of_the_chunk_may_end_the_episode():
    inner = CounterEnv(terminate_at=3)
    env = ActionChunkWrapper(inner, n_action_steps=3)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(chunk(0, 0, 0))
    assert terminated and info["chunk_executed"] == 3


def test_chunked_pendulum_matches_stepping_the_env_by_hand():
    actions = np.random.default_rng(0).uniform(-2, 2, (4, 1)).astype(np.float32)
    reference = gym.make("Pendulum-v1")
    reference.reset(seed=3)
    expected = [reference.step(a)[1] for a in actions]
    env = ActionChunkWrapper(gym.make("Pendulum-v1"), n_action_steps=4)
    env.reset(seed=3)
    _, reward, *_, info = env.step(actions)
    np.testing.assert_array_equal(info["chunk_rewards"], expected)
    assert reward == pytest.approx(sum(expected), rel=1e-12)


def test_env_checker_passes():
    check_env(ActionChunkWrapper(gym.make("Pendulum-v1"), n_action_steps=3), skip_render_check=True)
    check_env(ActionChunkWrapper(CounterEnv(terminate_at=4), n_action_steps=3), skip_render_check=True)
    check_env(make_chunked_env("Pendulum-v1", n_obs_steps=2, n_action_steps=3), skip_render_check=True)


def test_make_chunked_env_keeps_the_last_observations():
    env = make_chunked_env(CounterEnv(), n_obs_steps=2, n_action_steps=3)
    assert env.observation_space.shape == (2, 2) and env.action_space.shape == (3, 2)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [[0, 0], [0, 0]])  # reset observation repeated
    obs, *_ = env.step(chunk(0.1, 0.2, 0.3))
    np.testing.assert_array_equal(obs, np.array([[2, 0.2], [3, 0.3]], np.float32))


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(TypeError, match="Box action space"):
        ActionChunkWrapper(gym.make("CartPole-v1"), n_action_steps=2)
    with pytest.raises(ValueError, match="n_action_steps"):
        ActionChunkWrapper(CounterEnv(), n_action_steps=0)
    with pytest.raises(ValueError, match="n_obs_steps"):
        make_chunked_env(CounterEnv(), n_obs_steps=0, n_action_steps=2)
    env = ActionChunkWrapper(CounterEnv(), n_action_steps=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        env.step(np.zeros((2, 2), np.float32))
