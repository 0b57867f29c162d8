"""The planners' policies: Diffuser (value guidance, best of N) and Decision Diffuser (return-conditioned
classifier-free guidance, inverse dynamics), on the core planner base (:mod:`diffgym.planning`)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal

import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from diffgym.denoisers import TemporalUnet, TemporalValueNet
from diffgym.diffusion import PredictionType
from diffgym.ema import EMA
from diffgym.guidance import ClassifierGuidance, Inpainting
from diffgym.networks import InverseDynamics, make_adam
from diffgym.normalizers import NormalizerKind
from diffgym.planning import PlannerPolicy, ReturnConditionedPlanner
from diffgym.samplers import Randomness, StepCallback

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


class SingleAgentPlanner(PlannerPolicy):
    """What Diffuser and Decision Diffuser share: one agent's trajectory of ``horizon`` steps planned
    by a temporal U-Net (:class:`~diffgym.planning.PlannerPolicy`), with

    - the planned state: a Dict key of the observation (``state_key``), or all of it, inpainted at
      t = 0 with the current one; with ``goal_key`` a goal state inpainted at t = H - 1;
    - ``endpoint_condition``: the inpainted states also given to the U-Net as its condition vector;
    - ``warm_start_steps``: a continuing plan, shifted by the executed steps, re-noised to that step
      and denoised from there (Diffuser's warm starting);
    - ``tracking``: a PD controller toward the planned states instead of the planned actions.

    A plan is ``(b, H, x_dim)``: each step's state (``state_dim`` entries), after its action where
    the mode plans actions (``plans_actions``). The two policies add the U-Net's condition
    (:meth:`plan_condition`), their own settings (:meth:`_build_mode`) and how plans become actions;
    :class:`~diffgym.agents.diffuser.DiffuserPlanner` picks one by its ``mode``.

    Args (``policy_kwargs`` of both modes):
        horizon: H, planned steps (Diffuser: 32 locomotion, 128 / 256 maze2d umaze / medium; DD: 100).
        num_timesteps: T, diffusion steps in training (Diffuser: 20 locomotion, 64 maze2d; DD: 200).
        prediction: ``"sample"`` (x0: Diffuser) or ``"epsilon"`` (DD); None: the paper's. At CPU
            budgets x0 is the better DD choice (measured; see zoo/results/README.md).
        dim, dim_mults: U-Net width and multipliers (Diffuser: 32, (1, 2, 4, 8); maze2d (1, 4, 8); DD 128, (1, 4, 8)).
        sampler: sampler used to plan (``"ddpm"`` as the papers, or e.g. ``{"name": "ddim", "num_steps": 5}``);
            its ``temperature`` (scale of the initial and injected noise, see :class:`~diffgym.samplers.Sampler`)
            is the mode's paper's (Diffuser 1, DD 0.5) unless the config names one, e.g.
            ``{"name": "ddpm", "temperature": 1.0}``.
        n_action_steps: actions executed per plan (1: replan every step, as both papers on locomotion;
            with ``tracking`` it may exceed the horizon, as Diffuser's maze2d plans once per episode).
        warm_start_steps: noise level (training steps) a continuing plan is re-noised to; 0: always cold.
        ema_decay: EMA decay of the diffusion model (0.995: both papers); plans come from the EMA.
        state_key: the Dict observation key that is the planned state (e.g. ``"observation"``); None: all.
        goal_key: Dict key of the goal, inpainted at the plan's end as the state whose first
            ``goal_dim`` entries are the goal and whose others are zero (Diffuser's maze2d: position,
            zero velocity); None: no goal. Training inpaints each window's own last state there.
        goal_entries: what the plan's end fixes: ``"state"`` (the whole state, Diffuser's) or
            ``"goal"`` (only the goal's ``goal_dim`` entries, e.g. the position; the rest, e.g. the
            velocity, is left to the model, in training and planning alike, and given to the U-Net as
            0 with ``endpoint_condition``). With ``"state"`` the zero velocity planned to is one that
            training windows rarely end with (2.7 % of our umaze windows end slower than 0.5).
        tracking: ``(kp, kd)``: execute a PD controller toward the plan's next state instead of the
            planned actions, ``a = kp (p* - p) + kd (v* - v)`` for a planned state ``[position, velocity]``
            of ``2 A`` entries (Diffuser's maze2d: kp = kd = 1, one plan followed to its end and then
            held at its last position); None: execute the planned actions.
        endpoint_condition: also give the U-Net the inpainted states (start, and goal) as its condition
            vector (in DD after the return, and dropped with it), so every step of the plan sees them
            from the first denoising step. Both papers condition on states by inpainting alone, which
            the network learns to propagate only slowly (measured; see zoo/results/README.md).
        normalizer: ``"gaussian"`` (standardise observations: Diffuser's locomotion setting),
            ``"limits"`` (map the data's range to [-1, 1] and clip every x0 estimate to it: Diffuser's
            maze2d ``LimitsNormalizer`` with ``clip_denoised=True``) or ``"cdf"`` (each dimension
            through its empirical CDF to [-1, 1], x0 clipped there: DD's ``CDFNormalizer`` with
            ``clip_denoised``). None: ``"gaussian"`` for Diffuser, ``"cdf"`` for DD (whose
            ε-prediction on the cosine schedule diverges unclipped: the last DDPM step multiplies by
            1 / sqrt(alpha_T) ≈ 32; measured, see zoo/results/README.md).
        deterministic_seed, normalize_observations: see :class:`~diffgym.policies.AgentPolicy`.
    """

    mode: ClassVar[Mode]
    plans_actions: ClassVar[bool] = False  # a planned step is [action, state] (Diffuser), else the state
    paper_prediction: ClassVar[PredictionType]  # the paper's choice, for prediction=None
    paper_normalizer: ClassVar[NormalizerKind]  # the paper's choice, for normalizer=None
    paper_temperature: ClassVar[float]  # the paper's sampling temperature, for a sampler config naming none
    n_plans: int = 1  # plans sampled per decision

    def _build(
        self,
        lr_schedule: Schedule,
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
        goal_entries: str = "state",
        tracking: tuple[float, float] | None = None,
        endpoint_condition: bool = False,
        normalizer: NormalizerKind | None = None,
        **settings: Any,
    ) -> None:
        self.tracking = None if tracking is None else (float(tracking[0]), float(tracking[1]))
        self.state_slice = key_slice(self.observation_space, state_key)
        self.goal_slice = None if goal_key is None else key_slice(self.observation_space, goal_key)
        if goal_entries not in ("state", "goal"):
            raise ValueError(f"goal_entries must be 'state' or 'goal', got {goal_entries!r}")
        self.goal_entries = goal_entries
        self.state_dim = self.state_slice.stop - self.state_slice.start
        if tracking is not None and self.state_dim != 2 * self.action_dim:
            raise ValueError(
                f"tracking needs a planned state of [position, velocity] with {2 * self.action_dim} entries "
                f"(2 x the action size), got {self.state_dim}"
            )
        self.endpoint_condition = endpoint_condition
        self.x_dim = self.state_dim + (self.action_dim if self.plans_actions else 0)
        self._build_planner(
            TemporalUnet(self.x_dim, cond_dim=self._cond_dim(), dim=dim, dim_mults=dim_mults),
            horizon=horizon,
            num_timesteps=num_timesteps,  # on the cosine schedule: both papers'
            prediction=prediction or self.paper_prediction,
            normalizer=normalizer or self.paper_normalizer,
            sampler=self._sampler_config(sampler),
            ema_decay=ema_decay,
            n_action_steps=n_action_steps,
            warm_start_steps=warm_start_steps,
            tracked=tracking is not None,
        )
        self._build_mode(lr_schedule, **settings)

    @abstractmethod
    def _build_mode(self, lr_schedule: Schedule) -> None:
        """The mode's own networks and optimizers, from its own ``policy_kwargs``."""

    @classmethod
    def _sampler_config(cls, sampler: str | dict[str, Any]) -> dict[str, Any]:
        """``sampler`` as a config, at the mode's paper's temperature unless it names one.

        >>> DecisionDiffuserPolicy._sampler_config("ddpm")
        {'name': 'ddpm', 'temperature': 0.5}
        >>> DecisionDiffuserPolicy._sampler_config({"name": "ddim", "num_steps": 5, "temperature": 1.0})
        {'name': 'ddim', 'num_steps': 5, 'temperature': 1.0}
        """
        config: dict[str, Any] = {"name": sampler} if isinstance(sampler, str) else dict(sampler)
        config.setdefault("temperature", cls.paper_temperature)
        return config

    # ------------------------------------------------------------------ conditioning

    def _cond_dim(self) -> int:
        """The U-Net's condition size: with ``endpoint_condition`` the inpainted states (S, or 2 S with a goal)."""
        if not self.endpoint_condition:
            return 0
        return self.state_dim * (2 if self.goal_slice is not None else 1)

    def endpoints(self, first: Tensor, last: Tensor | None) -> list[Tensor]:
        """The inpainted states the U-Net is also given with ``endpoint_condition``: the start
        ``first`` (B, S) [and goal state ``last`` (B, S), its free entries as 0]; none without it."""
        if not self.endpoint_condition:
            return []
        if last is None:
            return [first]
        keep = self.goal_keep(last)
        return [first, last if keep is None else torch.where(keep, last, 0.0)]

    def goal_keep(self, last: Tensor) -> Tensor | None:
        """Which entries of the plan's last state (B, S) are fixed: with ``goal_entries="goal"`` the
        goal's own (B, S) bool; None: all of them."""
        if self.goal_entries == "state" or self.goal_slice is None:
            return None
        keep = torch.zeros_like(last, dtype=torch.bool)
        keep[:, : self.goal_slice.stop - self.goal_slice.start] = True
        return keep

    def inpainting(
        self,
        shape: tuple[int, ...],
        first: Tensor,
        last: Tensor | None = None,
        keep: Tensor | None = None,
        last_keep: Tensor | None = None,
    ) -> Inpainting:
        """:meth:`~diffgym.planning.PlannerPolicy.inpainting`, the last state's fixed entries as
        ``goal_entries`` says."""
        if last is not None and last_keep is None:
            last_keep = self.goal_keep(last)
        return super().inpainting(shape, first, last, keep, last_keep)

    @abstractmethod
    def plan_condition(self, first: Tensor, goal: Tensor | None) -> Tensor | None:
        """The U-Net's condition (B, C) when planning from ``first`` (B, S) [to ``goal`` (B, S)], or None."""

    def trajectories(self, observations: Tensor, actions: Tensor) -> Tensor:
        """What the model diffuses: (B, H, obs_dim) normalised, (B, H, A) -> (B, H, x_dim)."""
        states = observations[..., self.state_slice]
        return torch.cat([actions, states], dim=-1) if self.plans_actions else states

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
        first = rows[:, self.state_slice]
        goal = self._goal_state(rows) if self.goal_slice is not None else None
        plans = self.sample(
            shape,
            self.plan_condition(first, goal),
            self.inpainting(shape, first, goal),
            noise,
            previous=None if previous is None else previous.repeat_interleave(n, dim=0),
            on_step=on_step,
        )
        return plans.view(b, n, *shape[1:])

    def _best(self, plans: Tensor) -> Tensor:
        """(b, n, H, x_dim) -> (b, H, x_dim): the plan to execute (here the first)."""
        return plans[:, 0]

    def raw_states(self, plans: Tensor) -> Tensor:
        """The planned states in the observation's units: (..., H, x_dim) -> (..., H, state_dim)."""
        states = self.states_of(plans)
        full = states.new_zeros(*states.shape[:-1], self.obs_dim)
        full[..., self.state_slice] = states
        return self.obs_normalizer.unnormalize(full)[..., self.state_slice]

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


class DiffuserPolicy(SingleAgentPlanner):
    """Diffuser (Janner et al. 2022): plans ``[action, state]`` trajectories; a value network trained
    on noisy trajectories guides sampling toward return; ``n_plans`` plans are drawn per decision and
    the one with the highest value is kept; the planned actions are executed (or, with ``tracking``,
    the planned states are followed). x0-prediction on standardised observations by default.

    The value regresses the raw discounted return (Diffuser's ``ValueDataset(normed=False)``), so
    ``guide_scale`` is Diffuser's ``scale``; guidance and the choice among plans use the EMA of the
    value network (:attr:`value_ema`, averaged on the diffusion model's calendar), as Diffuser plans
    with its value trainer's ``ema`` model. Guidance is Diffuser's x_t nudge
    (:class:`~diffgym.guidance.ClassifierGuidance`).

    Args (``policy_kwargs``, besides :class:`SingleAgentPlanner`'s):
        n_plans: plans sampled per decision, the best by value kept (Diffuser: 64; 1 with no value).
        guide_scale: step size of the value-gradient nudges of x_t, in return units (Diffuser's
            ``scale``: 0.1 on locomotion); 0 disables guidance.
        guide_stop_below: no guidance at steps t < this (Diffuser's ``t_stopgrad``: 2).
        n_guide_steps: value-gradient nudges per denoising step (Diffuser: 2).
        action_weight: loss weight of the first action (Diffuser: 10 locomotion, 1 maze2d).
        value_dim, value_dim_mults: the value network's width (Diffuser: as the U-Net).
    """

    # plans come from the EMA model, and are guided and chosen by the value's EMA
    derived_state: ClassVar[dict[str, str]] = {**PlannerPolicy.derived_state, "value.": "value_ema.module."}

    mode = "diffuser"
    plans_actions = True
    paper_prediction = "sample"
    paper_normalizer = "gaussian"
    paper_temperature = 1.0
    value: nn.Module | None  # (B, H, x_dim), t (B,) -> (B,) raw return; None: no guidance or choice
    value_ema: EMA[nn.Module] | None  # its average, which guides and chooses plans
    loss_weights: Tensor  # (H, x_dim) per-entry diffusion loss weights

    def _build_mode(
        self,
        lr_schedule: Schedule,
        n_plans: int = 64,
        guide_scale: float = 0.1,
        guide_stop_below: int = 2,
        n_guide_steps: int = 2,
        action_weight: float = 10.0,
        value_dim: int = 32,
        value_dim_mults: tuple[int, ...] = (1, 2, 4, 8),
    ) -> None:
        self.n_plans = n_plans
        self.guide_scale, self.guide_stop_below = guide_scale, guide_stop_below
        self.n_guide_steps = n_guide_steps
        weights = torch.ones(self.segment_horizon, self.x_dim)
        weights[0, : self.action_dim] = action_weight
        self.register_buffer("loss_weights", weights)
        uses_value = guide_scale > 0 or n_plans > 1
        self.value = TemporalValueNet(self.x_dim, value_dim, value_dim_mults) if uses_value else None
        self.value_ema = EMA(self.value, self.ema.decay) if self.value is not None else None
        self.model_optimizer = make_adam(self.model.parameters(), lr=lr_schedule(1))
        self.value_optimizer = (
            make_adam(self.value.parameters(), lr=lr_schedule(1)) if self.value is not None else None
        )

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        named: dict[str, torch.optim.Optimizer] = {"model": self.model_optimizer}
        if self.value_optimizer is not None:
            named["value"] = self.value_optimizer
        return named

    def update_averages(self, step: int, start: int, every: int) -> None:
        """The diffusion model's EMA and the value network's, on the same calendar (Diffuser trains its
        value with the same ``Trainer``: ``step_start_ema`` 2000, ``update_ema_every`` 10)."""
        super().update_averages(step, start, every)
        if self.value_ema is not None:
            assert self.value is not None
            self.value_ema.update(self.value, step, start, every)

    def unet_condition(self, first: Tensor, last: Tensor | None) -> Tensor | None:
        """The U-Net's condition: with ``endpoint_condition`` the inpainted states (B, S or 2 S), else None."""
        parts = self.endpoints(first, last)
        return torch.cat(parts, dim=1) if parts else None

    def plan_condition(self, first: Tensor, goal: Tensor | None) -> Tensor | None:
        return self.unet_condition(first, goal)

    def plan_actions(self, plans: Tensor) -> Tensor:
        """(b, H, x_dim) -> (b, n_action_steps, A) in [-1, 1]: the planned actions."""
        return plans[:, : self.n_action_steps, : self.action_dim].clamp(-1.0, 1.0)

    @property
    def ema_value(self) -> nn.Module | None:
        """The averaged value network that guides and chooses plans (None: no value)."""
        return None if self.value_ema is None else self.value_ema.module

    def _classifier(self) -> ClassifierGuidance | None:
        if self.ema_value is None or self.guide_scale == 0:
            return None
        return ClassifierGuidance(self.ema_value, self.guide_scale, self.guide_stop_below, self.n_guide_steps)

    def _best(self, plans: Tensor) -> Tensor:
        """(b, n, H, x_dim) -> (b, H, x_dim): the plan with the highest (EMA) value at t = 0 (the only
        one if n = 1)."""
        if plans.shape[1] == 1 or self.ema_value is None:
            return plans[:, 0]
        b, n = plans.shape[:2]
        flat = plans.flatten(0, 1)
        values = self.ema_value(flat, torch.zeros(b * n, dtype=torch.long, device=flat.device)).view(b, n)
        return plans[torch.arange(b, device=plans.device), values.argmax(dim=1)]


class DecisionDiffuserPolicy(SingleAgentPlanner, ReturnConditionedPlanner):
    """Decision Diffuser (Ajay et al. 2023): plans state trajectories conditioned on the normalised
    return-to-go with classifier-free guidance, and an inverse-dynamics model turns consecutive
    planned states into actions (:class:`~diffgym.planning.ReturnConditionedPlanner`, the EMA of
    the inverse dynamics when acting). ε-prediction by default; observations mapped to [-1, 1] by
    each dimension's empirical CDF (DD's ``CDFNormalizer``) and x0 clipped there. Plans are sampled at temperature 0.5, as
    DD's code does (``x_T = 0.5 · N(0, I)`` and half of DDPM's noise at every step; see
    :class:`~diffgym.samplers.Sampler`); a ``sampler`` config that names a ``temperature`` overrides it.

    Args (``policy_kwargs``, besides :class:`SingleAgentPlanner`'s):
        cfg_weight: classifier-free guidance weight w (DD: 1.2).
        cond_drop_prob: probability of dropping the return condition in training (DD: 0.25).
        target_quantile: plans are conditioned on this quantile of the dataset's segment returns
            (DD conditions on 0.9 of a hand-set return scale; on our hopper-medium data 0.9 of the
            returns' range is about their 0.65–0.7 quantile).
        inverse_hidden: inverse-dynamics width (DD: 256).
    """

    derived_state: ClassVar[dict[str, str]] = ReturnConditionedPlanner.derived_state

    mode = "decision_diffuser"
    paper_prediction = "epsilon"
    paper_normalizer = "cdf"
    paper_temperature = 0.5

    def _build_mode(
        self,
        lr_schedule: Schedule,
        cfg_weight: float = 1.2,
        cond_drop_prob: float = 0.25,
        target_quantile: float = 0.7,
        inverse_hidden: int = 256,
    ) -> None:
        inverse = InverseDynamics(self.state_dim, self.action_dim, inverse_hidden)
        self._build_return_conditioning(inverse, lr_schedule, cfg_weight, cond_drop_prob, target_quantile)

    def _cond_dim(self) -> int:
        """The return (1), then the endpoint states."""
        return 1 + super()._cond_dim()

    def unet_condition(self, first: Tensor, last: Tensor | None, returns: Tensor) -> Tensor:
        """The U-Net's condition (B, C): the normalised return ``returns`` (B, 1), then with
        ``endpoint_condition`` the inpainted start ``first`` (B, S) [and goal state ``last`` (B, S)]."""
        return torch.cat([returns, *self.endpoints(first, last)], dim=1)

    def plan_condition(self, first: Tensor, goal: Tensor | None) -> Tensor:
        return self.unet_condition(first, goal, self.target_condition(first))
