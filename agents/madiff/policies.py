"""MADiff's networks and how a team plans: centralised (MADiff-C) or decentralised (MADiff-D).

MADiff is Decision Diffuser with an agent axis: the core's return-conditioned planner
(:class:`~diffgym.planning.ReturnConditionedPlanner`) over plans ``(B, H, n, D)``, plus what a team
adds: per-agent features and action bounds, one inverse-dynamics model per agent, MADiff-D's
own-agent inpainting; the team's features, action bounds and ``predict`` on ``{agent: observation}``
dicts come from the core's :class:`~diffgym.team.TeamAgentPolicy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from diffgym.denoisers import MultiAgentTemporalUnet
from diffgym.diffusion import PredictionType
from diffgym.networks import InverseDynamics
from diffgym.normalizers import NormalizerKind
from diffgym.planning import ReturnConditionedPlanner
from diffgym.samplers import Randomness
from diffgym.team import TeamAgentPolicy


class MADiffPolicy(TeamAgentPolicy, ReturnConditionedPlanner):
    """Plans every agent's observation trajectory with one return-conditioned diffusion model and
    recovers each agent's actions with its own inverse-dynamics model.

    Observations and actions are ``Dict`` spaces keyed by agent (a PettingZoo ``ParallelEnv`` seen
    through :class:`~diffgym.wrappers.JointAgentEnv`). Inside, a team is an array with an agent axis in
    ``agents`` order, each agent's vector zero-padded to the largest: observations ``(n, D)``, actions
    ``(n, A)``; the features handed around are those arrays flattened and standardised, ``(n * D,)``.

    - **MADiff-C** (``decentralized=False``): the first step of every agent's trajectory is inpainted
      with its current observation; one sample plans the team.
    - **MADiff-D** (``decentralized=True``): agent ``i`` inpaints only its own observation, samples the
      whole team's trajectories (modelling its teammates) and acts on its own planned states; the
      ``n`` agents' samples of an env run as one batch but none sees another's observation. Training
      inpaints one random agent per segment to match.

    Plans are conditioned on the ``target_quantile`` quantile of the dataset's team segment returns
    with classifier-free guidance; actions come from the EMA of each agent's inverse dynamics. A plan is ``(b, H, n, D)``: each planned step
    holds every agent's state (``x_dim = state_dim = D``).

    Args (``policy_kwargs``):
        agents: agent ids in the env's ``possible_agents`` order (default: the ``Dict`` keys).
        horizon: H, planned steps (MADiff MPE: 24; H must be a multiple of ``2 ** (len(dim_mults) - 1)``).
        num_timesteps: T, diffusion steps in training (MADiff: 200).
        dim, dim_mults: U-Net width and multipliers (MADiff MPE: 128, (1, 4, 8)).
        agent_attention: MADiff's time-conditioned attention across agents at every resolution,
            starting as the identity (zero gain); False: the no-attention ablation.
        sampler: sampler used to plan (``"ddpm"`` as MADiff, or e.g. ``{"name": "ddim", "num_steps": 10}``).
        n_action_steps: actions executed per plan (1: replan every step, as MADiff).
        decentralized: MADiff-D instead of MADiff-C.
        ema_decay: EMA decay of the diffusion model (0.995: MADiff); plans come from the EMA.
        cfg_weight: classifier-free guidance weight w (MADiff MPE: 1.2).
        cond_drop_prob: probability of dropping the return condition in training (MADiff: 0.25).
        target_quantile: plans are conditioned on this quantile of the dataset's segment returns
            (MADiff conditions on a hand-set scaled return near 1: 0.9, near the top of the data).
        inverse_hidden: width of each agent's inverse-dynamics MLP (MADiff: 256).
        prediction: what the U-Net predicts, ``"sample"`` (x0, as Diffuser; the default) or ``"epsilon"``
            (MADiff, Decision Diffuser). At CPU budgets the ε-model fails on MPE spread: its x0 estimate
            at the noisiest step is ``(x - s ε̂) / a`` with ``1 / a`` in the thousands for the cosine
            schedule, and its plans diverged unclipped or sat on the range's edges clipped; x0-prediction
            did not (measured; see zoo/results/README.md).
        normalizer: ``"gaussian"`` (standardise observations, x0 unclipped; the default, as measured) or
            ``"limits"`` (map each entry's data range to [-1, 1] and clip every x0 estimate to it, as
            MADiff's ``clip_denoised`` on its [-1, 1] CDF normaliser).
        deterministic_seed, normalize_observations: see :class:`~diffgym.policies.AgentPolicy`.
    """

    inverse: nn.ModuleList  # one InverseDynamics per agent

    def _build(
        self,
        lr_schedule: Schedule,
        agents: Sequence[str] | None = None,
        horizon: int = 16,
        num_timesteps: int = 100,
        dim: int = 32,
        dim_mults: tuple[int, ...] = (1, 2, 4),
        agent_attention: bool = True,
        sampler: str | dict[str, Any] = "ddpm",
        n_action_steps: int = 1,
        decentralized: bool = False,
        ema_decay: float = 0.995,
        cfg_weight: float = 1.2,
        cond_drop_prob: float = 0.25,
        target_quantile: float = 0.9,
        inverse_hidden: int = 256,
        prediction: PredictionType = "sample",
        normalizer: NormalizerKind = "gaussian",
    ) -> None:
        self._build_team(agents)
        self.x_dim = self.state_dim = self.agent_obs_dim
        self.decentralized = decentralized
        denoiser = MultiAgentTemporalUnet(
            self.n_agents, self.agent_obs_dim, cond_dim=1, dim=dim, dim_mults=dim_mults,
            agent_attention=agent_attention,
        )  # fmt: skip
        self._build_planner(
            denoiser,
            horizon=horizon,
            num_timesteps=num_timesteps,  # on the cosine schedule: MADiff's (Decision Diffuser's)
            prediction=prediction,
            normalizer=normalizer,
            sampler=sampler,
            ema_decay=ema_decay,
            n_action_steps=n_action_steps,
        )
        inverse = nn.ModuleList(
            InverseDynamics(self.agent_obs_dim, self.agent_action_dim, inverse_hidden) for _ in self.agents
        )
        self._build_return_conditioning(inverse, lr_schedule, cfg_weight, cond_drop_prob, target_quantile)

    # ------------------------------------------------------------------ shapes and scaling

    @property
    def plan_shape(self) -> tuple[int, int, int]:
        """(H, n, D) of one plan."""
        return self.segment_horizon, self.n_agents, self.agent_obs_dim

    def own_agents(self, first: Tensor, agents: Tensor | None) -> Tensor | None:
        """Which entries of the current team state ``first`` (B, n, D) a sample inpaints: only agent
        ``agents[b]``'s in sample ``b`` (MADiff-D) -> (B, n, D) bool; None (MADiff-C): every agent's."""
        if agents is None:
            return None
        keep = torch.zeros(first.shape, dtype=torch.bool, device=first.device)
        keep[torch.arange(first.shape[0], device=first.device), agents] = True
        return keep

    def inverse_actions(self, states: Tensor, next_states: Tensor, averaged: bool = False) -> Tensor:
        """Each agent's inverse dynamics (or, ``averaged``, its EMA): (B, ..., n, D) twice -> (B, ..., n, A)
        in [-1, 1]."""
        models = self.inverse_network(averaged)
        assert isinstance(models, nn.ModuleList)
        return torch.stack(
            [f(states[..., k, :], next_states[..., k, :]) for k, f in enumerate(models)], dim=-2
        )

    # ------------------------------------------------------------------ planning

    def plan(self, history: Tensor, previous: Tensor | None, deterministic: bool) -> Tensor:
        """(b, 1, n * D) normalised observations -> (b, H, n, D): each agent's planned own trajectory
        in its slot (in MADiff-C one joint plan)."""
        current = self.team(history[:, -1])  # (b, n, D)
        b, n = current.shape[:2]
        if not self.decentralized:
            return self._sample(current, None, self.plan_noise(deterministic))
        rows = current.repeat_interleave(n, dim=0)  # row e * n + i: agent i of env e plans alone
        own = torch.arange(n, device=current.device).repeat(b)
        plans = self._sample(rows, own, self.plan_noise(deterministic, period=n)).view(b, n, *self.plan_shape)
        index = torch.arange(n, device=current.device)
        return plans[:, index, :, index].permute(1, 2, 0, 3)  # (b, H, n, D): agent i's slot from its own plan

    def _sample(self, current: Tensor, own: Tensor | None, noise: Randomness) -> Tensor:
        """Plans (B, H, n, D) inpainting ``current`` (B, n, D) (all agents, or agent ``own[b]``)."""
        shape = (current.shape[0], *self.plan_shape)
        inpainting = self.inpainting(shape, current, keep=self.own_agents(current, own))
        return self.sample(shape, self.target_condition(current), inpainting, noise)
