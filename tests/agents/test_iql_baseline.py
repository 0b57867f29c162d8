"""The IQL baseline: its Gaussian actor, learning, model files, and AWR picking the better arm."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from diffgym.agents.baselines import IQL
from diffgym.data import collect_dataset

SMALL = dict(batch_size=32, check_every=10, seed=0, policy_kwargs=dict(hidden_dim=32))
ARM = 0.5  # the bandit's two behaviour actions are ±ARM


class OneStepBandit(gym.Env):
    """A random observation, one action, then the end: reward 1 on the ``better`` arm's side of 0, else 0."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, better):
        self.better = better

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs, {}

    def step(self, action):
        return self._obs, float(action[0] * self.better > 0), True, False, {}


def test_the_gaussian_log_prob_is_a_normal_with_tanh_mean():
    model = IQL("MlpPolicy", gym.make("Pendulum-v1"), reward_scale=1.0, **SMALL)
    policy = model.policy
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-7.0]))  # below the clip: the std is exp(-5)
    features, actions = torch.randn(5, 3), torch.rand(5, 1) * 2 - 1
    mean = torch.tanh(policy.actor(features)[0])
    expected = torch.distributions.Normal(mean, np.exp(-5.0)).log_prob(actions).sum(dim=1)
    torch.testing.assert_close(policy.log_prob(features, actions), expected)


def test_learn_then_predict_in_bounds(pendulum_dataset):
    model = IQL("MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, lr_decay_steps=30, **SMALL)
    returns = [episode.rewards.sum() for episode in pendulum_dataset.iterate_episodes()]
    assert model.reward_scale == pytest.approx(1000 / (max(returns) - min(returns)), rel=1e-5)

    model.learn(30)
    stats = model._monitor.means
    assert {"value_loss", "v_mean", "actor_loss", "awr_weight", "critic_loss", "q_mean"} <= set(stats)
    assert all(np.isfinite(list(stats.values())))
    policy = model.policy
    assert policy.actor_optimizer.param_groups[0]["lr"] < 1e-5  # decayed over 30 steps: the actor only
    assert (
        policy.critic_optimizer.param_groups[0]["lr"] == policy.value_optimizer.param_groups[0]["lr"] == 3e-4
    )

    observations = np.random.default_rng(0).uniform(-1, 1, (64, 3)).astype(np.float32)
    mean, _ = model.predict(observations, deterministic=True)
    sampled, _ = model.predict(observations, deterministic=False)
    assert mean.shape == sampled.shape == (64, 1)
    assert np.all(np.abs(mean) < 2) and np.all(np.abs(sampled) <= 2)
    assert np.abs(sampled - mean).mean() > 0.1  # std ≈ 1 (× 2 for the action scale) after 30 steps


def test_save_load_keeps_predictions(pendulum_dataset, tmp_path):
    model = IQL(
        "MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, expectile=0.9, beta=10.0, **SMALL
    )
    model.learn(20)
    observations = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    model.save(tmp_path / "iql")
    loaded = IQL.load(tmp_path / "iql", env=gym.make("Pendulum-v1"))
    for deterministic in (True, False):  # the sampling generator and the log-std are saved too
        before, _ = model.predict(observations, deterministic=deterministic)
        after, _ = loaded.predict(observations, deterministic=deterministic)
        np.testing.assert_array_equal(before, after)
    assert (loaded.expectile, loaded.beta) == (0.9, 10.0)
    assert loaded.reward_scale == model.reward_scale  # the fitted number, not "iql"


def test_iql_reward_scale_needs_a_dataset():
    with pytest.raises(ValueError, match="reward_scale='iql'"):
        IQL("MlpPolicy", gym.make("Pendulum-v1"), **SMALL).learn(5, online=True)
    with pytest.raises(ValueError, match="number or 'iql'"):
        IQL("MlpPolicy", gym.make("Pendulum-v1"), reward_scale="d4rl")


@pytest.mark.parametrize("better, name", [(1, "upper"), (-1, "lower")])
def test_awr_moves_the_mean_to_the_better_arm_where_cloning_averages(better, name, minari_store):
    env = OneStepBandit(better)
    rng = np.random.default_rng(0)

    def either_arm(obs):
        return np.array([rng.choice([-ARM, ARM]) + 0.02 * rng.standard_normal()], np.float32)

    dataset = collect_dataset(env, either_arm, f"test/bandit/{name}-better-v0", n_episodes=300)
    kwargs = dict(SMALL, learning_rate=1e-3, batch_size=64, tau=0.05)  # faster targets: a short test
    observations = rng.uniform(-1, 1, (64, 2)).astype(np.float32)
    iql = IQL("MlpPolicy", env, dataset=dataset, **kwargs).learn(400)
    cloned = IQL("MlpPolicy", env, dataset=dataset, beta=0.0, **kwargs).learn(400)
    iql_mean, _ = iql.predict(observations, deterministic=True)
    cloned_mean, _ = cloned.predict(observations, deterministic=True)
    np.testing.assert_allclose(iql_mean, better * ARM, atol=0.05)
    assert abs(cloned_mean.mean()) < 0.1  # cloning averages the two arms
    assert np.abs(cloned_mean - better * ARM).mean() > 0.35
