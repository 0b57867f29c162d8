"""IDQL's networks: a diffusion behaviour policy and its EMA, twin critics, their targets and V(s)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from diffgym.activations import Mish
from diffgym.denoisers import ResidualMLPDenoiser
from diffgym.networks import EnsembleMLP, make_adam
from diffgym.policies import DiffusionActorPolicy, NetArchPart
from diffgym.rl import min_q
from diffgym.samplers import Randomness

SELECTIONS = ("argmax", "expectile")
ACTIVATIONS: dict[str, type[nn.Module]] = {"swish": nn.SiLU, "mish": Mish}


def expectile_log_weights(q: Tensor, v: Tensor, expectile: float, min_gap: float = 1e-6) -> Tensor:
    """Log of IDQL's importance weights for an expectile critic (its Eq. for ``w_2``):
    ``w(s, a) = |τ - 1(Q(s, a) < V(s))| / |Q(s, a) - V(s)|``. Shapes: q, v (B,) -> (B,).

    ``min_gap`` bounds ``|Q - V|`` away from 0, where the weight is infinite.
    """
    advantage = q - v
    side = torch.where(advantage < 0, 1.0 - expectile, expectile)
    return side.log() - advantage.abs().clamp_min(min_gap).log()


class IDQLPolicy(DiffusionActorPolicy):
    """The actor is a diffusion model of the behaviour policy ``a ~ μ(a | s)`` (an LN-ResNet
    denoiser); acting samples ``num_candidates`` actions from its EMA and keeps one by the IQL
    critic (see :class:`~diffgym.policies.DiffusionActorPolicy`):

    - ``selection="argmax"``: the candidate with the largest ``min(Q'_1, Q'_2)`` (the official
      code's ``eval_actions``, used for every reported evaluation); ``deterministic=False``
      draws fresh noise and samples ``softmax(min Q')``, the base class's rule.
    - ``selection="expectile"``: the paper's implicit actor ``π(a | s) ∝ μ(a | s) w(s, a)``,
      importance-resampled from the candidates with :func:`expectile_log_weights` as scores, so
      the stochastic choice is categorical with probabilities ``w / Σ w`` and the deterministic
      one the candidate of largest ``w``. The official ``sample_implicit_policy`` uses
      ``|τ - 1(Q < V)|`` without the ``1 / |Q - V|`` factor.

    ``expectile`` (τ) is the algorithm's; :class:`~diffgym.agents.idql.IDQL` sets it here.

    Network arguments (``policy_kwargs``), with the defaults of the official code's final version
    (``philippe-eecs/IDQL``: ``jaxrl5/agents/ddpm_iql_simple`` and
    ``launcher/examples/train_ddpm_iql_offline.py``, project ``offline_schedule_final``):
        num_candidates: actions sampled per state when acting (``N=64``; the launcher also
            evaluates 16 and 256).
        selection: ``"argmax"`` or ``"expectile"`` (see above).
        num_timesteps: diffusion steps T (5).
        beta_schedule: noise schedule (``"vp"``).
        sampler: sampler config, e.g. ``"ddpm"`` or ``{"name": "ddim", "num_steps": 5}`` (DDPM).
        actor_hidden: residual width of the LN-ResNet denoiser (256).
        actor_blocks: its residual blocks (3).
        actor_dropout: dropout in each block while training (0.1).
        time_dim: learned Fourier time features (128; the paper-era ``ddpm_iql`` learner: 64).
        activation: ``"swish"`` (SiLU; final code) or ``"mish"`` (the paper-era learner).
        actor_weight_decay: decoupled (AdamW) weight decay of the actor (optax's default 1e-4 in
            the final code and in today's ``ddpm_iql`` learner, on every parameter; 0 in the
            learner's commits before December 2023).
        critic_hidden: width of the 2 hidden ReLU layers of each Q and of V (256, as IQL).
        value_layer_norm: a LayerNorm on V's input (the final code's ``MLP(use_layer_norm=True)``
            normalises the input once; the paper-era learner has none).
        ema_decay: decay of the EMA actor that acting samples from (0.999: ``actor_tau=0.001``).

    SB3's ``net_arch``: ``pi`` sets ``actor_hidden`` and, by its length, ``actor_blocks`` (residual
    blocks); ``qf`` sets ``critic_hidden`` of the Q networks and V, which have 2 hidden layers, so
    ``qf`` is 2 equal widths. E.g. ``dict(pi=[256] * 3, qf=[256, 256])`` is the default.
    """

    # acting samples from the EMA actor and weighs candidates by the target critic
    derived_state: ClassVar[dict[str, str]] = {"actor.": "ema_actor.module.", "critic.": "critic_target."}

    expectile: float = 0.7
    net_arch_parts: ClassVar[dict[str, NetArchPart]] = {
        "pi": NetArchPart("actor_hidden", "actor_blocks"),
        "qf": NetArchPart("critic_hidden", 2),
    }

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        num_candidates: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, lr_schedule, num_candidates=num_candidates, **kwargs
        )

    def _build(
        self,
        lr_schedule: Schedule,
        selection: str = "argmax",
        num_timesteps: int = 5,
        beta_schedule: str = "vp",
        sampler: str | dict[str, Any] = "ddpm",
        actor_hidden: int = 256,
        actor_blocks: int = 3,
        actor_dropout: float = 0.1,
        time_dim: int = 128,
        activation: str = "swish",
        actor_weight_decay: float = 1e-4,
        critic_hidden: int = 256,
        value_layer_norm: bool = True,
        ema_decay: float = 0.999,
    ) -> None:
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.selection = selection
        denoiser = ResidualMLPDenoiser(
            x_dim=self.action_dim,
            cond_dim=self.obs_dim,
            hidden_dim=actor_hidden,
            num_blocks=actor_blocks,
            dropout=actor_dropout,
            time_dim=time_dim,
            activation=ACTIVATIONS[activation],
        )
        self._build_actor(denoiser, num_timesteps, beta_schedule, sampler, ema_decay)
        mlp: dict[str, Any] = dict(hidden_dim=critic_hidden, num_hidden=2, activation=nn.ReLU)  # IQL's
        self._build_twin_critic(**mlp)
        value = EnsembleMLP(self.obs_dim, 1, members=1, **mlp)
        self.value_net = nn.Sequential(nn.LayerNorm(self.obs_dim), value) if value_layer_norm else value
        lr = lr_schedule(1)
        self.actor_optimizer = make_adam(
            self.actor.parameters(), lr=lr, weight_decay=actor_weight_decay, decoupled_weight_decay=True
        )
        self.critic_optimizer = make_adam(self.critic.parameters(), lr=lr)
        self.value_optimizer = make_adam(self.value_net.parameters(), lr=lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "value": self.value_optimizer}

    def train(self, mode: bool = True) -> IDQLPolicy:
        """Set the training mode; the EMA actor only samples, so it stays in eval (no dropout)."""
        super().train(mode)
        self.ema_actor.eval()
        return self

    def value(self, features: Tensor) -> Tensor:
        """V(s): (B, obs_dim) -> (B,)."""
        return self.value_net(features).view(-1)

    def sample_actions(self, features: Tensor, generator: Randomness) -> Tensor:
        """Behaviour-policy samples from the EMA actor: (B, obs_dim) -> (B, action_dim) in [-1, 1]."""
        return self.sample_from(self.ema_model, features, generator)

    def score_actions(self, features: Tensor, actions: Tensor) -> Tensor:
        """``min(Q'_1, Q'_2)`` (argmax) or ``log w`` (expectile): (B, obs_dim), (B, action_dim) -> (B,)."""
        q = min_q(self.critic_target, features, actions)
        if self.selection == "argmax":
            return q
        return expectile_log_weights(q, self.value(features), self.expectile)
