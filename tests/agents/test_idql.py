"""IDQL: the IQL critic's losses, the implicit actor's selection rules, learning and model files."""

import math

import numpy as np
import pytest
import torch
from gymnasium import make, spaces
from torch import nn

from diffgym import IDQL
from diffgym.agents.idql import IDQLPolicy
from diffgym.agents.idql.policies import expectile_log_weights
from diffgym.rl import expectile_loss, iql_reward_scale

SMALL_NETS = dict(num_candidates=8, actor_hidden=32, critic_hidden=32)
TINY = dict(batch_size=32, check_every=10, seed=0)


def sample_expectile(q: torch.Tensor, tau: float) -> float:
    """The τ-expectile m of samples q: τ E[(q - m)+] = (1 - τ) E[(m - q)+], by bisection."""
    low, high = float(q.min()), float(q.max())
    for _ in range(100):
        m = (low + high) / 2
        balance = tau * (q - m).clamp_min(0).mean() - (1 - tau) * (m - q).clamp_min(0).mean()
        low, high = (m, high) if balance > 0 else (low, m)
    return (low + high) / 2


def exponential_expectile(tau: float) -> float:
    """The τ-expectile of Exp(1): τ e^-m = (1 - τ)(m - 1 + e^-m), by bisection."""
    low, high = 0.0, 10.0
    for _ in range(100):
        m = (low + high) / 2
        balance = tau * math.exp(-m) - (1 - tau) * (m - 1 + math.exp(-m))
        low, high = (m, high) if balance > 0 else (low, m)
    return (low + high) / 2


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_is_minimised_by_the_expectile(tau):
    q = torch.empty(20_000, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(0))
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([v], line_search_fn="strong_wolfe", max_iter=100)

    def closure():
        optimizer.zero_grad()
        loss = expectile_loss(q - v, tau)
        loss.backward()
        return loss

    optimizer.step(closure)
    v = float(v.detach())
    expectile = sample_expectile(q, tau)
    assert v == pytest.approx(expectile, abs=1e-4)
    at_expectile = torch.tensor(expectile, dtype=torch.float64, requires_grad=True)
    expectile_loss(q - at_expectile, tau).backward()
    assert float(at_expectile.grad) == pytest.approx(0.0, abs=1e-7)  # the minimiser
    assert v == pytest.approx(exponential_expectile(tau), abs=0.03)  # Exp(1): 1.0, 1.31, 1.94
    if tau == 0.5:
        assert expectile == pytest.approx(float(q.mean()), abs=1e-9)


class Twins(nn.Module):
    """A stand-in critic: forward(obs (B, S), action (B, 1)) -> (2, B)."""

    def __init__(self, q1, q2):
        super().__init__()
        self.q1, self.q2 = q1, q2

    def forward(self, obs, action):
        a = action[:, 0]
        return torch.stack([self.q1(a), self.q2(a)])


class ZeroValue(nn.Module):
    """A stand-in for the value ensemble: (B, S) -> (1, B, 1) zeros."""

    def forward(self, obs):
        return torch.zeros(1, len(obs), 1)


