"""The receding-horizon predict: plans are executed in order, redrawn on schedule, reset per episode."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from diffgym.trajectory import RecedingHorizonPolicy


class CountingPlanner(RecedingHorizonPolicy):
    """Plan k = the k-th call's counter; its actions are [k + 0.1 * i] for i in the chunk.

    The history's newest observation is added to the first action, so a test can see which
    observation a plan was made from; warm starts are recorded.
    """

    def _build(self, lr_schedule, n_obs_steps=2, n_action_steps=3) -> None:
        self.n_obs_steps, self.n_action_steps, self.segment_horizon = n_obs_steps, n_action_steps, 4
        self.calls = 0
        self.histories: list[torch.Tensor] = []
        self.warm: list[bool] = []
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def optimizers(self):
        return {}

    def plan(self, history, previous, deterministic):
        self.calls += 1
        self.histories.append(history.clone())
        self.warm.append(previous is not None)
        steps = torch.arange(self.n_action_steps, dtype=torch.float32) * 0.1
        return (self.calls + steps).expand(history.shape[0], -1).clone()

    def plan_actions(self, plans):
        return plans.unsqueeze(-1) / 100  # keep the actions inside [-1, 1]


def make(**kwargs) -> CountingPlanner:
    space = spaces.Box(-100.0, 100.0, (1,), np.float32)
    policy = CountingPlanner(space, spaces.Box(-1.0, 1.0, (1,), np.float32), lambda _: 0.0, **kwargs)
    policy.normalize_observations = False
    return policy


def rollout(policy, observations, starts=None):
    actions, state = [], None
    for i, observation in enumerate(observations):
        episode_start = None if starts is None else np.array([starts[i]])
        action, state = policy.predict(np.array([[observation]], np.float32), state, episode_start)
        actions.append(float(action[0, 0]) * 100)
    return np.array(actions)


def test_a_plan_is_executed_in_order_then_redrawn():
    policy = make(n_action_steps=3)
    actions = rollout(policy, [0.0] * 7)
    np.testing.assert_allclose(actions, [1.0, 1.1, 1.2, 2.0, 2.1, 2.2, 3.0], atol=1e-4)
    assert policy.calls == 3
    assert policy.warm == [False, True, True]  # later plans may warm-start from the last one


def test_history_holds_the_last_observations_and_repeats_the_first():
    policy = make(n_obs_steps=2, n_action_steps=1)
    rollout(policy, [5.0, 6.0, 7.0])
    np.testing.assert_array_equal(policy.histories[0][0, :, 0], [5.0, 5.0])  # episode start: repeated
    np.testing.assert_array_equal(policy.histories[1][0, :, 0], [5.0, 6.0])
    np.testing.assert_array_equal(policy.histories[2][0, :, 0], [6.0, 7.0])


def test_episode_start_drops_the_plan_and_the_history():
    policy = make(n_obs_steps=2, n_action_steps=3)
    actions = rollout(policy, [1.0, 2.0, 9.0], starts=[True, False, True])
    np.testing.assert_allclose(actions, [1.0, 1.1, 2.0], atol=1e-4)
    np.testing.assert_array_equal(policy.histories[-1][0, :, 0], [9.0, 9.0])
    assert policy.warm == [False, False]


def test_without_state_every_call_plans_afresh():
    policy = make(n_action_steps=3)
    for _ in range(3):
        _, state = policy.predict(np.array([0.0], np.float32))
    assert policy.calls == 3 and state[2].tolist() == [1]


def test_a_state_for_another_number_of_envs_is_refused():
    policy = make()
    _, state = policy.predict(np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="the state holds 2 envs but 3 observations"):
        policy.predict(np.zeros((3, 1), np.float32), state)


def test_sb3s_stateless_entry_point_plans_from_scratch():
    """``_predict`` (what SB3 calls without a state) plans from the observation alone, every call."""
    policy = make(n_obs_steps=2, n_action_steps=3)
    for _ in range(2):
        with torch.no_grad():
            action = policy._predict(torch.tensor([[4.0]]))
        assert torch.allclose(action * 100, torch.tensor([[policy.calls * 1.0]]))
    np.testing.assert_array_equal(policy.histories[-1][0, :, 0], [4.0, 4.0])
    assert policy.warm == [False, False]


def test_predict_keeps_sb3s_shapes_and_bounds():
    """One observation gives one action, a batch one per row, rescaled to the action space."""
    space = spaces.Box(-100.0, 100.0, (1,), np.float32)
    policy = CountingPlanner(space, spaces.Box(-2.0, 2.0, (1,), np.float32), lambda _: 0.0)
    single, _ = policy.predict(np.array([0.0], np.float32))
    batch, state = policy.predict(np.zeros((3, 1), np.float32))
    assert single.shape == (1,) and batch.shape == (3, 1) and len(state[0]) == 3
    assert single[0] == pytest.approx(2.0 * 0.01)  # the plan's first action 1 / 100, scaled to [-2, 2]
    with pytest.raises(ValueError, match="mixing Gym API with SB3 VecEnv API"):
        policy.predict((np.zeros(1, np.float32), {}))
