"""IDQL: an IQL critic and a diffusion behaviour policy, acting by resampling with the critic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples
from torch import Tensor

from diffgym.agents.idql.policies import IDQLPolicy
from diffgym.algorithm import OfflineAlgorithm
from diffgym.data import DatasetLike
from diffgym.networks import soft_update
from diffgym.rl import bellman_target, fit_expectile_value, fit_twin_critic, gradient_norm, min_q


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's global RNG for ``device`` (CPU or CUDA) seeded, then restore it."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        else:
            torch.random.default_generator.manual_seed(seed)
        yield


class IDQL(OfflineAlgorithm):
    """IDQL (Hansen-Estruch, Kostrikov, Janner, Kuba & Levine, "IDQL: Implicit Q-Learning as an
    Actor-Critic Method with Diffusion Policies", 2023), as an SB3 algorithm.

    Each gradient step, on one batch (the critic never sees the actor):

    1. **Value**: ``V(s)`` minimises the expectile loss of ``min(Q'_1, Q'_2)(s, a) - V(s)``
       (target critics, dataset actions).
    2. **Critic**: twin Q networks regress on ``r + γ (1 - done) V(s')`` (the updated V), both
       in one batched forward; Polyak target critics (``tau``).
    3. **Actor**: the diffusion model learns the behaviour policy by the denoising loss alone;
       an EMA of it (decay ``ema_decay``, every step) is what acting samples from.

    Acting draws ``num_candidates`` actions from the EMA actor and keeps one by the critic
    (:class:`~diffgym.agents.idql.IDQLPolicy`: greedy ``argmax`` or the paper's ``expectile``
    importance weights).

    Defaults, from the official code's final version (``philippe-eecs/IDQL``: the
    ``ddpm_iql_simple`` learner and ``launcher/examples/train_ddpm_iql_offline.py``, project
    ``offline_schedule_final``): ``expectile=0.7`` on locomotion (0.9 on antmaze); every learning
    rate 3e-4; one batch of 512 for actor, value and critics; ``gamma=0.99``; ``tau=0.005``;
    critics 256 × 2; T = 5, ``vp`` schedule; an LN-ResNet 256 wide, 3 blocks, dropout 0.1, swish,
    128 learned Fourier time features; V with a LayerNorm on its input; the actor by AdamW
    (weight decay 1e-4), its rate cosine-annealed over the 3M-step run (``lr_decay_steps``);
    EMA 0.999 (``actor_tau=0.001``); N = 64 candidates (see
    :class:`~diffgym.agents.idql.IDQLPolicy` for the network settings and the paper-era learner's
    values). Rewards: locomotion uses ``reward_scale="iql"`` (the default); antmaze uses
    ``reward_scale=1.0, reward_bias=-1.0`` and ``expectile=0.9``.

    Deliberate differences:

    - torch's default initialisation where jaxrl5 uses Xavier-uniform; the actor loss averages
      over action dimensions where the official one sums them (a constant factor, absorbed by
      Adam's normalisation).
    - The sampler clips the x0 estimate to [-1, 1] at each step with the posterior variance
      ``beta~_t`` (Diffusion-QL's sampler, shared with every action-diffusion agent here); the
      official one clips ``x_t`` and adds ``sqrt(beta_t)`` noise, so its candidates are more spread
      before the critic picks one.
    - The EMA copies the actor for the first ``ema_start`` steps instead of starting from the
      random initial weights, so short runs act with a trained model (the official 3M steps
      make the difference vanish).
    - ``reward_scale="iql"`` is computed once, on the first dataset, and saved as a number.
    - Online fine-tuning trains actor and critics on uniform replay batches of dataset and new
      experience (the official variant (2); its variant (1) freezes the actor, and both draw
      half of each batch from each source).
    - Offline ``total_timesteps`` counts gradient steps (see :class:`OfflineAlgorithm`).

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        expectile: IQL's τ for V (0.7 locomotion, 0.9 antmaze); also the selection weights' τ.
        reward_scale: a number, or ``"iql"`` for ``1000 / (max - min)`` of the dataset's episode
            returns (IQL's and IDQL's locomotion normalisation; needs a dataset).
        ema_start: gradient steps during which the EMA actor copies the actor (1000).
        batch_size: transitions per gradient step, shared by actor, value and critics (512).
        lr_decay_steps: gradient steps over which the actor's learning rate is cosine-annealed to
            0 (official: 3M, the whole run; critics keep a constant rate). Set it to your total
            budget to anneal as the paper does; None: constant. ``learning_rate`` schedules also
            drive the actor only.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": IDQLPolicy, "MultiInputPolicy": IDQLPolicy}
    #: the schedule (and ``lr_decay_steps``) drives the actor only, as in the official code
    scheduled_optimizers = ("actor",)
    policy: IDQLPolicy
    saved_hyperparameters = (*OfflineAlgorithm.saved_hyperparameters, "expectile", "ema_start")

    def __init__(
        self,
        policy: str | type[IDQLPolicy],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        expectile: float = 0.7,
        reward_scale: float | str = "iql",
        ema_start: int = 1000,
        batch_size: int = 512,
        lr_decay_steps: int | None = 3_000_000,
        **kwargs: Any,
    ) -> None:
        self.expectile = expectile
        self.ema_start = ema_start
        super().__init__(
            policy,
            env,
            dataset,
            reward_scale=reward_scale,
            batch_size=batch_size,
            lr_decay_steps=lr_decay_steps,
            **kwargs,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        self.policy.expectile = self.expectile

    def train_step(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        value_stats = self._update_value(batch)
        critic_stats = self._update_critic(batch)
        actor_stats = self._update_actor(batch)
        self._update_targets()
        return {**value_stats, **critic_stats, **actor_stats}

    def _update_value(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        policy = self.policy
        with torch.no_grad():
            q = min_q(policy.critic_target, batch.observations, batch.actions)
        return fit_expectile_value(
            policy.value, policy.value_optimizer, batch.observations, q, self.expectile
        )

    def _update_critic(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        policy = self.policy
        with torch.no_grad():
            next_v = policy.value(batch.next_observations)
            target = bellman_target(batch.rewards, batch.dones, next_v, self.gamma)
        # the official loss averages over the twins; IDQL does not clip gradients
        return fit_twin_critic(
            policy.critic,
            policy.critic_optimizer,
            batch.observations,
            batch.actions,
            target,
            reduce_members="mean",
        )

    def _update_actor(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        policy = self.policy
        # nn.Dropout draws from the global RNG: seed it by (seed, step) so saved models resume exactly
        with seeded_global_rng(((self.seed or 0) << 32) + self._n_updates, self.device):
            loss = policy.actor.loss(batch.actions, batch.observations, generator=self.generator)
        policy.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = gradient_norm(policy.actor.parameters())
        policy.actor_optimizer.step()
        return {"actor_loss": loss.detach(), "actor_grad_norm": norm}

    def _update_targets(self) -> None:
        policy = self.policy
        policy.ema_actor.update(policy.actor, self._n_updates, self.ema_start)
        soft_update(policy.critic_target, policy.critic, self.tau)
