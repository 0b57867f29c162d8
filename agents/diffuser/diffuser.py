"""DiffuserPlanner: planning by trajectory diffusion (Diffuser), with a Decision-Diffuser mode
(also as :class:`DecisionDiffuser`)."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from torch import Tensor

from diffgym.agents.diffuser.policies import DecisionDiffuserPolicy, DiffuserPolicy, Mode, SingleAgentPlanner
from diffgym.data import DatasetLike
from diffgym.guidance import Inpainting
from diffgym.planning import PlanningAlgorithm
from diffgym.trajectory import SegmentSamples

#: The policy of each mode.
POLICIES: dict[Mode, type[SingleAgentPlanner]] = {
    "diffuser": DiffuserPolicy,
    "decision_diffuser": DecisionDiffuserPolicy,
}


def _mode_settings(mode: Mode) -> set[str]:
    """The settings only ``mode``'s policy takes (its ``_build_mode``'s arguments)."""
    return set(inspect.signature(POLICIES[mode]._build_mode).parameters) - {"self", "lr_schedule"}


def _settings_of_mode(mode: Mode, policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``policy_kwargs`` without the settings only the other mode's policy takes, so that one dict
    can serve both modes (as the policy of one class did before the modes had a class each)."""
    others = {name for other in POLICIES if other != mode for name in _mode_settings(other)}
    ignored = others - _mode_settings(mode)
    return {key: value for key, value in (policy_kwargs or {}).items() if key not in ignored}


