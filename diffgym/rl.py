"""The reinforcement-learning parts the agents share: twin critics, the Bellman target, TD and
expectile losses, gradient norms, and IQL's reward scale.

Every agent with a critic (Diffusion-QL, IDQL, TD3+BC, IQL) builds and trains it with these, so a
critic step reads the same in each agent file and a fix lands everywhere at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grad_norm_

from diffgym.networks import StateActionCritic

IQL_RETURN_RANGE = 1000.0  # IQL rescales rewards so that dataset returns span this range


def twin_critic(
    obs_dim: int, action_dim: int, **mlp_kwargs: Any
) -> tuple[StateActionCritic, StateActionCritic]:
    """Two Q networks in one ensemble (one batched forward: (B, obs), (B, A) -> (2, B)) and a frozen
    target copy for the Bellman target (updated by :func:`~diffgym.networks.soft_update`)."""
    critic = StateActionCritic(obs_dim, action_dim, members=2, **mlp_kwargs)
    return critic, copy.deepcopy(critic).requires_grad_(False)


def bellman_target(rewards: Tensor, dones: Tensor, next_value: Tensor, gamma: float) -> Tensor:
    """``r + γ (1 - done) V(s')``: rewards, dones (B, 1) or (B,), next_value (B,) -> (B,).

    ``dones`` are true terminals only (a time-limit truncation still bootstraps).
    """
    return rewards.reshape(-1) + gamma * (1 - dones.reshape(-1)) * next_value


def td_loss(q: Tensor, target: Tensor, reduce_members: str = "sum") -> Tensor:
    """Squared TD error of an ensemble: q (members, B), target (B,) -> scalar.

    ``reduce_members="sum"``: ``Σ_i mean_b (Q_i - y)²`` (TD3, Diffusion-QL, IQL's official code);
    ``"mean"``: the mean over members as well (IDQL's official ``((qs - y) ** 2).mean()``).
    """
    per_member = ((q - target) ** 2).mean(dim=1)
    if reduce_members == "sum":
        return per_member.sum()
    if reduce_members == "mean":
        return per_member.mean()
    raise ValueError(f"reduce_members must be 'sum' or 'mean', got {reduce_members!r}")


def min_q(critic: StateActionCritic, observations: Tensor, actions: Tensor) -> Tensor:
    """The pessimistic twin estimate ``min(Q_1, Q_2)(s, a)``: (B, obs), (B, A) -> (B,)."""
    return critic(observations, actions).min(dim=0).values


def q_for_actor(critic: StateActionCritic, observations: Tensor, actions: Tensor) -> Tensor:
    """``Q_i(s, a)`` (members, B) for an actor's loss: the gradient reaches ``actions`` (and through
    them the actor), but none is computed for the critic's own weights, which the actor's optimiser
    would not use (the critic's next step zeroes them). Skipping them saves a third of the critic's
    backward pass and changes no result."""
    parameters = [p for p in critic.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        return critic(observations, actions)
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


def fit_twin_critic(
    critic: StateActionCritic,
    optimizer: torch.optim.Optimizer,
    observations: Tensor,
    actions: Tensor,
    target: Tensor,
    max_norm: float = 0.0,
    reduce_members: str = "sum",
) -> dict[str, Tensor]:
    """One gradient step of the twins toward a Bellman ``target`` (B,) (:func:`td_loss`), the gradient
    clipped to ``max_norm`` when > 0. Returns detached ``critic_loss``, ``q_mean``, ``critic_grad_norm``."""
    q = critic(observations, actions)  # (2, B)
    loss = td_loss(q, target, reduce_members)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = gradient_norm(critic.parameters(), max_norm)
    optimizer.step()
    return {"critic_loss": loss.detach(), "q_mean": q.detach().mean(), "critic_grad_norm": norm}


def fit_expectile_value(
    value: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    observations: Tensor,
    target_q: Tensor,
    expectile: float,
) -> dict[str, Tensor]:
    """IQL's value step: ``V(s)`` (B,) regresses the τ-expectile of ``target_q`` (B,) (usually
    :func:`min_q` of the target critics at dataset actions). Returns detached ``value_loss``, ``v_mean``."""
    v = value(observations)
    loss = expectile_loss(target_q - v, expectile)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"value_loss": loss.detach(), "v_mean": v.detach().mean()}


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """IQL's asymmetric squared loss ``|τ - 1(diff < 0)| · diff²``, averaged: diff (B,) -> scalar.

    Minimised over a constant ``v`` with ``diff = q - v``, it gives the τ-expectile of ``q``.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


def gradient_norm(parameters: Iterable[nn.Parameter], max_norm: float = 0.0) -> Tensor:
    """The global L2 norm of the gradients (for the logger), clipped to ``max_norm`` when it is > 0."""
    return clip_grad_norm_(list(parameters), max_norm if max_norm > 0 else float("inf"))


def iql_reward_scale(
    observations: Tensor, next_observations: Tensor, rewards: Tensor, dones: Tensor
) -> float:
    """IQL's reward scale ``1000 / (max - min episode return)`` over a dataset's episodes.

    Episodes end where IQL's ``split_into_trajectories`` ends them: at a terminal, or where the
    next row's observation is not this row's next observation. Shapes: observations (N, obs_dim),
    next_observations (N, obs_dim), rewards (N, 1) or (N,), dones (N, 1) or (N,).

    Raises:
        ValueError: all episodes have the same return (nothing to scale by).
    """
    return iql_reward_scale_chunked([(observations, next_observations, rewards, dones)])


def iql_reward_scale_chunked(chunks: Iterable[tuple[Tensor, Tensor, Tensor, Tensor]]) -> float:
    """:func:`iql_reward_scale` over a dataset read in chunks of consecutive rows (bounded memory).

    Each chunk is ``(observations, next_observations, rewards, dones)`` shaped as there, except that
    ``observations`` holds one row more, the next chunk's first observation, in every chunk but the last.

    Raises:
        ValueError: all episodes have the same return (nothing to scale by).
    """
    parts: list[Tensor] = []
    carry = torch.zeros((), dtype=torch.float64)  # the return so far of the episode a chunk leaves open
    for observations, next_observations, rewards, dones in chunks:
        ends = dones.reshape(-1).bool().clone()
        known = len(observations) - 1  # rows whose next row's observation is known
        ends[:known] |= (observations[1:] - next_observations[:known]).norm(dim=1) > 1e-6
        if known < len(ends):  # the last chunk
            ends[-1] = True
        episode = torch.cumsum(ends.long(), 0) - ends.long()  # episode index of each row, in this chunk
        sums = torch.zeros(int(ends.sum()) + 1, dtype=torch.float64, device=rewards.device)
        sums.index_add_(0, episode, rewards.reshape(-1).double())
        sums[0] += carry.to(sums.device)
        parts.append(sums[:-1].cpu())
        carry = sums[-1].cpu()
        del observations, next_observations, rewards, dones, ends, episode  # not alive while the next is read
    returns = torch.cat(parts)
    spread = float(returns.max() - returns.min())
    if spread <= 0:
        raise ValueError(
            f"reward_scale='iql' needs episodes with different returns; the dataset has {len(returns)} "
            "episode(s) of equal return. Pass a number instead."
        )
    return IQL_RETURN_RANGE / spread
