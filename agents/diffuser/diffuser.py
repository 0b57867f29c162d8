"""DiffuserPlanner: planning by trajectory diffusion (Diffuser), with a Decision-Diffuser mode."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import GymEnv
from torch import Tensor

from diffgym.agents.diffuser.policies import DiffuserPolicy, Mode
from diffgym.data import DatasetLike
from diffgym.ema import update_ema
from diffgym.trajectory import SegmentSamples, SequenceAlgorithm, inverse_dynamics_loss


class DiffuserPlanner(SequenceAlgorithm):
    """Diffuser (Janner, Du, Tenenbaum & Levine, "Planning with Diffusion for Flexible Behavior
    Synthesis", ICML 2022) and, with ``mode="decision_diffuser"``, Decision Diffuser (Ajay et al.,
    "Is Conditional Generative Modeling all you need for Decision-Making?", ICLR 2023), as an SB3
    algorithm that learns offline from a dataset's trajectory segments.

    Each gradient step (a batch of ``batch_size`` segments of ``horizon`` steps):

    - **Diffuser**: the temporal U-Net learns to denoise ``[action, state]`` trajectories with the
      first state inpainted (and the last, for goal tasks), x0-prediction, the first action's loss
      weighted by ``action_weight``; the value network regresses the standardised discounted
      return-to-go (discount ``gamma``) of the segment from its noisy version at a random step.
    - **Decision Diffuser**: the U-Net denoises state trajectories conditioned on the segment's
      normalised return, the condition dropped with probability ``cond_drop_prob``;
      the inverse-dynamics model regresses ``a_t`` from ``(s_t, s_{t+1})`` on real steps; the two
      losses are averaged (DD's ``(diffusion + inverse) / 2``).
    - The EMA of the diffusion model starts after ``ema_start`` steps, updated every ``ema_every``.

    Acting (see :class:`~diffgym.agents.diffuser.DiffuserPolicy`) inpaints the current state,
    samples plans, keeps the best by value (Diffuser) or recovers actions by inverse dynamics (DD),
    and executes ``n_action_steps`` of them. ``predict`` follows SB3's recurrent-policy convention:
    pass the returned state back (``evaluate_policy`` does) to execute a plan over several steps.

    Deliberate differences:

    - Diffuser: observations are standardised (its locomotion normaliser; its maze2d setting uses
      min-max limits), actions scaled to [-1, 1] by the action bounds; x0 is not clipped.
      DD: observations are mapped to [-1, 1] by the data's min and max and x0 is clipped there; DD
      maps them by each dimension's empirical CDF instead, which spreads heavy-tailed dimensions.
    - The value network pools over the horizon (see :class:`~diffgym.denoisers.TemporalValueNet`)
      and learns the standardised return, so ``guide_scale`` is in standard deviations of return;
      guidance is one score-form step per denoising step (Diffuser takes ``n_guide_steps=2``
      gradient steps on the mean).
    - DD's return condition is the return's position in the dataset's range ([0, 1]), where DD
      divides by a hand-set per-task scale; DD's history conditioning is not used (one state).
    - Diffuser's maze2d execution (one plan per episode, followed by a PD controller on the planned
      states) is ``policy_kwargs=dict(tracking=(1.0, 1.0), n_action_steps=<episode length>)``; by
      default the planned actions are executed and the plan redrawn every ``n_action_steps``.
    - ``endpoint_condition=True`` (off by default) also feeds the inpainted start / goal to the U-Net
      as its condition vector (DD: after the return, dropped with it). Both papers condition on
      states by inpainting alone, which the network learns to propagate only slowly: after 1k
      CPU-budget steps on maze2d-umaze Diffuser's x0 estimate at the noisiest step ignored the start
      (error 0.59 next to it, as far away as anywhere), with the condition it was 0.19; after 5k
      steps on hopper-medium DD's planned s_1 was 0.36 (RMS, in [-1, 1] units) from the real one,
      where a step moves the state by 0.06. The maze and hopper DD benchmarks use it.
    - Offline only: ``learn(online=True)`` raises. ``total_timesteps`` counts gradient steps.

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        mode: ``"diffuser"`` or ``"decision_diffuser"`` (passed to the policy).
        learning_rate: Adam learning rate (Diffuser: 2e-4; DD: 2e-4).
        batch_size: segments per gradient step (Diffuser: 32; DD: 32).
        gamma: discount of the returns the value (or return condition) learns (Diffuser's value: 0.997
            on locomotion; DD: 0.99).
        ema_start: gradient steps before the EMA starts averaging (Diffuser: 2000).
        ema_every: gradient steps between EMA updates (Diffuser: 10).
    """

    policy_aliases: ClassVar[dict[str, type]] = {
        "MlpPolicy": DiffuserPolicy,
        "MultiInputPolicy": DiffuserPolicy,
    }
    policy: DiffuserPolicy
    saved_hyperparameters = (*SequenceAlgorithm.saved_hyperparameters, "mode", "ema_start", "ema_every")

    def __init__(
        self,
        policy: str | type[DiffuserPolicy],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        mode: Mode = "diffuser",
        learning_rate: float = 2e-4,
        batch_size: int = 32,
        gamma: float = 0.997,
        ema_start: int = 2000,
        ema_every: int = 10,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.mode = mode
        self.ema_start = ema_start
        self.ema_every = ema_every
        policy_kwargs = {**(policy_kwargs or {}), "mode": mode}
        super().__init__(
            policy,
            env,
            dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            gamma=gamma,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    def train_step(self, batch: SegmentSamples) -> dict[str, Tensor]:
        policy = self.policy
        x0 = policy.trajectories(batch.observations, batch.actions)
        states = policy.states_of(x0)
        goal_task = policy.goal_slice is not None
        last = states[:, -1] if goal_task else None
        inpainting = policy.conditioning(x0, states[:, 0], last)
        cond = policy.unet_condition(states[:, 0], last, policy.return_condition(batch.returns))
        stats = self._model_step(batch, x0, inpainting, cond)
        if policy.value is not None:
            stats.update(self._value_step(batch, x0, inpainting))
        update_ema(policy.ema, policy.model, self._n_updates, self.ema_start, self.ema_every)
        return stats

    def _model_step(
        self, batch: SegmentSamples, x0: Tensor, inpainting: Any, cond: Tensor | None
    ) -> dict[str, Tensor]:
        policy = self.policy
        if policy.inverse is None:
            loss = policy.model.loss(
                x0, cond, weights=policy.loss_weights, inpainting=inpainting, generator=self.generator
            )
            stats = {"diffusion_loss": loss}
        else:
            diffusion = policy.model.loss(
                x0,
                cond,
                cond_drop_prob=policy.cond_drop_prob,
                inpainting=inpainting,
                generator=self.generator,
            )
            inverse = self._inverse_loss(batch, policy.states_of(x0))
            loss = (diffusion + inverse) / 2
            stats = {"diffusion_loss": diffusion, "inverse_loss": inverse}
        policy.model_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.model_optimizer.step()
        return stats

    def _inverse_loss(self, batch: SegmentSamples, states: Tensor) -> Tensor:
        assert self.policy.inverse is not None
        predicted = self.policy.inverse(states[:, :-1], states[:, 1:])
        return inverse_dynamics_loss(predicted, batch.actions, batch.mask)

    def _value_step(self, batch: SegmentSamples, x0: Tensor, inpainting: Any) -> dict[str, Tensor]:
        policy = self.policy
        assert policy.value is not None and policy.value_optimizer is not None
        model = policy.model
        t = torch.randint(
            0, model.num_timesteps, (x0.shape[0],), generator=self.generator, device=self.device
        )
        noise = torch.randn(x0.shape, generator=self.generator, device=self.device)
        noisy = inpainting.apply(model.schedule.q_sample(x0, t, noise))
        target = policy.value_normalizer.normalize(batch.returns[:, None]).squeeze(1)
        loss = F.mse_loss(policy.value(noisy, t), target)
        policy.value_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.value_optimizer.step()
        return {"value_loss": loss}
