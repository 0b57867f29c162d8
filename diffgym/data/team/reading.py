"""Read a dataset of the team format into arrays with an explicit agent axis.

``n`` agents in metadata order, ``N`` steps, ``E`` episodes: observations ``(N + E, n, obs_dim)``,
actions ``(N, n, act_dim)``, per-agent rewards ``(N, n)``. Each agent's observation / action is flattened
as :func:`~diffgym.data.flatten_observations` does (``Discrete`` becomes one-hot); agents of different
sizes are zero-padded to the largest, their own sizes kept in ``observation_dims`` / ``action_dims``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from diffgym.data.loading import DatasetLike, flatten_observations, load_dataset, read_episodes
from diffgym.data.team.checks import check_agents_and_spaces, dataset_agents
from diffgym.data.team.format import (
    AGENT_INFO_KEYS,
    AGENT_REWARDS,
    AGENT_TERMINATIONS,
    AGENT_TRUNCATIONS,
    AgentMismatchError,
    team_reward,
)
from diffgym.data.validation import check_finite

__all__ = [
    "MultiAgentEpisodes",
    "read_multiagent_episodes",
    "stack_agents",
    "unstack_agents",
    "validate_multiagent_dataset",
]

#: Largest |team reward - mean of the agents' rewards| accepted when loading (float32 storage).
TEAM_REWARD_TOLERANCE = 1e-5


class MultiAgentEpisodes(NamedTuple):
    """Every episode of a multi-agent dataset, concatenated, with an agent axis in ``agents`` order.

    Episode ``i`` holds steps ``step_offsets[i]:step_offsets[i + 1]`` and the ``T + 1`` observations
    from row ``step_offsets[i] + i``, as :class:`~diffgym.data.EpisodeArrays`. Per-agent vectors are flattened and zero-padded to the
    largest agent's size; agent ``k``'s own size is ``observation_dims[k]`` / ``action_dims[k]``.
    """

    agents: tuple[str, ...]  #: the agent ids, in the dataset's (the env's ``possible_agents``) order
    observations: np.ndarray  #: (N + E, n, obs_dim) float32
    actions: np.ndarray  #: (N, n, act_dim) float32 (Discrete one-hot)
    rewards: np.ndarray  #: (N,) float32, the team reward (mean of ``agent_rewards`` over agents)
    agent_rewards: np.ndarray  #: (N, n) float32
    terminations: np.ndarray  #: (N, n) bool, per agent
    truncations: np.ndarray  #: (N, n) bool, per agent
    lengths: np.ndarray  #: (E,) int64, steps per episode
    episode_ids: np.ndarray  #: (E,) int64, Minari episode ids
    observation_dims: tuple[int, ...]  #: (n,) each agent's flat observation size
    action_dims: tuple[int, ...]  #: (n,) each agent's flat action size

    @property
    def step_offsets(self) -> np.ndarray:
        """(E + 1,) first step row of each episode, then N; episode ``i``'s observations start at row
        ``step_offsets[i] + i``."""
        return np.concatenate([[0], np.cumsum(self.lengths)])

    def team_returns(self) -> np.ndarray:
        """(E,) float64 undiscounted team return of each episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.step_offsets[:-1])

    def agent_returns(self) -> np.ndarray:
        """(E, n) float64 undiscounted return of each agent in each episode."""
        return np.add.reduceat(self.agent_rewards.astype(np.float64), self.step_offsets[:-1], axis=0)


