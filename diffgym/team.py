"""What every agent of a PettingZoo team shares: a policy acting on ``{agent: observation}`` dicts, and
an algorithm that learns from a team dataset (:mod:`diffgym.data.team`) and steps a ``ParallelEnv``.

Inside, a team is an array with an agent axis in ``agents`` order, each agent's vector zero-padded to
the largest: observations ``(n, D)``, actions ``(n, A)``; the features handed around are those arrays
flattened and normalised, ``(n * D,)``; actions are scaled to [-1, 1] by each agent's own bounds.
MADiff and per-agent behaviour cloning are built on these two classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeAlias, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from minari import MinariDataset
from pettingzoo import ParallelEnv
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor, nn

from diffgym.data import DatasetLike
from diffgym.data.team import (
    AgentMismatchError,
    MultiAgentSegmentDataset,
    check_agents_and_spaces,
    dataset_agents,
)
from diffgym.normalizers import GaussianNormalizer
from diffgym.policies import check_finite_observation
from diffgym.trajectory import (
    PlanState,
    RecedingHorizonPolicy,
    SegmentBatches,
    SegmentSamples,
    SequenceAlgorithm,
)

#: What ``predict`` returns as actions: one dict per call, or one per env for vectorised observations.
TeamActions: TypeAlias = dict[str, np.ndarray] | list[dict[str, np.ndarray]]
#: What a team agent is given as its env: a ``ParallelEnv``, its joint-agent Gymnasium view, or None.
TeamEnv: TypeAlias = ParallelEnv | GymEnv | str | None

SelfTeamAlgorithm = TypeVar("SelfTeamAlgorithm", bound="TeamAlgorithm")


class TeamAgentPolicy(RecedingHorizonPolicy):
    """A receding-horizon policy of a team: ``Dict`` observation and action spaces keyed by agent.

    Subclasses call :meth:`_build_team` first in ``_build``. ``predict({agent: obs})`` returns
    ``{agent: action}`` (a VecEnv batch ``{agent: (n_envs, ...)}`` gives one dict per env).
    """

    agents: tuple[str, ...]
    action_low: Tensor  # (n, A) lower action bounds per agent (padding: -1)
    action_high: Tensor  # (n, A) upper action bounds per agent (padding: 1)

    def _check_action_space(self, action_space: spaces.Space) -> None:
        name = type(self).__name__
        if not isinstance(action_space, spaces.Dict) or not all(
            isinstance(space, spaces.Box) for space in action_space.spaces.values()
        ):
            raise TypeError(f"{name} needs a Dict of per-agent Box action spaces, got {action_space}")
        if not isinstance(self.observation_space, spaces.Dict) or set(self.observation_space.spaces) != set(
            action_space.spaces
        ):
            raise TypeError(
                f"{name} needs Dict observation and action spaces keyed by the same agents, got "
                f"{self.observation_space} and {action_space}"
            )

    def _build_team(self, agents: Sequence[str] | None) -> None:
        """The agent order (default: the ``Dict`` keys), per-agent sizes, padded sizes and bounds."""
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
        self.obs_normalizer = GaussianNormalizer(self.obs_dim)
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
            ValueError: an agent's observation has the wrong shape, or NaN or inf entries (named by
                agent and index).
        """
        batch, vectorised = self._team_batch(observation)
        self._before_acting(deterministic)
        self.set_training_mode(False)
        with torch.no_grad():
            tensors = {a: torch.as_tensor(batch[a], device=self.device) for a in self.agents}
            check_finite_observation(tensors, vectorised)
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
                f"{type(self).__name__} acts on a dict of observations keyed by agent, "
                f"got {type(observation).__name__}"
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


class TeamAlgorithm(SequenceAlgorithm):
    """A :class:`~diffgym.trajectory.SequenceAlgorithm` over a PettingZoo team, learning offline from a
    team dataset; agents act through a :class:`TeamAgentPolicy`.

    ``Algo("MlpPolicy", parallel_env, dataset=...)``: the ``ParallelEnv`` is stepped through its joint
    view (``joint_env``, set by the agent to :class:`~diffgym.wrappers.JointAgentEnv`: the core does not
    import the wrappers), whose ``Dict`` spaces keyed by agent SB3 wraps in a ``DummyVecEnv`` as usual.
    The agent order is the dataset's (it is the training data's), else the env's; a dataset of another
    team is refused naming the agent that differs.
    """

    policy: TeamAgentPolicy
    action_space_types: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Dict,)
    #: the joint-agent Gymnasium view of a ``ParallelEnv`` (the agent sets it)
    joint_env: ClassVar[type[gym.Env]]

    def __init__(
        self,
        policy: str | type[TeamAgentPolicy],
        env: TeamEnv,
        dataset: DatasetLike | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        joint = self._as_joint(env)
        policy_kwargs = dict(policy_kwargs or {})
        if "agents" not in policy_kwargs:
            policy_kwargs["agents"] = self._team_order(joint, dataset)
        super().__init__(
            "MultiInputPolicy" if policy == "MlpPolicy" else policy,  # SB3 wants this name for Dict spaces
            joint,
            dataset,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    @classmethod
    def _as_joint(cls, env: TeamEnv) -> GymEnv | str | None:
        """A ``ParallelEnv`` as its joint-agent view; anything else unchanged."""
        return cls.joint_env(env) if isinstance(env, ParallelEnv) else env  # type: ignore[call-arg]

    @classmethod
    def _team_order(cls, env: GymEnv | str | None, dataset: DatasetLike | None) -> list[str] | None:
        """The agent order: the dataset's when there is one, else the env's."""
        if dataset is not None:
            if isinstance(env, cls.joint_env):
                check_agents_and_spaces(dataset, env)  # names the agent that differs
            return list(dataset_agents(dataset))
        agents = env.get_attr("agents")[0] if isinstance(env, VecEnv) else getattr(env, "agents", None)
        return list(agents) if agents is not None else None

    @classmethod
    def _wrap_env(cls, env: Any, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:  # type: ignore[override]
        return SequenceAlgorithm._wrap_env(cls._as_joint(env), verbose, monitor_wrapper)  # type: ignore[arg-type]

    @classmethod
    def from_parts(  # type: ignore[override]
        cls: type[SelfTeamAlgorithm],
        manifest: Mapping[str, Any],
        members: Mapping[str, Any],
        env: TeamEnv = None,
        *args: Any,
        **kwargs: Any,
    ) -> SelfTeamAlgorithm:
        """:meth:`~diffgym.algorithm.OfflineAlgorithm.from_parts` (so ``load`` too), also taking a
        ``ParallelEnv``."""
        return super().from_parts(manifest, members, cls._as_joint(env), *args, **kwargs)  # type: ignore[arg-type]

    def _offline_data(self, dataset: MinariDataset) -> SegmentBatches:
        """The team's segments on the device, agents in the model's order."""
        segments = MultiAgentSegmentDataset(dataset, self.policy.segment_horizon, discount=self.gamma)
        if len(segments) == 0:
            raise ValueError(f"{dataset.id} has no segment of {self.policy.segment_horizon} steps")
        order = [segments.agents.index(agent) for agent in self.policy.agents]
        rows = segments.rows()
        rows = rows._replace(observations=rows.observations[:, order], actions=rows.actions[:, order])
        return SegmentBatches(rows, segments.horizon, self.policy, self.device)

    def _prepare_batch(self, batch: SegmentSamples) -> SegmentSamples:
        return batch._replace(observations=self.policy.normalize_team(batch.observations))
