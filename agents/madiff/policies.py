"""MADiff's networks and how a team plans: centralised (MADiff-C) or decentralised (MADiff-D).

MADiff is Decision Diffuser with an agent axis: the core's return-conditioned planner
(:class:`~diffgym.planning.ReturnConditionedPlanner`) over plans ``(B, H, n, D)``, plus what a team
adds: per-agent features and action bounds, one inverse-dynamics model per agent, MADiff-D's
own-agent inpainting and ``predict`` on ``{agent: observation}`` dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import Tensor, nn

from diffgym.data.team import AgentMismatchError
from diffgym.denoisers import MultiAgentTemporalUnet
from diffgym.diffusion import PredictionType
from diffgym.networks import InverseDynamics
from diffgym.normalizers import NormalizerKind
from diffgym.planning import ReturnConditionedPlanner
from diffgym.samplers import Randomness
from diffgym.trajectory import PlanState

#: What ``predict`` returns as actions: one dict per call, or one per env for vectorised observations.
TeamActions = dict[str, np.ndarray] | list[dict[str, np.ndarray]]


class MADiffPolicy(ReturnConditionedPlanner):
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

    Plans are conditioned on the team return ``target_return`` (a fraction of the dataset's range of
    segment returns) with classifier-free guidance. A plan is ``(b, H, n, D)``: each planned step
    holds every agent's state (``x_dim = state_dim = D``).

    Args (``policy_kwargs``):
        agents: agent ids in the env's ``possible_agents`` order (default: the ``Dict`` keys).
        horizon: H, planned steps (MADiff MPE: 24; H must be a multiple of ``2 ** (len(dim_mults) - 1)``).
        num_timesteps: T, diffusion steps in training (MADiff: 200).
        dim, dim_mults: U-Net width and multipliers (MADiff MPE: 128, (1, 4, 8)).
        agent_attention: attention across agents at every resolution (False: the no-attention ablation).
        sampler: sampler used to plan (``"ddpm"`` as MADiff, or e.g. ``{"name": "ddim", "num_steps": 10}``).
        n_action_steps: actions executed per plan (1: replan every step, as MADiff).
        decentralized: MADiff-D instead of MADiff-C.
        ema_decay: EMA decay of the diffusion model (0.995: MADiff); plans come from the EMA.
        cfg_weight: classifier-free guidance weight w (MADiff MPE: 1.2).
        cond_drop_prob: probability of dropping the return condition in training (MADiff: 0.25).
        target_return: return the plans are conditioned on, in [0, 1] over the dataset's segment returns
            (MADiff conditions on a hand-set scaled return near 1).
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
    action_low: Tensor  # (n, A) lower action bounds per agent (padding: -1)
    action_high: Tensor  # (n, A) upper action bounds per agent (padding: 1)

    def _check_action_space(self, action_space: spaces.Space) -> None:
        if not isinstance(action_space, spaces.Dict) or not all(
            isinstance(space, spaces.Box) for space in action_space.spaces.values()
        ):
            raise TypeError(f"MADiff needs a Dict of per-agent Box action spaces, got {action_space}")
        if not isinstance(self.observation_space, spaces.Dict) or set(self.observation_space.spaces) != set(
            action_space.spaces
        ):
            raise TypeError(
                f"MADiff needs Dict observation and action spaces keyed by the same agents, got "
                f"{self.observation_space} and {action_space}"
            )

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
        target_return: float = 0.9,
        inverse_hidden: int = 256,
        prediction: PredictionType = "sample",
        normalizer: NormalizerKind = "gaussian",
    ) -> None:
        obs_spaces: spaces.Dict = self.observation_space  # type: ignore[assignment]
        act_spaces: spaces.Dict = self.action_space  # type: ignore[assignment]
        self.agents = tuple(agents) if agents is not None else tuple(obs_spaces.spaces)
        if set(self.agents) != set(obs_spaces.spaces) or len(self.agents) != len(obs_spaces.spaces):
            raise AgentMismatchError(
                f"agents {list(self.agents)} are not the spaces' keys {list(obs_spaces.spaces)}"
            )
        self.n_agents = len(self.agents)
        self.observation_dims = tuple(spaces.flatdim(obs_spaces[a]) for a in self.agents)
        self.action_dims = tuple(spaces.flatdim(act_spaces[a]) for a in self.agents)
        self.agent_obs_dim, self.agent_action_dim = max(self.observation_dims), max(self.action_dims)
        self.obs_dim = self.n_agents * self.agent_obs_dim
        self.action_dim = self.n_agents * self.agent_action_dim
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
        self._build_return_conditioning(inverse, lr_schedule, cfg_weight, cond_drop_prob, target_return)
        low, high = self._stacked_bounds(act_spaces)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def _stacked_bounds(self, act_spaces: spaces.Dict) -> tuple[Tensor, Tensor]:
        """(n, A) bounds in agent order; padded entries get [-1, 1], so scaling leaves them alone."""
        low = -np.ones((self.n_agents, self.agent_action_dim), np.float32)
        high = np.ones_like(low)
        for k, agent in enumerate(self.agents):
            box: spaces.Box = act_spaces[agent]  # type: ignore[assignment]
            low[k, : self.action_dims[k]] = box.low.reshape(-1)
            high[k, : self.action_dims[k]] = box.high.reshape(-1)
        return torch.as_tensor(low), torch.as_tensor(high)

    # ------------------------------------------------------------------ shapes and scaling

    @property
    def plan_shape(self) -> tuple[int, int, int]:
        """(H, n, D) of one plan."""
        return self.segment_horizon, self.n_agents, self.agent_obs_dim

    def team(self, flat: Tensor) -> Tensor:
        """(..., n * D) -> (..., n, D)."""
        return flat.unflatten(-1, (self.n_agents, self.agent_obs_dim))

    def features(self, observation: PyTorchObs) -> Tensor:
        """Per-agent observations ``{agent: (B, ...)}`` -> (B, n * D) stacked in agent order, normalised."""
        assert isinstance(observation, dict)
        parts = {a: observation[a].float().flatten(1) for a in self.agents}
        padded = [
            nn.functional.pad(parts[a], (0, self.agent_obs_dim - parts[a].shape[1])) for a in self.agents
        ]
        return self.obs_normalizer.normalize(torch.stack(padded, dim=1).flatten(1))

    def normalize_team(self, observations: Tensor) -> Tensor:
        """Raw stacked observations (..., n, D) -> normalised (..., n, D)."""
        return self.team(self.obs_normalizer.normalize(observations.flatten(-2)))

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """Stacked actions (..., n, A) in the agents' bounds -> [-1, 1]."""
        low, high = self.action_low.cpu().numpy(), self.action_high.cpu().numpy()
        return 2.0 * (action - low) / (high - low) - 1.0

    def unscale_action(self, scaled_action: np.ndarray) -> np.ndarray:
        """Stacked actions (..., n, A) in [-1, 1] -> the agents' bounds."""
        low, high = self.action_low.cpu().numpy(), self.action_high.cpu().numpy()
        return low + 0.5 * (scaled_action + 1.0) * (high - low)

    def own_agents(self, first: Tensor, agents: Tensor | None) -> Tensor | None:
        """Which entries of the current team state ``first`` (B, n, D) a sample inpaints: only agent
        ``agents[b]``'s in sample ``b`` (MADiff-D) -> (B, n, D) bool; None (MADiff-C): every agent's."""
        if agents is None:
            return None
        keep = torch.zeros(first.shape, dtype=torch.bool, device=first.device)
        keep[torch.arange(first.shape[0], device=first.device), agents] = True
        return keep

    def inverse_actions(self, states: Tensor, next_states: Tensor) -> Tensor:
        """Each agent's inverse dynamics: (B, ..., n, D) twice -> (B, ..., n, A) in [-1, 1]."""
        return torch.stack(
            [f(states[..., k, :], next_states[..., k, :]) for k, f in enumerate(self.inverse)], dim=-2
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

    # ------------------------------------------------------------------ acting on dict observations

    def predict(  # type: ignore[override]
        self,
        observation: Mapping[str, Any],
        state: PlanState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[TeamActions, PlanState]:
        """Actions for every agent from ``{agent: observation}``.

        One observation per agent (shaped like its space) gives ``{agent: action}``; a VecEnv's batch
        ``{agent: (n_envs, ...)}`` gives a list of ``n_envs`` such dicts (what ``DummyVecEnv.step``
        takes). ``state`` / ``episode_start`` carry the plans between calls (SB3's recurrent convention).

        Raises:
            AgentMismatchError: agents are missing or unknown.
            ValueError: an agent's observation has the wrong shape.
        """
        batch, vectorised = self._team_batch(observation)
        self.set_training_mode(False)
        with torch.no_grad():
            tensors = {a: torch.as_tensor(batch[a], device=self.device) for a in self.agents}
            actions, next_state = self.act_from_features(
                self.features(tensors), state, episode_start, deterministic
            )
        stacked = self.unscale_action(actions.view(-1, self.n_agents, self.agent_action_dim).cpu().numpy())
        per_env = [self._agent_actions(row) for row in stacked]
        return (per_env if vectorised else per_env[0]), next_state

    def _team_batch(self, observation: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """Check every agent's observation; -> ``{agent: (n_envs, *shape)}`` and whether it was batched."""
        if not isinstance(observation, Mapping):
            raise TypeError(
                f"MADiff acts on a dict of observations keyed by agent, got {type(observation).__name__}"
            )
        missing, unknown = set(self.agents) - set(observation), set(observation) - set(self.agents)
        if missing or unknown:
            raise AgentMismatchError(
                f"observation agents {sorted(observation)} differ from the model's {list(self.agents)} "
                f"(missing {sorted(missing)}, unknown {sorted(unknown)})"
            )
        obs_spaces: spaces.Dict = self.observation_space  # type: ignore[assignment]
        arrays = {a: np.asarray(observation[a], dtype=np.float32) for a in self.agents}
        single = [arrays[a].shape == obs_spaces[a].shape for a in self.agents]
        batched = [arrays[a].shape[1:] == obs_spaces[a].shape for a in self.agents]
        sizes = {arrays[a].shape[0] for a in self.agents if arrays[a].ndim}
        if all(single):
            return {a: arrays[a][None] for a in self.agents}, False
        if all(batched) and len(sizes) == 1:
            return arrays, True
        shapes = ", ".join(f"{a}: {arrays[a].shape} (space {obs_spaces[a].shape})" for a in self.agents)
        raise ValueError(f"observation shapes do not fit the agents' spaces or one batch size: {shapes}")

    def _agent_actions(self, stacked: np.ndarray) -> dict[str, np.ndarray]:
        """(n, A) -> ``{agent: action}`` shaped and typed like each agent's space."""
        act_spaces: spaces.Dict = self.action_space  # type: ignore[assignment]
        actions = {}
        for k, agent in enumerate(self.agents):
            box: spaces.Box = act_spaces[agent]  # type: ignore[assignment]
            action = stacked[k, : self.action_dims[k]].reshape(box.shape)
            actions[agent] = np.clip(action, box.low, box.high).astype(box.dtype)
        return actions