def read_multiagent_episodes(
    dataset: DatasetLike, env: ParallelEnv | gym.Env | None = None, check_finite_values: bool = True
) -> MultiAgentEpisodes:
    """Read a multi-agent dataset into arrays with an agent axis, checking it on the way.

    Args:
        dataset: anything :func:`~diffgym.data.load_dataset` accepts (a D4RL-layout file with an agent
            axis is imported first).
        env: when given (a ``ParallelEnv`` or a joint-agent Gymnasium env with ``Dict`` spaces), the
            agents and both spaces must match it.
        check_finite_values: raise on NaN / inf in observations, actions, team or agent rewards.

    Raises:
        AgentMismatchError: the env's agents differ from the dataset's in count or names, or the per-agent
            infos do not have one column per agent.
        DatasetSpaceMismatchError: a space differs (the message names the agent, as ``observation['agent_1']``).
        NonFiniteDataError: naming the field and agent (``observations['agent_1']``), episode and step.
        ValueError: the team rewards are not the mean of the agents' rewards.
    """
    data = load_dataset(dataset)
    agents = dataset_agents(data)
    if env is not None:
        check_agents_and_spaces(data, env)
    arrays = read_episodes(data, info_keys=AGENT_INFO_KEYS, check_finite_values=check_finite_values)
    for key in AGENT_INFO_KEYS:
        columns = arrays.infos[key].shape[1:]
        if columns != (len(agents),):
            raise AgentMismatchError(
                f"dataset {data.id}: infos/{key} has {columns} columns per step but there are {len(agents)} "
                f"agents {list(agents)}"
            )
    observations, actions = arrays.observations, arrays.actions
    obs_space, act_space = data.observation_space, data.action_space
    assert isinstance(observations, dict) and isinstance(actions, dict)  # Dict spaces (dataset_agents)
    assert isinstance(obs_space, spaces.Dict) and isinstance(act_space, spaces.Dict)
    obs_parts = [flatten_observations(observations[a], obs_space[a]) for a in agents]
    act_parts = [flatten_observations(actions[a], act_space[a]) for a in agents]
    episodes = MultiAgentEpisodes(
        agents=agents,
        observations=stack_agents(dict(zip(agents, obs_parts, strict=True)), agents),
        actions=stack_agents(dict(zip(agents, act_parts, strict=True)), agents),
        rewards=arrays.rewards,
        agent_rewards=arrays.infos[AGENT_REWARDS].astype(np.float32),
        terminations=arrays.infos[AGENT_TERMINATIONS].astype(bool),
        truncations=arrays.infos[AGENT_TRUNCATIONS].astype(bool),
        lengths=arrays.lengths,
        episode_ids=arrays.episode_ids,
        observation_dims=tuple(part.shape[1] for part in obs_parts),
        action_dims=tuple(part.shape[1] for part in act_parts),
    )
    if check_finite_values:
        fields = {f"infos/{AGENT_REWARDS}[{a!r}]": episodes.agent_rewards[:, k] for k, a in enumerate(agents)}
        check_finite(fields, episodes.step_offsets, episodes.episode_ids)
    _check_team_rewards(episodes, data.id)
    return episodes


def validate_multiagent_dataset(dataset: DatasetLike, env: ParallelEnv | gym.Env | None = None) -> None:
    """Run every check of :func:`read_multiagent_episodes` (see there for the errors)."""
    read_multiagent_episodes(dataset, env)


def _check_team_rewards(episodes: MultiAgentEpisodes, dataset_id: str) -> None:
    """Raise unless every team reward is the mean of the agents' rewards (within float32 precision)."""
    expected = team_reward(episodes.agent_rewards)
    tolerance = TEAM_REWARD_TOLERANCE * np.maximum(1.0, np.abs(expected))
    bad = np.flatnonzero(np.abs(episodes.rewards - expected) > tolerance)
    if len(bad):
        row = int(bad[0])
        offsets = episodes.step_offsets
        episode = int(np.searchsorted(offsets, row, side="right") - 1)
        raise ValueError(
            f"dataset {dataset_id}: the team reward of episode {int(episodes.episode_ids[episode])} at step "
            f"{row - int(offsets[episode])} is {episodes.rewards[row]}, not the mean of the agents' rewards "
            f"{episodes.agent_rewards[row]} ({len(bad)} such steps)"
        )


def stack_agents(
    values: Mapping[str, np.ndarray], agents: Sequence[str], dim: int | None = None
) -> np.ndarray:
    """Stack per-agent vectors ``(..., d_k)`` into ``(..., n, dim)`` in ``agents`` order, zero-padding each to ``dim``.

    ``dim`` defaults to the largest ``d_k``. For example a joint observation dict of ``(obs_dim,)``
    arrays becomes ``(n, obs_dim)``, a batch of ``(B, obs_dim)`` arrays ``(B, n, obs_dim)``.
    """
    parts = [np.asarray(values[agent]) for agent in agents]
    dim = max(part.shape[-1] for part in parts) if dim is None else dim
    widths = [(0, 0)] * (parts[0].ndim - 1)
    padded = [np.pad(part, [*widths, (0, dim - part.shape[-1])]) for part in parts]
    return np.stack(padded, axis=-2)


def unstack_agents(
    array: np.ndarray, agents: Sequence[str], dims: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """The inverse of :func:`stack_agents`: ``(..., n, dim)`` -> ``{agent: (..., dims[k])}``."""
    array = np.asarray(array)
    if array.shape[-2] != len(agents):
        raise AgentMismatchError(
            f"array {array.shape} has {array.shape[-2]} agents on axis -2, not {len(agents)}"
        )
    sizes = list(dims) if dims is not None else [array.shape[-1]] * len(agents)
    return {agent: array[..., k, : sizes[k]] for k, agent in enumerate(agents)}
