"""The shared critic parts: an actor's Q skips the critic's weight gradients; heads stay float32."""

import torch

from diffgym.networks import EnsembleMLP
from diffgym.rl import q_for_actor, twin_critic


def test_q_for_actor_reaches_the_actions_but_not_the_critics_weights():
    critic, _ = twin_critic(obs_dim=4, action_dim=2, hidden_dim=16)
    obs, actions = torch.randn(8, 4), torch.randn(8, 2, requires_grad=True)
    q = q_for_actor(critic, obs, actions)
    torch.testing.assert_close(q, critic(obs, actions))
    (reference,) = torch.autograd.grad(critic(obs, actions)[0].sum(), actions)
    q[0].sum().backward()
    torch.testing.assert_close(actions.grad, reference)
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.requires_grad for p in critic.parameters())  # restored for the critic's own step


def test_q_for_actor_leaves_a_frozen_critic_frozen():
    _, target = twin_critic(obs_dim=4, action_dim=2, hidden_dim=16)
    q_for_actor(target, torch.randn(3, 4), torch.randn(3, 2))
    assert not any(p.requires_grad for p in target.parameters())


def test_ensemble_output_layer_is_float32_under_bf16_autocast():
    """Q-values of a few hundred must not round to bfloat16's steps of 1-2."""
    net = EnsembleMLP(in_dim=5, out_dim=1, members=2, hidden_dim=32)
    with torch.no_grad():
        net.net[-1].bias.fill_(300.0)
    x = torch.randn(64, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = net(x)
    assert q.dtype == torch.float32
    exact = net(x)
    assert (q - exact).abs().max() < 0.05  # bfloat16 output would be off by up to 1 at 300
    assert (q.to(torch.bfloat16).float() - exact).abs().max() > 0.1  # which the check would see
