"""IQL (Kostrikov, Nair & Levine, "Offline RL with Implicit Q-Learning", ICLR 2022) with its Gaussian
actor: the advantage-weighted-regression offline baseline of our benchmarks.

Built on the same SB3 base as the diffusion agents (like :class:`~diffgym.agents.baselines.TD3BC`), so
it trains on the same batches and is evaluated by the same code. Its critic is IDQL's (IDQL reuses
IQL's critic unchanged); its actor is a Gaussian fitted by advantage-weighted regression instead of
a diffusion model.

Each gradient step, on one batch, in the official code's order:

1. **Value**: ``V(s)`` minimises the expectile loss of ``min(Q'_1, Q'_2)(s, a) - V(s)``.
2. **Actor**: maximises ``min(exp(β (min Q'(s, a) - V(s))), 100) · log π(a | s)`` (the new V).
3. **Critic**: twin Q regress on ``r + γ (1 - done) V(s')`` (the new V); Polyak targets.

Paper defaults (official ``ikostrikov/implicit_q_learning`` configs): twin Q and V 256-256 ReLU;
actor 256-256 ReLU with ``mean = tanh(linear)``, a state-independent log-std (initialised at 0,
clipped to [-5, 2]), no tanh-squashed distribution; every lr 3e-4, the actor's on a cosine decay to
0 over training; batch 256; γ 0.99; τ 0.005. Locomotion: expectile 0.7, β 3, no dropout, rewards
scaled by ``1000 / (max - min episode return)`` (``reward_scale="iql"``). Antmaze: expectile 0.9,
β 10, ``reward_scale=1.0, reward_bias=-1.0``. Evaluation acts with the mean.

Deliberate differences:

- Observations are standardised (the base's default for every agent here; IQL feeds raw states):
  ``policy_kwargs=dict(normalize_observations=False)`` restores the paper's inputs.
- torch's default initialisation where the official code uses orthogonal(√2); no actor dropout
  (the official kitchen config's 0.1 is not among our benchmarks).
- ``reward_scale="iql"`` is computed once, on the first dataset, and saved as a number.
- Offline ``total_timesteps`` counts gradient steps (see :class:`OfflineAlgorithm`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples, Schedule
from torch import Tensor, nn

from diffgym.agents.baselines.single_action import SingleActionPolicy
from diffgym.algorithm import OfflineAlgorithm
from diffgym.data import DatasetLike
from diffgym.networks import EnsembleMLP, make_adam, soft_update
from diffgym.rl import bellman_target, fit_expectile_value, fit_twin_critic, min_q, twin_critic
from diffgym.samplers import Randomness, draw_noise

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the official clip of the actor's log-std
MAX_WEIGHT = 100.0  # the official cap on the AWR weight exp(β A)


class IQLPolicy(SingleActionPolicy):
    """Gaussian actor ``N(tanh(f(s)), diag(exp(log_std))²)``, twin critics with targets, and V(s).

    Acting: ``deterministic=True`` returns the mean; ``deterministic=False`` samples and clips to
    [-1, 1] (the official evaluation clips too).

    Network arguments (``policy_kwargs``):
        hidden_dim: width of the 2 hidden ReLU layers of the actor, each Q and V (256). SB3's
            ``net_arch`` sets it too: 2 equal widths, the same for ``pi`` and ``qf``.
    """

    derived_state: ClassVar[dict[str, str]] = {"critic_target.": "critic."}

    def _build(self, lr_schedule: Schedule, hidden_dim: int = 256) -> None:
        mlp: dict[str, Any] = dict(hidden_dim=hidden_dim, num_hidden=2, activation=nn.ReLU)
        self.actor = EnsembleMLP(self.obs_dim, self.action_dim, members=1, **mlp)  # tanh in ``mean``
        self.log_std = nn.Parameter(torch.zeros(self.action_dim))  # state-independent, std 1 at first
        self.critic, self.critic_target = twin_critic(self.obs_dim, self.action_dim, **mlp)
        self.value_net = EnsembleMLP(self.obs_dim, 1, members=1, **mlp)
        lr = lr_schedule(1)
        self.actor_optimizer = make_adam([*self.actor.parameters(), self.log_std], lr=lr)
        self.critic_optimizer = make_adam(self.critic.parameters(), lr=lr)
        self.value_optimizer = make_adam(self.value_net.parameters(), lr=lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "value": self.value_optimizer}

    def value(self, features: Tensor) -> Tensor:
        """V(s): (B, obs_dim) -> (B,)."""
        return self.value_net(features).view(-1)

    def mean(self, features: Tensor) -> Tensor:
        """The actor's mean in [-1, 1]: (B, obs_dim) -> (B, action_dim)."""
        return torch.tanh(self.actor(features)[0])

    def clipped_log_std(self) -> Tensor:
        return self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def log_prob(self, features: Tensor, actions: Tensor) -> Tensor:
        """``log π(a | s)`` of the diagonal Gaussian: (B, obs_dim), (B, action_dim) -> (B,)."""
        log_std = self.clipped_log_std()
        z = (actions - self.mean(features)) * torch.exp(-log_std)
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)

    def sample_actions(self, features: Tensor, generator: Randomness) -> Tensor:
        """A Gaussian sample clipped to [-1, 1]: (B, obs_dim) -> (B, action_dim)."""
        mean = self.mean(features)
        noise = draw_noise(generator, tuple(mean.shape), mean.device, mean.dtype)
        return (mean + self.clipped_log_std().exp() * noise).clamp(-1, 1)

    def score_actions(self, features: Tensor, actions: Tensor) -> Tensor:
        return torch.zeros(features.shape[0], device=features.device)

    def select_actions(self, features: Tensor, deterministic: bool) -> Tensor:
        if deterministic:
            return self.mean(features)
        return self.sample_actions(features, self.sampling_generator)


