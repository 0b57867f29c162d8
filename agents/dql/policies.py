"""Diffusion-QL's networks: a diffusion actor over actions, its EMA, twin critics and targets."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor

from diffgym.denoisers import MLPDenoiser
from diffgym.networks import make_adam
from diffgym.policies import DiffusionActorPolicy, NetArchPart
from diffgym.rl import min_q
from diffgym.samplers import Randomness


class DiffusionQLPolicy(DiffusionActorPolicy):
    """The actor is a conditional diffusion model ``a ~ p(a | s)``; acting samples 50 candidates
    from it and keeps one by the target critics' ``min(Q1, Q2)`` (Diffusion-QL's
    ``sample_action``; see :class:`~diffgym.policies.DiffusionActorPolicy`).

    Network arguments (``policy_kwargs``), with the paper's defaults:
        num_timesteps: diffusion steps T (5).
        beta_schedule: noise schedule (``"vp"``).
        sampler: sampler config, e.g. ``"ddpm"`` or ``{"name": "ddim", "num_steps": 5}`` (DDPM).
        actor_hidden: width of the MLP denoiser (256).
        critic_hidden: width of each critic's 3 hidden Mish layers (256).
        ema_decay: decay of the EMA actor that proposes the critic's next actions (0.995).

    SB3's ``net_arch``: ``pi`` sets ``actor_hidden`` and ``qf`` ``critic_hidden``; both networks
    have 3 hidden layers (the paper's), so each part is 3 equal widths, e.g. ``[256, 256, 256]``.
    """

    # acting samples from the actor (the EMA only makes the critic's targets) and ranks by the target critic
    derived_state: ClassVar[dict[str, str]] = {"ema_actor.module.": "actor.", "critic.": "critic_target."}

    net_arch_parts: ClassVar[dict[str, NetArchPart]] = {
        "pi": NetArchPart("actor_hidden", 3),
        "qf": NetArchPart("critic_hidden", 3),
    }

    def _build(
        self,
        lr_schedule: Schedule,
        num_timesteps: int = 5,
        beta_schedule: str = "vp",
        sampler: str | dict[str, Any] = "ddpm",
        actor_hidden: int = 256,
        critic_hidden: int = 256,
        ema_decay: float = 0.995,
    ) -> None:
        denoiser = MLPDenoiser(x_dim=self.action_dim, cond_dim=self.obs_dim, hidden_dim=actor_hidden)
        self._build_actor(denoiser, num_timesteps, beta_schedule, sampler, ema_decay)
        self._build_twin_critic(hidden_dim=critic_hidden)  # 3 hidden Mish layers, as the paper
        self.actor_optimizer = make_adam(self.actor.parameters(), lr=lr_schedule(1))
        self.critic_optimizer = make_adam(self.critic.parameters(), lr=lr_schedule(1))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def sample_actions(self, features: Tensor, generator: Randomness, differentiable: bool = False) -> Tensor:
        return self.sample_from(self.actor, features, generator, differentiable)

    def sample_target_actions(self, features: Tensor, generator: Randomness) -> Tensor:
        """Next actions for the critic's target, from the EMA actor: (B, obs_dim) -> (B, action_dim)."""
        return self.sample_from(self.ema_model, features, generator)

    def score_actions(self, features: Tensor, actions: Tensor) -> Tensor:
        return min_q(self.critic_target, features, actions)
