"""The planner base: diffusion over trajectory segments, steered by inpainting, value or return.

Diffuser, Decision Diffuser and MADiff plan the same way: a diffusion model (its EMA) samples a
segment of ``H`` future steps with the current state inpainted at its start, the policy executes
``n_action_steps`` of it and plans again (:class:`~diffgym.trajectory.RecedingHorizonPolicy`).
What they share lives here; each agent adds its own trajectory layout, guidance and actions.

- :class:`PlannerPolicy`: the model build (cosine schedule, the agent's denoiser, prediction type,
  the observation normaliser and the clip range it implies), its :class:`~diffgym.ema.EMA` and
  sampler; inpainting of the current state (and a goal state); warm starts; sampling from the EMA
  with the agent's guidance.
- :class:`ReturnConditionedPlanner` (Decision Diffuser, MADiff): plans conditioned on a normalised
  return with classifier-free guidance; an inverse-dynamics model (its EMA when acting) turns
  planned states into actions.
- :class:`PlanningAlgorithm`: the EMA's calendar (``ema_start``, ``ema_every``) and Decision
  Diffuser's gradient step ``(diffusion + inverse) / 2``.

Shapes: a plan is ``(B, H, ..., x_dim)`` (``...``: MADiff's agent axis); the last ``state_dim``
entries of a step are its normalised state, the entries before them its action (Diffuser plans
``[action, state]``; Decision Diffuser and MADiff plan states only).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch import Tensor, nn

from diffgym.data import DatasetLike
from diffgym.diffusion import GaussianDiffusion, PredictionType
from diffgym.ema import EMA
from diffgym.guidance import ClassifierFreeGuidance, ClassifierGuidance, Inpainting
from diffgym.networks import make_adam
from diffgym.normalizers import NormalizerKind, make_normalizer
from diffgym.samplers import Randomness, Sampler, StepCallback, draw_noise, make_sampler
from diffgym.schedules import NoiseSchedule
from diffgym.trajectory import RecedingHorizonPolicy, SegmentBatches, SegmentSamples, SequenceAlgorithm


def inverse_dynamics_loss(predicted: Tensor, actions: Tensor, mask: Tensor) -> Tensor:
    """Decision Diffuser's inverse-dynamics MSE over real steps only.

    ``predicted``: ``f(s_t, s_{t+1})`` for ``t < H - 1``, (B, H - 1, ..., A); ``actions``: (B, H, ..., A);
    ``mask``: (B, H) real steps (the next state of an episode's last step is its final observation,
    repeated by the padding, so every real step has one). -> scalar.
    """
    real = mask[:, :-1].to(predicted.dtype)
    error = ((predicted - actions[:, :-1]) ** 2).flatten(2).sum(dim=2)  # (B, H - 1)
    return (error * real).sum() / (real.sum() * predicted[0, 0].numel()).clamp_min(1)


class PlannerPolicy(RecedingHorizonPolicy):
    """A receding-horizon policy that plans by sampling trajectory segments from a diffusion model.

    Subclasses set ``x_dim`` and ``state_dim`` (see the module doc), then call
    :meth:`_build_planner` with their denoiser in ``_build``; they implement ``plan`` (with
    :meth:`inpainting` and :meth:`sample`) and ``plan_actions``, and may steer sampling by
    overriding :meth:`_classifier` (classifier guidance) or :meth:`_classifier_free`.
    Plans come from the EMA of the model (:attr:`ema_model`); the algorithm updates the EMA.
    """

    model: GaussianDiffusion
    ema: EMA[GaussianDiffusion]
    sampler: Sampler
    derived_state: ClassVar[dict[str, str]] = {"model.": "ema.module."}  # plans come from the EMA
    x_dim: int  # entries of one planned step (of one agent)
    state_dim: int  # the state's entries, the last ones of a planned step
    warm_start_steps: int  # noise level a continuing plan is re-noised to; 0: plans start from noise

    def _build_planner(
        self,
        denoiser: nn.Module,
        *,
        horizon: int,
        num_timesteps: int,
        prediction: PredictionType,
        normalizer: NormalizerKind,
        sampler: str | dict[str, Any],
        ema_decay: float,
        n_action_steps: int,
        warm_start_steps: int = 0,
        tracked: bool | None = None,
    ) -> None:
        """The diffusion model over plans, its EMA and sampler, and the observation normaliser.

        Args:
            denoiser: the subclass's network, ``(x, t, cond)`` with x (B, H, ..., x_dim).
            horizon: H, planned steps (the training window).
            num_timesteps: diffusion steps of the cosine schedule (the schedule of Diffuser, Decision
                Diffuser and MADiff).
            prediction: what the denoiser predicts (``"sample"``: x0, or ``"epsilon"``).
            normalizer: ``"gaussian"`` (standardise observations, x0 unclipped) or ``"limits"`` (map
                the data's range to [-1, 1] and clip every x0 estimate to it).
            sampler: how plans are sampled (see :func:`~diffgym.samplers.make_sampler`).
            ema_decay: the EMA's decay (0.995 in all three papers).
            n_action_steps: actions executed per plan, in [1, H - 1] (any positive number if ``tracked``).
            warm_start_steps: see :meth:`_warm_start`; in [0, num_timesteps].
            tracked: whether a controller follows the planned states (then also past the plan's end);
                None: the planner has no such controller.
        """
        if n_action_steps < 1 or (n_action_steps >= horizon and not tracked):
            note = "" if tracked is None else " (any positive number with tracking)"
            raise ValueError(
                f"n_action_steps must be in [1, horizon - 1 = {horizon - 1}]{note}, got {n_action_steps}"
            )
        if not 0 <= warm_start_steps <= num_timesteps:
            raise ValueError(f"warm_start_steps must be in [0, {num_timesteps}], got {warm_start_steps}")
        self.n_obs_steps, self.n_action_steps, self.segment_horizon = 1, n_action_steps, horizon
        self.warm_start_steps = warm_start_steps
        self.obs_normalizer, clip_range = make_normalizer(normalizer, self.obs_dim)
        schedule = NoiseSchedule.make("cosine", num_timesteps)
        self.model = GaussianDiffusion(denoiser, schedule, prediction, clip_range)
        self.ema = EMA(self.model, ema_decay)
        self.sampler = make_sampler(sampler)

    @property
    def ema_model(self) -> GaussianDiffusion:
        """The averaged model that plans."""
        return self.ema.module

    def update_averages(self, step: int, start: int, every: int) -> None:
        """Average the trained networks into the copies acting uses (the diffusion model here;
        subclasses add theirs), on the algorithm's calendar (see :meth:`~diffgym.ema.EMA.update`)."""
        self.ema.update(self.model, step, start, every)

    def states_of(self, x: Tensor) -> Tensor:
        """The state part of plans: (B, H, ..., x_dim) -> (B, H, ..., state_dim)."""
        return x[..., self.x_dim - self.state_dim :]

    def inpainting(
        self,
        shape: tuple[int, ...],
        first: Tensor,
        last: Tensor | None = None,
        keep: Tensor | None = None,
        last_keep: Tensor | None = None,
    ) -> Inpainting:
        """Fix the state of the plans' first step to ``first`` and, if given, of their last to ``last``.

        Args:
            shape: (B, H, ..., x_dim) of the plans.
            first: (B, ..., state_dim) normalised current states.
            last: (B, ..., state_dim) normalised goal states, or None.
            keep: (B, ..., state_dim) bool, the entries of ``first`` to fix (MADiff-D: one agent's);
                None: all.
            last_keep: the same for ``last`` (a goal's position but not its velocity); None: all.
        """
        mask = torch.zeros(shape, dtype=torch.bool, device=first.device)
        values = torch.zeros(shape, dtype=first.dtype, device=first.device)
        state = slice(self.x_dim - self.state_dim, None)
        mask[:, 0, ..., state] = True if keep is None else keep
        values[:, 0, ..., state] = first if keep is None else torch.where(keep, first, 0.0)
        if last is not None:
            mask[:, -1, ..., state] = True if last_keep is None else last_keep
            values[:, -1, ..., state] = last
        return Inpainting(mask, values)

    def sample(
        self,
        shape: tuple[int, ...],
        cond: Tensor | None,
        inpainting: Inpainting,
        noise: Randomness,
        previous: Tensor | None = None,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """Plans (B, H, ..., x_dim) from the EMA model, guided as the subclass says.

        Args:
            shape: (B, H, ..., x_dim).
            cond: (B, C) the denoiser's condition, or None.
            inpainting: the fixed entries (:meth:`inpainting`).
            noise: a generator or noise function (:meth:`~diffgym.trajectory.RecedingHorizonPolicy.plan_noise`).
            previous: (B, H, ..., x_dim) the rows' last plans, to warm-start from (with
                ``warm_start_steps > 0``); None: start from noise.
            on_step: called with ``(t, x)`` after each denoising step (to picture the chain).
        """
        x_start, start_step = None, None
        if previous is not None and self.warm_start_steps > 0:
            x_start, start_step = self._warm_start(previous, noise)
        return self.ema_model.sample(
            shape,
            cond,
            sampler=self.sampler,
            x_T=x_start,
            start_step=start_step,
            classifier_free=self._classifier_free(),
            classifier=self._classifier(),
            inpainting=inpainting,
            generator=noise,
            on_step=on_step,
        )

    def _classifier_free(self) -> ClassifierFreeGuidance | None:
        """Classifier-free guidance of sampling (None here)."""
        return None

    def _classifier(self) -> ClassifierGuidance | None:
        """Classifier guidance of sampling (None here)."""
        return None

    def _warm_start(self, previous: Tensor, noise: Randomness) -> tuple[Tensor, int]:
        """Diffuser's warm start: shift a plan by the executed steps (repeating its end) and noise it
        to ``warm_start_steps``, to denoise from there rather than from pure noise."""
        k = min(self.n_action_steps, self.segment_horizon)
        shifted = torch.cat([previous[:, k:], previous[:, -1:].expand(-1, k, *previous.shape[2:])], dim=1)
        step = self.warm_start_steps - 1
        t = torch.full((shifted.shape[0],), step, dtype=torch.long, device=shifted.device)
        eps = draw_noise(noise, tuple(shifted.shape), shifted.device, shifted.dtype)
        return self.ema_model.schedule.q_sample(shifted, t, eps), step


class ReturnConditionedPlanner(PlannerPolicy):
    """Decision Diffuser's planning: plans conditioned on the normalised return-to-go, sampled with
    classifier-free guidance toward a target return; actions from an inverse-dynamics model
    ``a_t = f(s_t, s_{t+1})`` on consecutive planned states (its EMA, as DD and MADiff act with the
    EMA of their whole model, inverse dynamics included).

    The return condition is a segment's discounted return-to-go as a fraction of the dataset's range
    of segment returns (:meth:`return_condition`, ``return_range`` fitted to the first dataset); the
    denoiser's condition starts with it (B, 1). Plans are conditioned on the ``target_quantile``
    quantile of the dataset's segment returns (``return_target``, fitted with the range). DD and
    MADiff condition on a fixed fraction of a hand-set return scale instead (DD: 0.9 on hopper);
    a quantile means the same thing on every dataset (on our hopper-medium data DD's 0.9 of the
    range is about the 0.65–0.7 quantile). Subclasses call :meth:`_build_return_conditioning` after
    :meth:`~PlannerPolicy._build_planner`; MADiff overrides :meth:`inverse_actions` (one model per
    agent).
    """

    inverse: nn.Module  # (B, ..., state_dim) twice -> (B, ..., A)
    inverse_ema: EMA[nn.Module]  # its average, which acting uses
    derived_state: ClassVar[dict[str, str]] = {
        **PlannerPolicy.derived_state,
        "inverse.": "inverse_ema.module.",
    }
    return_range: Tensor  # (2,) lowest and highest segment return of the dataset
    return_target: Tensor  # () the segment return plans are conditioned on
    model_optimizer: torch.optim.Optimizer  # the diffusion model's and the inverse dynamics'

    def _build_return_conditioning(
        self,
        inverse: nn.Module,
        lr_schedule: Schedule,
        cfg_weight: float,
        cond_drop_prob: float,
        target_quantile: float,
    ) -> None:
        """Guidance settings, the inverse-dynamics model (and its EMA) and one Adam for it and the
        diffusion model.

        Args:
            inverse: the inverse-dynamics network (built after the denoiser: initialisation order).
            lr_schedule: the learning rate (its value at the start).
            cfg_weight: classifier-free guidance weight w (Decision Diffuser, MADiff: 1.2).
            cond_drop_prob: probability of dropping the return condition in training (both: 0.25).
            target_quantile: plans are conditioned on this quantile of the dataset's segment returns.
        """
        if not 0.0 <= target_quantile <= 1.0:
            raise ValueError(f"target_quantile must be in [0, 1], got {target_quantile}")
        self.cfg_weight, self.cond_drop_prob, self.target_quantile = (
            cfg_weight,
            cond_drop_prob,
            target_quantile,
        )
        self.inverse = inverse
        self.inverse_ema = EMA(inverse, self.ema.decay)
        self.register_buffer("return_range", torch.tensor([0.0, 1.0]))  # (low, high) of segment returns
        self.register_buffer("return_target", torch.tensor(1.0))
        self.model_optimizer = make_adam([*self.model.parameters(), *inverse.parameters()], lr=lr_schedule(1))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.model_optimizer}

    def update_averages(self, step: int, start: int, every: int) -> None:
        super().update_averages(step, start, every)
        self.inverse_ema.update(self.inverse, step, start, every)

    def fit_to_segments(self, data: SegmentBatches) -> None:
        """Observation statistics, the range of the segment returns and the target return."""
        super().fit_to_segments(data)
        returns = data.returns.double()
        self.return_range.copy_(torch.stack([returns.min(), returns.max()]))
        self.return_target.copy_(torch.quantile(returns.cpu(), self.target_quantile))

    def return_condition(self, returns: Tensor) -> Tensor:
        """Returns (B,) -> (B, 1) in [0, 1] over the dataset's range (DD's normalised return)."""
        low, high = self.return_range
        return ((returns - low) / (high - low).clamp_min(1e-6)).unsqueeze(1)

    def target_condition(self, like: Tensor) -> Tensor:
        """The return condition plans are sampled with (``return_target``'s) for each row of ``like``: (B, 1)."""
        return self.return_condition(self.return_target.expand(like.shape[0]).to(like.dtype))

    def _classifier_free(self) -> ClassifierFreeGuidance:
        return ClassifierFreeGuidance(self.cfg_weight)

    def inverse_network(self, averaged: bool) -> nn.Module:
        """The inverse-dynamics network being trained, or its EMA (``averaged``), which acting uses."""
        return self.inverse_ema.module if averaged else self.inverse

    def inverse_actions(self, states: Tensor, next_states: Tensor, averaged: bool = False) -> Tensor:
        """Actions between consecutive states: (B, ..., state_dim) twice -> (B, ..., A) in [-1, 1],
        by the trained network or (``averaged``) its EMA."""
        return self.inverse_network(averaged)(states, next_states)

    def plan_actions(self, plans: Tensor) -> Tensor:
        """(b, H, ..., x_dim) -> (b, n_action_steps, A) (a team: its agents' actions concatenated),
        by the EMA of the inverse dynamics."""
        k = self.n_action_steps
        states = self.states_of(plans)
        return self.inverse_actions(states[:, :k], states[:, 1 : k + 1], averaged=True).flatten(2)


class PlanningAlgorithm(SequenceAlgorithm):
    """A :class:`~diffgym.trajectory.SequenceAlgorithm` for a :class:`PlannerPolicy`: the EMA of the
    model copies it for ``ema_start`` gradient steps, then averages it every ``ema_every`` steps
    (:meth:`_update_ema`), and return-conditioned planners learn with :meth:`_update_return_conditioned`.

    Its defaults are those Diffuser, Decision Diffuser and MADiff share; an agent restates only
    where it differs.

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        learning_rate: Adam learning rate (Diffuser, DD, MADiff: 2e-4).
        batch_size: segments per gradient step (Diffuser, DD, MADiff: 32 × 2 accumulated batches,
            whose accumulated gradient is the mean over the two, as one batch of 64 gives).
        gamma: discount of the returns the value or the return condition learns (DD, MADiff: 0.99).
        ema_start: gradient steps before the EMA starts averaging (Diffuser, MADiff: 2000).
        ema_every: gradient steps between EMA updates (Diffuser, MADiff: 10).
    """

    policy: PlannerPolicy
    saved_hyperparameters = (*SequenceAlgorithm.saved_hyperparameters, "ema_start", "ema_every")

    def __init__(
        self,
        policy: str | type[PlannerPolicy],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        learning_rate: float = 2e-4,
        batch_size: int = 64,
        gamma: float = 0.99,
        ema_start: int = 2000,
        ema_every: int = 10,
        **kwargs: Any,
    ) -> None:
        self.ema_start, self.ema_every = ema_start, ema_every
        super().__init__(
            policy, env, dataset, learning_rate=learning_rate, batch_size=batch_size, gamma=gamma, **kwargs
        )

    def _update_return_conditioned(
        self, batch: SegmentSamples, x0: Tensor, inpainting: Inpainting, cond: Tensor
    ) -> dict[str, Tensor]:
        """Decision Diffuser's gradient step on the model and the inverse dynamics, one optimizer.

        - the diffusion loss of the plans ``x0`` (B, H, ..., x_dim) with ``inpainting`` and the
          condition ``cond`` (B, C, the return first), dropped with probability ``cond_drop_prob``
          per segment, which trains the unconditional model classifier-free guidance needs;
        - the inverse-dynamics loss of ``a_t`` from ``(s_t, s_{t+1})`` on real steps
          (:func:`inverse_dynamics_loss`);
        - the two averaged: ``(diffusion + inverse) / 2``, as Decision Diffuser (and MADiff).
        """
        policy = self.policy
        assert isinstance(policy, ReturnConditionedPlanner)
        diffusion = policy.model.loss(
            x0, cond, cond_drop_prob=policy.cond_drop_prob, inpainting=inpainting, generator=self.generator
        )
        states = policy.states_of(x0)
        predicted = policy.inverse_actions(states[:, :-1], states[:, 1:])
        inverse = inverse_dynamics_loss(predicted, batch.actions, batch.mask)
        policy.model_optimizer.zero_grad(set_to_none=True)
        ((diffusion + inverse) / 2).backward()
        policy.model_optimizer.step()
        return {"diffusion_loss": diffusion, "inverse_loss": inverse}

    def _update_ema(self) -> None:
        """Copy, then average the trained networks into their EMAs on the calendar (``ema_start``,
        ``ema_every``; see :meth:`PlannerPolicy.update_averages`)."""
        self.policy.update_averages(self._n_updates, self.ema_start, self.ema_every)