class DiffuserPlanner(PlanningAlgorithm):
    """Diffuser (Janner, Du, Tenenbaum & Levine, "Planning with Diffusion for Flexible Behavior
    Synthesis", ICML 2022) and, with ``mode="decision_diffuser"``, Decision Diffuser (Ajay et al.,
    "Is Conditional Generative Modeling all you need for Decision-Making?", ICLR 2023), as an SB3
    algorithm that learns offline from a dataset's trajectory segments.

    ``mode`` picks the policy: :class:`~diffgym.agents.diffuser.DiffuserPolicy` or
    :class:`~diffgym.agents.diffuser.DecisionDiffuserPolicy` (both on the core planner base,
    :mod:`diffgym.planning`). Each gradient step (a batch of ``batch_size`` segments of ``horizon``
    steps), with the first state inpainted (and the last, for goal tasks):

    - **Diffuser** (:meth:`_update_diffusion`, :meth:`_update_value`): the temporal U-Net learns to
      denoise ``[action, state]`` trajectories, x0-prediction, the first action's loss weighted by
      ``action_weight``; the value network regresses the standardised discounted return-to-go
      (discount ``gamma``) of the segment from its noisy version at a random step.
    - **Decision Diffuser** (:meth:`~diffgym.planning.PlanningAlgorithm._update_return_conditioned`):
      the U-Net denoises state trajectories conditioned on the segment's normalised return, the
      condition dropped with probability ``cond_drop_prob``; the inverse-dynamics model regresses
      ``a_t`` from ``(s_t, s_{t+1})`` on real steps; the two losses are averaged (DD's
      ``(diffusion + inverse) / 2``).
    - The EMA of the diffusion model starts after ``ema_start`` steps, updated every ``ema_every``.

    Acting inpaints the current state, samples plans, keeps the best by value (Diffuser) or recovers
    actions by inverse dynamics (DD), and executes ``n_action_steps`` of them. ``predict`` follows
    SB3's recurrent-policy convention: pass the returned state back (``evaluate_policy`` does) to
    execute a plan over several steps.

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
      states by inpainting alone, which the network learns to propagate only slowly at CPU budgets
      (measured; see zoo/results/README.md). The maze and hopper DD benchmarks use it.
    - Offline only: ``learn(online=True)`` raises. ``total_timesteps`` counts gradient steps.

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        mode: ``"diffuser"`` or ``"decision_diffuser"``: which policy (saved with the model).
        learning_rate: Adam learning rate (Diffuser: 2e-4; DD: 2e-4).
        batch_size: segments per gradient step (Diffuser: 32; DD: 32).
        gamma: discount of the returns the value (or return condition) learns (Diffuser's value: 0.997
            on locomotion; DD: 0.99).
        ema_start: gradient steps before the EMA starts averaging (Diffuser: 2000).
        ema_every: gradient steps between EMA updates (Diffuser: 10).
        policy_kwargs: the policy's settings; those only the other mode's policy takes are ignored,
            so that one dict serves both modes.
    """

    policy_aliases: ClassVar[dict[str, type]] = {
        "MlpPolicy": DiffuserPolicy,
        "MultiInputPolicy": DiffuserPolicy,
    }
    policy: SingleAgentPlanner
    saved_hyperparameters = (*PlanningAlgorithm.saved_hyperparameters, "mode")

    def __init__(
        self,
        policy: str | type[SingleAgentPlanner],
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
        if mode not in POLICIES:
            raise ValueError(f"mode must be 'diffuser' or 'decision_diffuser', got {mode!r}")
        if not isinstance(policy, str) and not issubclass(policy, POLICIES[mode]):
            raise TypeError(f"mode {mode!r} plans with a {POLICIES[mode].__name__}, got {policy.__name__}")
        self.mode = mode
        super().__init__(
            policy,
            env,
            dataset,
            ema_start=ema_start,
            ema_every=ema_every,
            learning_rate=learning_rate,
            batch_size=batch_size,
            gamma=gamma,
            policy_kwargs=_settings_of_mode(mode, policy_kwargs),
            **kwargs,
        )

    def _get_policy_from_name(self, policy_name: str) -> type[BasePolicy]:
        """``"MlpPolicy"`` and ``"MultiInputPolicy"`` name the policy of ``mode``."""
        super()._get_policy_from_name(policy_name)  # refuses unknown names
        return POLICIES[self.mode]

    def train_step(self, batch: SegmentSamples) -> dict[str, Tensor]:
        """One gradient step: the segments' plans ``x0`` with their first state (and, for goal tasks,
        their last) inpainted, as planning will; then Decision Diffuser's return-conditioned step, or
        Diffuser's diffusion and value steps; then the EMA."""
        policy = self.policy
        x0 = policy.trajectories(batch.observations, batch.actions)  # (B, H, x_dim)
        states = policy.states_of(x0)
        first = states[:, 0]
        last = states[:, -1] if policy.goal_slice is not None else None  # the goal state
        inpainting = policy.inpainting(x0.shape, first, last)
        if isinstance(policy, DecisionDiffuserPolicy):
            cond = policy.unet_condition(first, last, policy.return_condition(batch.returns))
            stats = self._update_return_conditioned(batch, x0, inpainting, cond)
        else:
            assert isinstance(policy, DiffuserPolicy)
            stats = self._update_diffusion(x0, inpainting, policy.unet_condition(first, last))
            if policy.value is not None:
                stats.update(self._update_value(batch, x0, inpainting))
        self._update_ema()
        return stats

    def _update_diffusion(self, x0: Tensor, inpainting: Inpainting, cond: Tensor | None) -> dict[str, Tensor]:
        """Diffuser's denoising loss on ``[action, state]`` plans, the first action weighted."""
        policy = self.policy
        assert isinstance(policy, DiffuserPolicy)
        loss = policy.model.loss(
            x0, cond, weights=policy.loss_weights, inpainting=inpainting, generator=self.generator
        )
        policy.model_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.model_optimizer.step()
        return {"diffusion_loss": loss}

    def _update_value(self, batch: SegmentSamples, x0: Tensor, inpainting: Inpainting) -> dict[str, Tensor]:
        """The value network regresses the segment's standardised return from its noisy version at a
        random step (inpainted, as sampling sees it), so that it can guide every denoising step."""
        policy = self.policy
        assert isinstance(policy, DiffuserPolicy)
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


class DecisionDiffuser(DiffuserPlanner):
    """Decision Diffuser as an algorithm of its own: ``DiffuserPlanner(mode="decision_diffuser")``
    (see :class:`DiffuserPlanner`), with DD's discount of the returns it conditions on (0.99) as
    the default."""

    saved_hyperparameters = PlanningAlgorithm.saved_hyperparameters

    def __init__(
        self,
        policy: str | type[SingleAgentPlanner],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        gamma: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, dataset, mode="decision_diffuser", gamma=gamma, **kwargs)
