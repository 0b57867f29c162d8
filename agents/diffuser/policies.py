"""The planner's networks and how it plans: Diffuser (value guidance) and Decision Diffuser (CFG)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from diffgym.denoisers import TemporalUnet, TemporalValueNet
from diffgym.diffusion import GaussianDiffusion, PredictionType
from diffgym.ema import make_ema
from diffgym.guidance import ClassifierFreeGuidance, ClassifierGuidance, Inpainting
from diffgym.networks import InverseDynamics, make_adam
from diffgym.normalizers import GaussianNormalizer, NormalizerKind, make_normalizer
from diffgym.samplers import Randomness, Sampler, StepCallback, draw_noise, make_sampler
from diffgym.schedules import NoiseSchedule
from diffgym.trajectory import RecedingHorizonPolicy, SegmentBatches

Mode = Literal["diffuser", "decision_diffuser"]


def key_slice(space: spaces.Space, key: str | None) -> slice:
    """Where ``key``'s entries sit in a flattened observation (Dict keys in the space's order).

    >>> space = spaces.Dict({"a": spaces.Box(0, 1, (2,)), "b": spaces.Box(0, 1, (3,))})
    >>> key_slice(space, "b"), key_slice(space, None)
    (slice(2, 5, None), slice(0, 5, None))
    """
    if key is None:
        return slice(0, spaces.flatdim(space))
    if not isinstance(space, spaces.Dict) or key not in space.spaces:
        raise KeyError(f"{key!r} is not a key of the observation space {space}")
    start = 0
    for name, subspace in space.spaces.items():
        size = spaces.flatdim(subspace)
        if name == key:
            return slice(start, start + size)
        start += size
    raise AssertionError("unreachable")


class DiffuserPolicy(RecedingHorizonPolicy):
    """Plans trajectories of ``horizon`` steps with a temporal U-Net diffusion model.

    ``mode="diffuser"`` (Janner et al. 2022): the model diffuses ``[action, state]`` per step; the
    current state is inpainted at t=0 (and, with ``goal_key``, the goal state at t=H-1); a value
    network trained on noisy trajectories guides sampling toward return; ``n_plans`` plans are
    drawn per decision and the one with the highest value is kept.

    ``mode="decision_diffuser"`` (Ajay et al. 2023): the model diffuses states only, conditioned on
    the normalised return-to-go with classifier-free guidance (weight ``cfg_weight``, trained with
    condition dropout), and an inverse-dynamics model turns consecutive planned states into actions.

    The first ``n_action_steps`` actions of a plan are executed before planning again; with
    ``warm_start_steps > 0`` a continuing plan is shifted by the executed steps, noised to that
    step and denoised from there instead of from pure noise (Diffuser's warm-starting).

    Args (``policy_kwargs``):
        mode: ``"diffuser"`` or ``"decision_diffuser"``.
        horizon: H, planned steps (Diffuser: 32 locomotion, 128 / 256 maze2d umaze / medium; DD: 100).
        num_timesteps: T, diffusion steps in training (Diffuser: 20 locomotion, 64 maze2d; DD: 200).
        prediction: ``"sample"`` (x0: Diffuser) or ``"epsilon"`` (DD); None: the paper's. At CPU budgets
            x0 is the better DD choice: after 5k steps on hopper-medium (with ``endpoint_condition``) the
            planned s_1 was 0.010 (MSE, [-1, 1] units) from the data's against 0.057 for ε, and the
            inverse-dynamics actions on the plans 0.20 from the data's against 0.62.
        dim, dim_mults: U-Net width and multipliers (Diffuser: 32, (1, 2, 4, 8); maze2d (1, 4, 8); DD 128, (1, 4, 8)).
        sampler: sampler used to plan (``"ddpm"`` as the papers, or e.g. ``{"name": "ddim", "num_steps": 5}``).
        n_action_steps: actions executed per plan (1: replan every step, as both papers on locomotion;
            with ``tracking`` it may exceed the horizon, as Diffuser's maze2d plans once per episode).
        warm_start_steps: noise level (training steps) a continuing plan is re-noised to; 0: always cold.
        ema_decay: EMA decay of the diffusion model (0.995: both papers); plans come from the EMA.
        state_key: the Dict observation key that is the planned state (e.g. ``"observation"``); None: all.
        goal_key: Dict key of the goal, inpainted at the plan's end as the state whose first
            ``goal_dim`` entries are the goal and whose others are zero (Diffuser's maze2d: position,
            zero velocity); None: no goal.
        n_plans: plans sampled per decision, the best by value kept (Diffuser: 64; 1 with no value).
        guide_scale: classifier-guidance scale on the standardised value (Diffuser: 0.1); 0 disables.
        guide_stop_below: no guidance at steps t < this (Diffuser's ``t_stopgrad``: 2).
        action_weight: loss weight of the first action (Diffuser: 10 locomotion, 1 maze2d).
        value_dim, value_dim_mults: the value network's width (Diffuser: as the U-Net).
        cfg_weight: classifier-free guidance weight w (DD: 1.2).
        cond_drop_prob: probability of dropping the return condition in training (DD: 0.25).
        target_return: the return the plans are conditioned on, as a fraction of the dataset's
            range of segment returns (0 = lowest, 1 = highest; DD conditions on 0.9 of its scale).
        inverse_hidden: inverse-dynamics width (DD: 256).
        tracking: ``(kp, kd)``: execute a PD controller toward the plan's next state instead of the
            planned actions, ``a = kp (p* - p) + kd (v* - v)`` for a planned state ``[position, velocity]``
            of ``2 A`` entries (Diffuser's maze2d: kp = kd = 1, one plan followed to its end and then
            held at its last position); None: execute the planned actions.
        endpoint_condition: also give the U-Net the inpainted states (start, and goal) as its condition
            vector (in DD after the return, and dropped with it), so every step of the plan sees them
            from the first denoising step (not in Diffuser or DD, which condition on states by
            inpainting alone; see the agent's docstring for why).
        normalizer: ``"gaussian"`` (standardise observations: Diffuser's locomotion setting) or
            ``"limits"`` (map the data's range to [-1, 1] and clip every x0 estimate to it: Diffuser's
            maze2d ``LimitsNormalizer`` with ``clip_denoised=True``, and DD's ``clip_denoised`` on
            its [-1, 1] CDF normaliser). None: ``"gaussian"`` for Diffuser, ``"limits"`` for DD, whose
            ε-prediction on the cosine schedule diverges unclipped (the last DDPM step multiplies by
            1 / sqrt(alpha_T) ≈ 32: planned hopper states had a standard deviation of 89).
        deterministic_seed, normalize_observations: see :class:`~diffgym.policies.AgentPolicy`.
    """

    model: GaussianDiffusion
    ema: AveragedModel
    sampler: Sampler
    loss_weights: Tensor  # (H, x_dim) per-entry diffusion loss weights
    return_range: Tensor  # (2,) lowest and highest segment return of the dataset

    def _build(
        self,
        lr_schedule: Schedule,
        mode: Mode = "diffuser",
        horizon: int = 32,
        num_timesteps: int = 20,
        prediction: PredictionType | None = None,
        dim: int = 32,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        sampler: str | dict[str, Any] = "ddpm",
        n_action_steps: int = 1,
        warm_start_steps: int = 0,
        ema_decay: float = 0.995,
        state_key: str | None = None,
        goal_key: str | None = None,
        n_plans: int = 64,
        guide_scale: float = 0.1,
        guide_stop_below: int = 2,
        action_weight: float = 10.0,
        value_dim: int = 32,
        value_dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        cfg_weight: float = 1.2,
        cond_drop_prob: float = 0.25,
        target_return: float = 0.9,
        inverse_hidden: int = 256,
        tracking: tuple[float, float] | None = None,
        endpoint_condition: bool = False,
        normalizer: NormalizerKind | None = None,
    ) -> None:
        if mode not in ("diffuser", "decision_diffuser"):
            raise ValueError(f"mode must be 'diffuser' or 'decision_diffuser', got {mode!r}")
        if n_action_steps < 1 or (tracking is None and n_action_steps >= horizon):
            raise ValueError(
                f"n_action_steps must be in [1, horizon - 1 = {horizon - 1}] (any positive number with "
                f"tracking), got {n_action_steps}"
            )
        if not 0 <= warm_start_steps <= num_timesteps:
            raise ValueError(f"warm_start_steps must be in [0, {num_timesteps}], got {warm_start_steps}")
        self.mode = mode
        self.n_obs_steps, self.n_action_steps, self.segment_horizon = 1, n_action_steps, horizon
        self.tracking = None if tracking is None else (float(tracking[0]), float(tracking[1]))
        self.warm_start_steps = warm_start_steps
        self.state_slice = key_slice(self.observation_space, state_key)
        self.goal_slice = None if goal_key is None else key_slice(self.observation_space, goal_key)
        self.state_dim = self.state_slice.stop - self.state_slice.start
        if tracking is not None and self.state_dim != 2 * self.action_dim:
            raise ValueError(
                f"tracking needs a planned state of [position, velocity] with {2 * self.action_dim} entries "
                f"(2 x the action size), got {self.state_dim}"
            )
        self.endpoint_condition = endpoint_condition
        self.n_plans = n_plans if mode == "diffuser" else 1
        self.guide_scale, self.guide_stop_below = guide_scale, guide_stop_below
        self.cfg_weight, self.cond_drop_prob, self.target_return = cfg_weight, cond_drop_prob, target_return
        planning_actions = mode == "diffuser"
        self.x_dim = self.state_dim + (self.action_dim if planning_actions else 0)
        denoiser = TemporalUnet(self.x_dim, cond_dim=self._cond_dim(), dim=dim, dim_mults=dim_mults)
        schedule = NoiseSchedule.make("cosine", num_timesteps)  # both papers' schedule
        default_prediction: PredictionType = "sample" if planning_actions else "epsilon"
        self.obs_normalizer, clip_range = make_normalizer(
            normalizer or ("gaussian" if planning_actions else "limits"), self.obs_dim
        )
        self.model = GaussianDiffusion(denoiser, schedule, prediction or default_prediction, clip_range)
        self.ema = make_ema(self.model, ema_decay)
        self.sampler = make_sampler(sampler)
        weights = torch.ones(horizon, self.x_dim)
        if planning_actions:
            weights[0, : self.action_dim] = action_weight
        self.register_buffer("loss_weights", weights)
        self.uses_value = planning_actions and (guide_scale > 0 or self.n_plans > 1)
        self.value = TemporalValueNet(self.x_dim, value_dim, value_dim_mults) if self.uses_value else None
        self.value_normalizer = GaussianNormalizer(1)
        self.inverse = (
            None if planning_actions else InverseDynamics(self.state_dim, self.action_dim, inverse_hidden)
        )
        self.register_buffer("return_range", torch.tensor([0.0, 1.0]))  # (low, high) of segment returns
        model_parameters = list(self.model.parameters())
        if self.inverse is not None:
            model_parameters += list(self.inverse.parameters())
        self.model_optimizer = make_adam(model_parameters, lr=lr_schedule(1))
        self.value_optimizer = (
            make_adam(self.value.parameters(), lr=lr_schedule(1)) if self.value is not None else None
        )

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        named: dict[str, torch.optim.Optimizer] = {"model": self.model_optimizer}
        if self.value_optimizer is not None:
            named["value"] = self.value_optimizer
        return named

    @property
    def ema_model(self) -> GaussianDiffusion:
        return self.ema.module  # type: ignore[return-value]

    def fit_to_segments(self, data: SegmentBatches) -> None:
        super().fit_to_segments(data)
        self.value_normalizer.load_state_dict(GaussianNormalizer.fit(data.returns[:, None]).state_dict())
        self.return_range.copy_(torch.stack([data.returns.min(), data.returns.max()]))

    # ------------------------------------------------------------------ training quantities

    def trajectories(self, observations: Tensor, actions: Tensor) -> Tensor:
        """What the model diffuses: (B, H, obs_dim) normalised, (B, H, A) -> (B, H, x_dim)."""
        states = observations[..., self.state_slice]
        return torch.cat([actions, states], dim=-1) if self.mode == "diffuser" else states

    def states_of(self, x: Tensor) -> Tensor:
        """The state part of trajectories: (B, H, x_dim) -> (B, H, state_dim)."""
        return x[..., self.x_dim - self.state_dim :]

    def _cond_dim(self) -> int:
        """The U-Net's condition size: DD's return (1), then with ``endpoint_condition`` the inpainted
        states (S, or 2 S with a goal)."""
        returns = 1 if self.mode == "decision_diffuser" else 0
        if not self.endpoint_condition:
            return returns
        return returns + self.state_dim * (2 if self.goal_slice is not None else 1)

    def unet_condition(self, first: Tensor, last: Tensor | None, returns: Tensor | None) -> Tensor | None:
        """The U-Net's condition (B, C), or None: DD's normalised return ``returns`` (B, 1), then with
        ``endpoint_condition`` the inpainted start ``first`` (B, S) [and goal state ``last`` (B, S)]."""
        parts = [returns] if self.mode == "decision_diffuser" and returns is not None else []
        if self.endpoint_condition:
            parts += [first] if last is None else [first, last]
        return torch.cat(parts, dim=1) if parts else None

    def conditioning(self, x: Tensor, first: Tensor, last: Tensor | None) -> Inpainting:
        """Fix the state at t=0 to ``first`` (B, S) and, if given, at t=H-1 to ``last`` (B, S)."""
        mask = torch.zeros_like(x, dtype=torch.bool)
        values = torch.zeros_like(x)
        offset = self.x_dim - self.state_dim
        mask[:, 0, offset:] = True
        values[:, 0, offset:] = first
        if last is not None:
            mask[:, -1, offset:] = True
            values[:, -1, offset:] = last
        return Inpainting(mask, values)

    def return_condition(self, returns: Tensor) -> Tensor:
        """Returns (B,) -> (B, 1) in [0, 1] over the dataset's range (DD's normalised return)."""
        low, high = self.return_range
        return ((returns - low) / (high - low).clamp_min(1e-6)).unsqueeze(1)

    # ------------------------------------------------------------------ planning

    def plan(self, history: Tensor, previous: Tensor | None, deterministic: bool) -> Tensor:
        """(b, 1, obs_dim) normalised observations -> (b, H, x_dim) the chosen plans."""
        noise = self.plan_noise(deterministic, period=self.n_plans)
        return self._best(self.sample_plans(history[:, -1], self.n_plans, noise, previous))

    def sample_plans(
        self,
        features: Tensor,
        n: int,
        noise: Randomness,
        previous: Tensor | None = None,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """``n`` plans per observation, guided and inpainted: (b, obs_dim) normalised -> (b, n, H, x_dim).

        Args:
            features: normalised flat observations.
            n: plans per observation.
            noise: a generator or noise function (:meth:`plan_noise`).
            previous: (b, H, x_dim) plans to warm-start from (with ``warm_start_steps > 0``).
            on_step: called with ``(t, x)`` after each denoising step (to picture the chain).
        """
        b = features.shape[0]
        rows = features.repeat_interleave(n, dim=0)
        shape = (b * n, self.segment_horizon, self.x_dim)
        goal = self._goal_state(rows) if self.goal_slice is not None else None
        inpainting = self.conditioning(
            torch.zeros(shape, device=rows.device), rows[:, self.state_slice], goal
        )
        x_start, start_step = None, None
        if previous is not None and self.warm_start_steps > 0:
            x_start, start_step = self._warm_start(previous.repeat_interleave(n, dim=0), noise)
        decision_diffuser = self.mode == "decision_diffuser"
        plans = self.ema_model.sample(
            shape,
            self.unet_condition(
                rows[:, self.state_slice], goal, rows.new_full((b * n, 1), self.target_return)
            ),
            sampler=self.sampler,
            x_T=x_start,
            start_step=start_step,
            classifier_free=ClassifierFreeGuidance(self.cfg_weight) if decision_diffuser else None,
            classifier=self._guidance(),
            inpainting=inpainting,
            generator=noise,
            on_step=on_step,
        )
        return plans.view(b, n, *shape[1:])

    def raw_states(self, plans: Tensor) -> Tensor:
        """The planned states in the observation's units: (..., H, x_dim) -> (..., H, state_dim)."""
        states = self.states_of(plans)
        full = states.new_zeros(*states.shape[:-1], self.obs_dim)
        full[..., self.state_slice] = states
        return self.obs_normalizer.unnormalize(full)[..., self.state_slice]

    def plan_actions(self, plans: Tensor) -> Tensor:
        """(b, H, x_dim) -> (b, n_action_steps, A) in [-1, 1]."""
        k = self.n_action_steps
        if self.inverse is None:
            return plans[:, :k, : self.action_dim].clamp(-1.0, 1.0)
        states = self.states_of(plans)
        return self.inverse(states[:, :k], states[:, 1 : k + 1])

    def step_actions(self, plans: Tensor, step: Tensor, features: Tensor) -> Tensor:
        """Planned actions, or with ``tracking`` the PD action toward planned state ``step + 1``
        (past the plan's end: its last position at rest), scaled to [-1, 1] by the action bounds."""
        if self.tracking is None:
            return super().step_actions(plans, step, features)
        kp, kd = self.tracking
        rows = torch.arange(len(step), device=step.device)
        next_step = plans[rows, (step + 1).clamp_max(self.segment_horizon - 1)]  # (n, x_dim)
        target = self.raw_states(next_step[:, None])[:, 0]  # (n, S) in the observation's units
        target[step + 1 >= self.segment_horizon, self.action_dim :] = 0.0
        current = self.obs_normalizer.unnormalize(features)[:, self.state_slice]
        a = self.action_dim
        raw = kp * (target[:, :a] - current[:, :a]) + kd * (target[:, a:] - current[:, a:])
        box: spaces.Box = self.action_space  # type: ignore[assignment]
        low, high = (torch.as_tensor(b, device=raw.device, dtype=raw.dtype) for b in (box.low, box.high))
        return (2 * (raw - low) / (high - low) - 1).clamp(-1.0, 1.0)

    def _guidance(self) -> ClassifierGuidance | None:
        if self.value is None or self.guide_scale == 0:
            return None
        return ClassifierGuidance(self.value, self.guide_scale, self.guide_stop_below)

    def _best(self, plans: Tensor) -> Tensor:
        """(b, n, H, x_dim) -> (b, H, x_dim): the plan with the highest value (the only one if n = 1)."""
        if plans.shape[1] == 1 or self.value is None:
            return plans[:, 0]
        b, n = plans.shape[:2]
        flat = plans.flatten(0, 1)
        values = self.value(flat, torch.zeros(b * n, dtype=torch.long, device=flat.device)).view(b, n)
        return plans[torch.arange(b, device=plans.device), values.argmax(dim=1)]

    def _goal_state(self, features: Tensor) -> Tensor:
        """Normalised goal state (B, S): the goal in the state's first entries, zero elsewhere."""
        assert self.goal_slice is not None
        raw = self.obs_normalizer.unnormalize(features)
        goal = raw[:, self.goal_slice]
        state = torch.zeros_like(raw[:, self.state_slice])
        state[:, : goal.shape[1]] = goal
        raw = raw.clone()
        raw[:, self.state_slice] = state
        return self.obs_normalizer.normalize(raw)[:, self.state_slice]

    def _warm_start(self, previous: Tensor, noise: Randomness) -> tuple[Tensor, int]:
        """Shift a plan by the executed steps (repeating its end) and noise it to ``warm_start_steps``."""
        k = min(self.n_action_steps, self.segment_horizon)
        shifted = torch.cat([previous[:, k:], previous[:, -1:].expand(-1, k, -1)], dim=1)
        step = self.warm_start_steps - 1
        t = torch.full((shifted.shape[0],), step, dtype=torch.long, device=shifted.device)
        eps = draw_noise(noise, tuple(shifted.shape), shifted.device, shifted.dtype)
        return self.ema_model.schedule.q_sample(shifted, t, eps), step
