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


#: how the planners cut training windows from the data (saved with the model)
SEGMENT_OPTIONS = ("termination_penalty", "use_padding", "join_episodes")


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
      ``action_weight``; the value network regresses the raw discounted return-to-go (discount
      ``gamma``) of the segment from its noisy version at a random step (Diffuser's
      ``ValueDataset(normed=False)``).
    - **Decision Diffuser** (:meth:`~diffgym.planning.PlanningAlgorithm._update_return_conditioned`):
      the U-Net denoises state trajectories conditioned on the segment's normalised return, the
      condition dropped with probability ``cond_drop_prob``; the inverse-dynamics model regresses
      ``a_t`` from ``(s_t, s_{t+1})`` on real steps; the two losses are averaged (DD's
      ``(diffusion + inverse) / 2``).
    - The EMA of the diffusion model (and Diffuser's value network: its value trainer keeps one on the
      same calendar, and plans with it) starts after ``ema_start`` steps, updated every ``ema_every``.

    Acting inpaints the current state, samples plans from the EMA model (Diffuser: nudging each
    noisy plan ``n_guide_steps`` times by ``guide_scale · beta~_t · ∇V`` of the EMA value, as its
    ``n_step_guided_p_sample``; DD: at temperature 0.5, as its ``p_sample_loop``), keeps the best by
    value (Diffuser) or recovers actions by inverse dynamics (DD), and executes ``n_action_steps`` of
    them. ``predict`` follows
    SB3's recurrent-policy convention: pass the returned state back (``evaluate_policy`` does) to
    execute a plan over several steps.

    Deliberate differences:

    - Diffuser: observations are standardised (its locomotion normaliser; its maze2d setting uses
      min-max limits), actions scaled to [-1, 1] by the action bounds; x0 is not clipped.
      DD: observations through each dimension's empirical CDF, from quantile knots (see
      :class:`~diffgym.normalizers.CDFNormalizer`), x0 clipped to [-1, 1].
    - ``batch_size`` 64 is one batch where both papers accumulate the gradients of two batches of 32
      (``gradient_accumulate_every=2``): the same mean gradient per optimiser step.
    - The value network pools over the horizon (see :class:`~diffgym.denoisers.TemporalValueNet`).
      With a few-step sampler (DDIM, DPM-Solver++) the value nudge is applied only at the visited
      training steps, each with Diffuser's ``beta~_t`` of that step (see
      :class:`~diffgym.guidance.ClassifierGuidance`): less guidance in total than DDPM's at one scale.
    - DD's return condition is the return's position in the dataset's range ([0, 1]), where DD
      divides by a hand-set per-task scale, and plans target a quantile of the data's returns
      (``target_quantile``) where DD sets a fraction of that scale; DD's history conditioning is not
      used (one state).
    - Returns add ``termination_penalty`` (-100, as both papers' datasets) to the reward of a step
      that ends its episode by termination (not truncation) before discounting.
    - Diffuser's maze2d execution (one plan per episode, followed by a PD controller on the planned
      states) is ``policy_kwargs=dict(tracking=(1.0, 1.0), n_action_steps=<episode length>)``; by
      default the planned actions are executed and the plan redrawn every ``n_action_steps``.
    - ``endpoint_condition=True`` (off by default) also feeds the inpainted start / goal to the U-Net
      as its condition vector (DD: after the return, dropped with it). Both papers condition on
      states by inpainting alone, which the network learns to propagate only slowly at CPU budgets
      (measured; see zoo/results/README.md). The maze and hopper DD benchmarks use it.
    - Offline only: ``learn(online=True)`` raises. ``total_timesteps`` counts gradient steps.

    Args (besides :class:`~diffgym.planning.PlanningAlgorithm`'s, whose defaults are both papers'):
        mode: ``"diffuser"`` or ``"decision_diffuser"``: which policy (saved with the model).
        gamma: discount of the returns the value (or return condition) learns (Diffuser's value: 0.997
            on locomotion; DD: 0.99).
        termination_penalty: added to the reward of a terminal step before the returns are
            discounted (Diffuser's value and DD: -100; see :class:`~diffgym.data.SegmentDataset`).
        use_padding, join_episodes: how training windows are cut from the data (see
            :class:`~diffgym.data.SegmentDataset`): Diffuser's locomotion pads episode ends
            (``True``, ``False``); its maze2d takes windows of real consecutive steps of the continual
            stream (``False``, ``True``: goal legs that continue one another are joined).
        policy_kwargs: the policy's settings; those only the other mode's policy takes are ignored,
            so that one dict serves both modes.
    """

    policy_aliases: ClassVar[dict[str, type]] = {
        "MlpPolicy": DiffuserPolicy,
        "MultiInputPolicy": DiffuserPolicy,
    }
    policy: SingleAgentPlanner
    saved_hyperparameters = (*PlanningAlgorithm.saved_hyperparameters, "mode", *SEGMENT_OPTIONS)

    def __init__(
        self,
        policy: str | type[SingleAgentPlanner],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        mode: Mode = "diffuser",
        gamma: float = 0.997,
        termination_penalty: float = -100.0,
        use_padding: bool = True,
        join_episodes: bool = False,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if mode not in POLICIES:
            raise ValueError(f"mode must be 'diffuser' or 'decision_diffuser', got {mode!r}")
        if not isinstance(policy, str) and not issubclass(policy, POLICIES[mode]):
            raise TypeError(f"mode {mode!r} plans with a {POLICIES[mode].__name__}, got {policy.__name__}")
        self.mode = mode
        self.termination_penalty = float(termination_penalty)
        self.use_padding, self.join_episodes = use_padding, join_episodes
        super().__init__(
            policy, env, dataset, gamma=gamma, policy_kwargs=_settings_of_mode(mode, policy_kwargs), **kwargs
        )

    def _segment_options(self) -> dict[str, Any]:
        """Segments as Diffuser's and DD's datasets build them (see :class:`~diffgym.data.SegmentDataset`)."""
        return {name: getattr(self, name) for name in SEGMENT_OPTIONS}

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
        """The value network regresses the segment's raw discounted return (as Diffuser's value, so that
        ``guide_scale`` means Diffuser's ``scale``) from its noisy version at a random step (inpainted,
        as sampling sees it), so that it can guide every denoising step."""
        policy = self.policy
        assert isinstance(policy, DiffuserPolicy)
        assert policy.value is not None and policy.value_optimizer is not None
        model = policy.model
        t = torch.randint(
            0, model.num_timesteps, (x0.shape[0],), generator=self.generator, device=self.device
        )
        noise = torch.randn(x0.shape, generator=self.generator, device=self.device)
        noisy = inpainting.apply(model.schedule.q_sample(x0, t, noise))
        loss = F.mse_loss(policy.value(noisy, t), batch.returns)
        policy.value_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.value_optimizer.step()
        return {"value_loss": loss}


class DecisionDiffuser(DiffuserPlanner):
    """Decision Diffuser as an algorithm of its own: ``DiffuserPlanner(mode="decision_diffuser")``
    (see :class:`DiffuserPlanner`), with DD's discount of the returns it conditions on (0.99) as
    the default. Plans are sampled at DD's temperature 0.5 (``x_T = 0.5 · N(0, I)``, each DDPM
    step's noise halved) unless ``policy_kwargs["sampler"]`` names a ``temperature``."""

    policy_aliases: ClassVar[dict[str, type]] = {
        "MlpPolicy": DecisionDiffuserPolicy,
        "MultiInputPolicy": DecisionDiffuserPolicy,
    }
    saved_hyperparameters = (*PlanningAlgorithm.saved_hyperparameters, *SEGMENT_OPTIONS)

    def __init__(
        self,
        policy: str | type[SingleAgentPlanner],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        gamma: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, dataset, mode="decision_diffuser", gamma=gamma, **kwargs)