def stub_policy(candidates, selection, q1, q2, expectile=0.7):
    """An IDQLPolicy whose candidates and critics are fixed: 1-D actions, 2-D observations."""
    policy = IDQLPolicy(
        spaces.Box(-1, 1, (2,)),
        spaces.Box(-1, 1, (1,)),
        lambda _: 3e-4,
        num_candidates=len(candidates),
        selection=selection,
        actor_hidden=16,
        critic_hidden=16,
    )
    proposals = torch.tensor(candidates).unsqueeze(1)
    policy.sample_actions = lambda features, generator: proposals.repeat(len(features) // len(candidates), 1)
    policy.critic_target = Twins(q1, q2)
    policy.value_net = ZeroValue()
    policy.expectile = expectile
    policy.sampling_generator = torch.Generator().manual_seed(0)
    return policy


def test_argmax_selection_keeps_the_candidate_with_the_best_smaller_twin():
    # alone, Q1 prefers 0.9 and Q2 prefers -0.2; min(Q1, Q2) prefers 0.4
    policy = stub_policy([-0.8, -0.2, 0.4, 0.9], "argmax", q1=lambda a: a, q2=lambda a: 1 - (a + 0.2) ** 2)
    chosen = policy.select_actions(torch.zeros(3, 2), deterministic=True)
    torch.testing.assert_close(chosen, torch.full((3, 1), 0.4))


def test_expectile_weights_are_the_papers():
    q, v, tau = torch.tensor([-1.0, -0.25, 0.5, 2.0]), torch.zeros(4), 0.7
    expected = torch.tensor([0.3 / 1.0, 0.3 / 0.25, 0.7 / 0.5, 0.7 / 2.0])
    torch.testing.assert_close(expectile_log_weights(q, v, tau).exp(), expected)


def test_expectile_selection_samples_in_proportion_to_the_weights():
    candidates, tau = [-0.6, -0.2, 0.1, 0.5], 0.7
    policy = stub_policy(candidates, "expectile", q1=lambda a: a, q2=lambda a: a + 1, expectile=tau)
    weights = np.array([0.3 / 0.6, 0.3 / 0.2, 0.7 / 0.1, 0.7 / 0.5])  # Q = a, V = 0
    chosen = policy.select_actions(torch.zeros(20_000, 2), deterministic=False)[:, 0].numpy()
    frequencies = [(np.abs(chosen - c) < 1e-6).mean() for c in candidates]
    np.testing.assert_allclose(frequencies, weights / weights.sum(), atol=0.015)
    greedy = policy.select_actions(torch.zeros(2, 2), deterministic=True)
    torch.testing.assert_close(greedy, torch.full((2, 1), 0.1))  # the largest weight


def test_value_update_moves_v_to_the_expectile_of_the_critic():
    model = IDQL(
        "MlpPolicy", make("Pendulum-v1"), expectile=0.9, reward_scale=1.0, seed=0, policy_kwargs=SMALL_NETS
    )
    model.policy.critic_target = Twins(lambda a: 3 * a, lambda a: 3 * a + 1)  # min: Q = 3a
    for group in model.policy.value_optimizer.param_groups:
        group["lr"] = 1e-2
    actions = torch.rand(512, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = type("Batch", (), dict(observations=torch.zeros(512, 3), actions=actions))
    for _ in range(400):
        model._update_value(batch)
    v = float(model.policy.value(torch.zeros(1, 3)).detach())
    assert v == pytest.approx(sample_expectile(3 * actions[:, 0], 0.9), abs=0.03)


def test_iql_reward_scale_splits_episodes_like_iql():
    # episodes: rows 0-2 (terminal at 2), rows 3-4 (next row does not continue row 4), rows 5-6
    observations = torch.tensor([0, 1, 2, 10, 11, 20, 21], dtype=torch.float32).unsqueeze(1)
    next_observations = observations + 1
    rewards = torch.tensor([1.0, 1.0, 1.0, 5.0, 5.0, 0.5, 0.5])
    dones = torch.tensor([0, 0, 1, 0, 0, 0, 0])
    scale = iql_reward_scale(observations, next_observations, rewards, dones)
    assert scale == pytest.approx(1000 / (10.0 - 1.0))
    with pytest.raises(ValueError, match="different returns"):
        one_episode = torch.arange(7.0).unsqueeze(1)
        iql_reward_scale(one_episode, one_episode + 1, rewards, torch.zeros(7))


def test_learn_then_predict(pendulum_dataset):
    model = IDQL(
        "MlpPolicy",
        make("Pendulum-v1"),
        dataset=pendulum_dataset,
        lr_decay_steps=30,
        policy_kwargs=SMALL_NETS,
        **TINY,
    )
    returns = [episode.rewards.sum() for episode in pendulum_dataset.iterate_episodes()]
    assert model.reward_scale == pytest.approx(1000 / (max(returns) - min(returns)), rel=1e-5)

    model.learn(30)
    stats = model._monitor.means
    assert {"value_loss", "v_mean", "critic_loss", "q_mean", "actor_loss"} <= set(stats)
    assert all(np.isfinite(list(stats.values())))
    policy = model.policy
    assert policy.actor_optimizer.param_groups[0]["lr"] < 1e-5  # decayed over 30 steps: the actor only
    assert (
        policy.critic_optimizer.param_groups[0]["lr"] == policy.value_optimizer.param_groups[0]["lr"] == 3e-4
    )
    for ema, actor in zip(policy.ema_actor.module.parameters(), policy.actor.parameters(), strict=True):
        torch.testing.assert_close(ema, actor)  # a copy until ema_start

    obs, _ = make("Pendulum-v1").reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (1,) and -2 <= action[0] <= 2


@pytest.mark.parametrize("selection", ["argmax", "expectile"])
def test_save_load_keeps_deterministic_predictions(selection, pendulum_dataset, tmp_path):
    kwargs = dict(TINY, expectile=0.9, policy_kwargs=dict(SMALL_NETS, selection=selection))
    model = IDQL("MlpPolicy", make("Pendulum-v1"), dataset=pendulum_dataset, ema_start=5, **kwargs).learn(20)
    observations = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    before, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "idql")
    loaded = IDQL.load(tmp_path / "idql", env=make("Pendulum-v1"))
    after, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(before, after)
    assert loaded.policy.selection == selection
    assert loaded.expectile == loaded.policy.expectile == 0.9
    assert loaded.reward_scale == model.reward_scale  # the fitted number, not "iql"


def test_iql_reward_scale_needs_a_dataset():
    model = IDQL("MlpPolicy", make("Pendulum-v1"), policy_kwargs=SMALL_NETS, **TINY)
    with pytest.raises(ValueError, match="reward_scale='iql'"):
        model.learn(5, online=True)
    with pytest.raises(ValueError, match="number or 'iql'"):
        IDQL("MlpPolicy", make("Pendulum-v1"), reward_scale="d4rl")
