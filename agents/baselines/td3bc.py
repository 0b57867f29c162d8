"""TD3+BC (Fujimoto & Gu, NeurIPS 2021): the deterministic-actor offline baseline of our benchmarks.

Built on the same SB3 base as the diffusion agents, so it trains on the same batches, normalises
observations the same way and is evaluated by the same code. Its "candidate selection" is a
single deterministic action (``num_candidates=1``).

Paper defaults: actor and twin critics 256-256 ReLU, lr 3e-4, batch 256, γ 0.99, τ 0.005,
target policy noise 0.2 clipped at 0.5, actor (and targets) updated every 2 critic steps,
α = 2.5 in ``λ = α / mean|Q|``, states standardised.

Deliberate difference: each state feature's standard deviation is floored at 1e-6 (the base's
normaliser, the same for every agent here) where the official code adds 1e-3 to it; the two
differ only on features that barely vary. SynthER's TD3+BC inherits the same choice.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples, Schedule
from torch import Tensor, nn

from diffgym.agents.baselines.single_action import SingleActionPolicy
from diffgym.algorithm import OfflineAlgorithm
from diffgym.data import DatasetLike
from diffgym.networks import make_adam, soft_update
from diffgym.rl import bellman_target, fit_twin_critic, min_q, q_for_actor, twin_critic
from diffgym.samplers import Randomness


class TD3BCPolicy(SingleActionPolicy):
    """Deterministic tanh actor + twin critics; acting returns the actor's action.

    Network arguments (``policy_kwargs``):
        hidden_dim: width of the 2 hidden ReLU layers of the actor and each Q (256). SB3's
            ``net_arch`` sets it too: 2 equal widths, the same for ``pi`` and ``qf``.
    """

    derived_state: ClassVar[dict[str, str]] = {"actor_target.": "actor.", "critic_target.": "critic."}

    def _build(self, lr_schedule: Schedule, hidden_dim: int = 256) -> None:
        self.actor = nn.Sequential(
            nn.Linear(self.obs_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, self.action_dim),
            nn.Tanh(),
        )
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic, self.critic_target = twin_critic(
            self.obs_dim, self.action_dim, hidden_dim=hidden_dim, num_hidden=2, activation=nn.ReLU
        )
        self.actor_optimizer = make_adam(self.actor.parameters(), lr=lr_schedule(1))
        self.critic_optimizer = make_adam(self.critic.parameters(), lr=lr_schedule(1))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def sample_actions(self, features: Tensor, generator: Randomness) -> Tensor:
        return self.actor(features)

    def score_actions(self, features: Tensor, actions: Tensor) -> Tensor:
        return torch.zeros(features.shape[0], device=features.device)


class TD3BC(OfflineAlgorithm):
    """TD3+BC: TD3's critic with a behaviour-cloning term in the actor loss.

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        alpha: α in ``λ = α / mean|Q1(s, π(s))|`` weighting the Q term against BC (2.5).
        policy_noise: std of the target policy smoothing noise, in [-1, 1] action units (0.2).
        noise_clip: clip of that noise (0.5).
        policy_delay: critic steps per actor and target update (2).
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": TD3BCPolicy, "MultiInputPolicy": TD3BCPolicy}
    policy: TD3BCPolicy
    saved_hyperparameters = (
        *OfflineAlgorithm.saved_hyperparameters,
        "alpha",
        "policy_noise",
        "noise_clip",
        "policy_delay",
    )

    def __init__(
        self,
        policy: str | type[TD3BCPolicy],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        alpha: float = 2.5,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_delay: int = 2,
        **kwargs: Any,
    ) -> None:
        self.alpha = alpha
        self.policy_noise = policy_noise
        self.noise_clip = noise_clip
        self.policy_delay = policy_delay
        super().__init__(policy, env, dataset, **kwargs)

    def train_step(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        policy = self.policy
        with torch.no_grad():
            noise = torch.randn(batch.actions.shape, generator=self.generator, device=self.generator.device)
            noise = (
                (self.policy_noise * noise).clamp(-self.noise_clip, self.noise_clip).to(batch.actions.device)
            )
            next_actions = (policy.actor_target(batch.next_observations) + noise).clamp(-1, 1)
            next_q = min_q(policy.critic_target, batch.next_observations, next_actions)
            target = bellman_target(batch.rewards, batch.dones, next_q, self.gamma)
        stats = fit_twin_critic(
            policy.critic, policy.critic_optimizer, batch.observations, batch.actions, target
        )
        if self._n_updates % self.policy_delay == 0:
            stats |= self._update_actor(batch)
        return stats

    def _update_actor(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        policy = self.policy
        actions = policy.actor(batch.observations)
        q = q_for_actor(policy.critic, batch.observations, actions)[0]
        bc_loss = F.mse_loss(actions, batch.actions)
        loss = -(self.alpha / q.abs().mean().detach()) * q.mean() + bc_loss
        policy.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.actor_optimizer.step()
        soft_update(policy.critic_target, policy.critic, self.tau)
        soft_update(policy.actor_target, policy.actor, self.tau)
        return {"actor_loss": loss, "bc_loss": bc_loss}