class IQL(OfflineAlgorithm):
    """IQL: an expectile value, twin Q on ``r + γ V(s')``, and a Gaussian actor fitted by AWR.

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        expectile: τ of the value's expectile regression (0.7 locomotion, 0.9 antmaze).
        beta: inverse temperature β of the AWR weights ``exp(β A)`` (3 locomotion, 10 antmaze;
            the official code's ``temperature``). 0 is plain behaviour cloning.
        reward_scale: a number, or ``"iql"`` for ``1000 / (max - min)`` of the dataset's episode
            returns (IQL's locomotion normalisation; needs a dataset).
        lr_decay_steps: gradient steps over which the actor's learning rate is cosine-annealed to
            0 (official: the whole 1M-step run; critic and value keep a constant rate). Set it to
            your total budget to anneal as the paper does; None: constant.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": IQLPolicy, "MultiInputPolicy": IQLPolicy}
    #: the schedule (and ``lr_decay_steps``) drives the actor only, as in the official code
    scheduled_optimizers = ("actor",)
    policy: IQLPolicy
    saved_hyperparameters = (*OfflineAlgorithm.saved_hyperparameters, "expectile", "beta")

    def __init__(
        self,
        policy: str | type[IQLPolicy],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        expectile: float = 0.7,
        beta: float = 3.0,
        reward_scale: float | str = "iql",
        lr_decay_steps: int | None = 1_000_000,
        **kwargs: Any,
    ) -> None:
        self.expectile = expectile
        self.beta = beta
        super().__init__(
            policy, env, dataset, reward_scale=reward_scale, lr_decay_steps=lr_decay_steps, **kwargs
        )

    def train_step(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        policy = self.policy
        with torch.no_grad():
            q = min_q(policy.critic_target, batch.observations, batch.actions)
        stats = fit_expectile_value(
            policy.value, policy.value_optimizer, batch.observations, q, self.expectile
        )

        with torch.no_grad():  # the updated V, at s and s' in one forward
            v, next_v = policy.value(torch.cat([batch.observations, batch.next_observations])).chunk(2)
            weight = torch.exp(self.beta * (q - v)).clamp(max=MAX_WEIGHT)
            target = bellman_target(batch.rewards, batch.dones, next_v, self.gamma)
        actor_loss = -(weight * policy.log_prob(batch.observations, batch.actions)).mean()
        policy.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        policy.actor_optimizer.step()

        # official: (q1 - y)² + (q2 - y)², unclipped
        stats |= fit_twin_critic(
            policy.critic, policy.critic_optimizer, batch.observations, batch.actions, target
        )
        soft_update(policy.critic_target, policy.critic, self.tau)
        return stats | {"actor_loss": actor_loss.detach(), "awr_weight": weight.mean()}
