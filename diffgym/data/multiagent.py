"""Multi-agent offline data: a Minari dataset over a joint-agent view of a PettingZoo ``ParallelEnv``.

Minari has no multi-agent format, so diffgym stores a team of agents as **one Minari dataset of the
joint agent**, the view :class:`diffgym.wrappers.JointAgentEnv` gives of a ``ParallelEnv``:

- ``observation_space`` = ``Dict({agent: env.observation_space(agent)})`` and ``action_space`` likewise,
  one key per agent of ``env.possible_agents``. Gymnasium's ``Dict`` *sorts* its keys (``agent_10``
  before ``agent_2``), so the agent order is stored explicitly in the dataset metadata ``agents`` (the
  env's ``possible_agents`` order) and every reader here returns agents in that order.
- ``rewards`` = the **team reward**: the mean over all ``n`` agents of their step rewards (an agent
  that has already finished counts 0), so a team return is the mean of the agents' returns. This is
  the shared MPE README's episode return ("sum over steps of the agents' mean reward"); the metadata
  ``team_reward`` records the definition (``"mean"``).
- ``infos`` hold the per-agent step data, ``T`` rows per episode aligned with the steps (like
  ``rewards``; there is no entry for the reset), in agent order: ``agent_rewards`` (T, n) float,
  ``agent_terminations`` and ``agent_truncations`` (T, n) bool.
- ``terminations`` / ``truncations`` are the team's: the episode ends at the step after which every
  agent has terminated or been truncated; it is *terminated* when every agent terminated, else
  *truncated*. An agent that finishes before the others keeps its final observation, gets reward 0,
  its flags stay true and its recorded action is a null action (zeros inside the space; not sent to
  the env).
- metadata: ``agents``, ``team_reward``, ``diffgym_multiagent`` (format version) and ``parallel_env``
  (``{"id", "kwargs"}`` for :func:`make_parallel_env`, when known), so :func:`recover_parallel_env`
  rebuilds the env.

Why this and not the alternatives: a stacked ``Box((n, obs_dim))`` observation would make the agent
axis native but forces every agent to one shape and keeps identity only as a position; an own HDF5
layout (like the D4RL-style MPE files) would lose Minari's tooling (storage, metadata, episode
access, ``minari`` CLI). Keys keep each agent's identity and space (heterogeneous teams, ``Discrete``
actions) inside a standard Minari dataset that single-agent code can still read (with the team
reward), and the joint view is also a Gymnasium env, so SB3-style evaluation can step it.

Readers give arrays with an explicit agent axis (``n`` agents in metadata order; ``N`` steps, ``E``
episodes): :func:`read_multiagent_episodes` returns :class:`MultiAgentEpisodes` (observations
``(N + E, n, obs_dim)``, actions ``(N, n, act_dim)``, per-agent rewards ``(N, n)``, ...) and
:class:`MultiAgentSegmentDataset` windows of ``H`` steps shaped ``(B, H, n, D)`` with
:class:`~diffgym.data.SegmentDataset`'s padding. Each agent's observation / action is flattened as
:func:`~diffgym.data.flatten_observations` does (``Discrete`` becomes one-hot); agents of different
sizes are zero-padded to the largest, their own sizes kept in ``observation_dims`` / ``action_dims``.

Data comes from :func:`collect_multiagent_dataset` (any ``ParallelEnv``, any per-agent or joint
policy) or :func:`import_multiagent_d4rl` (D4RL-layout files with an agent axis such as the shared
``mpe-spread-*.hdf5``; :func:`~diffgym.data.import_d4rl` and :func:`~diffgym.data.load_dataset` hand
such files to it).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import gymnasium as gym
import h5py
import numpy as np
from gymnasium import spaces
from minari import MinariDataset
from minari.data_collector import EpisodeBuffer
from pettingzoo import ParallelEnv

from diffgym.data._tree import stack_tree
from diffgym.data.loading import DatasetLike, flatten_observations, load_dataset, read_episodes
from diffgym.data.making import (
    _action_box,
    _create,
    _float_dtype,
    _references,
    _split_episodes,
    _with_dtype,
    imported_dataset_id,
)
from diffgym.data.segments import SegmentRows, SegmentWindows, discounted_returns_to_go, segment_layout
from diffgym.data.validation import DatasetSpaceMismatchError, check_finite, check_spaces
from diffgym.scores import get_reference

__all__ = [
    "AGENT_INFO_KEYS",
    "FORMAT_VERSION",
    "TEAM_REWARD",
    "AgentMismatchError",
    "JointStep",
    "JointStepper",
    "MultiAgentEpisodes",
    "MultiAgentSegmentDataset",
    "MultiAgentSegments",
    "check_agents_and_spaces",
    "collect_multiagent_dataset",
    "dataset_agents",
    "import_multiagent_d4rl",
    "make_parallel_env",
    "read_multiagent_episodes",
    "recover_parallel_env",
    "stack_agents",
    "team_flags",
    "team_reward",
    "unstack_agents",
    "validate_multiagent_dataset",
]

#: Version of this format, stored in the metadata under :data:`_FORMAT_KEY`.
FORMAT_VERSION = 1
_FORMAT_KEY = "diffgym_multiagent"
#: The team reward's definition, stored in the metadata ``team_reward``.
TEAM_REWARD = "mean"
#: Per-agent step infos of the format, each (T, n) per episode in agent order.
AGENT_REWARDS, AGENT_TERMINATIONS, AGENT_TRUNCATIONS = (
    "agent_rewards",
    "agent_terminations",
    "agent_truncations",
)
AGENT_INFO_KEYS = (AGENT_REWARDS, AGENT_TERMINATIONS, AGENT_TRUNCATIONS)
#: The per-step (T, n) arrays of a multi-agent D4RL-layout file (the others have a feature axis too).
_AGENT_FLAG_ARRAYS = frozenset({"rewards", "terminals", "timeouts"})
#: Largest |team reward - mean of the agents' rewards| accepted when loading (float32 storage).
TEAM_REWARD_TOLERANCE = 1e-5

#: A joint policy: every agent's observation -> every acting agent's action.
JointPolicy: TypeAlias = Callable[[dict[str, Any]], Mapping[str, Any]]
#: What :func:`collect_multiagent_dataset` accepts as policy.
Policies: TypeAlias = Mapping[str, Callable[[Any], Any]] | JointPolicy | str | None


class AgentMismatchError(ValueError):
    """The agents of a dataset, its arrays or an env disagree (count or names)."""


# --------------------------------------------------------------------------- team definitions


def team_reward(agent_rewards: np.ndarray) -> np.ndarray:
    """The team reward: the mean over the last (agent) axis, ``(..., n) -> (...)``, float64."""
    return np.asarray(agent_rewards, dtype=np.float64).mean(axis=-1)


def team_flags(terminations: np.ndarray, truncations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The team's ``(terminated, truncated)`` from per-agent flags ``(..., n)`` -> two ``(...)`` bool arrays.

    The team is done when every agent is; terminated when every agent terminated, else truncated.
    """
    terminations, truncations = np.asarray(terminations, bool), np.asarray(truncations, bool)
    done = (terminations | truncations).all(axis=-1)
    terminated = np.asarray(terminations.all(axis=-1))
    return terminated, np.asarray(done & ~terminated)


# --------------------------------------------------------------------------- stepping a ParallelEnv


class JointStep(NamedTuple):
    """One reset or step of a ``ParallelEnv`` seen as a joint agent (agents in ``possible_agents`` order)."""

    observations: dict[str, Any]  #: agent -> latest observation (a finished agent keeps its final one)
    actions: dict[str, Any] | None  #: agent -> action as recorded (null for finished agents); None at reset
    agent_rewards: np.ndarray  #: (n,) float64, 0 for agents finished earlier (and at reset)
    terminations: np.ndarray  #: (n,) bool, stays true once an agent terminated
    truncations: np.ndarray  #: (n,) bool, stays true once an agent was truncated
    agent_infos: dict[str, Any]  #: agent -> its info of this step ({} when it did not act)

    @property
    def terminated(self) -> bool:
        """Whether every agent has terminated (see :func:`team_flags`)."""
        return bool(team_flags(self.terminations, self.truncations)[0])

    @property
    def truncated(self) -> bool:
        """Whether every agent has finished and not all terminated."""
        return bool(team_flags(self.terminations, self.truncations)[1])

    def info(self) -> dict[str, Any]:
        """The joint info: :data:`AGENT_INFO_KEYS` arrays (n,) and ``agent_infos``."""
        return {
            AGENT_REWARDS: self.agent_rewards,
            AGENT_TERMINATIONS: self.terminations,
            AGENT_TRUNCATIONS: self.truncations,
            "agent_infos": self.agent_infos,
        }


class JointStepper:
    """Resets and steps a PettingZoo ``ParallelEnv`` as one joint agent over ``possible_agents``.

    Every possible agent must be present after a reset. The shared logic of
    :func:`collect_multiagent_dataset` and :class:`diffgym.wrappers.JointAgentEnv`.
    """

    def __init__(self, env: ParallelEnv) -> None:
        self.env = env
        self.agents: tuple[str, ...] = tuple(env.possible_agents)
        self.observation_spaces = {agent: env.observation_space(agent) for agent in self.agents}
        self.action_spaces = {agent: env.action_space(agent) for agent in self.agents}
        self._last: JointStep | None = None

    def reset(self, seed: int | None = None, options: dict | None = None) -> JointStep:
        """Reset the env; raises :class:`AgentMismatchError` unless every possible agent is there."""
        observations, infos = self.env.reset(seed=seed, options=options)
        missing = [agent for agent in self.agents if agent not in observations]
        if missing:
            raise AgentMismatchError(
                f"after reset the env has no observation for {missing}: the joint-agent view needs every "
                f"possible agent {list(self.agents)} from the start"
            )
        n = len(self.agents)
        self._last = JointStep(
            {agent: observations[agent] for agent in self.agents},
            None,
            np.zeros(n),
            np.zeros(n, bool),
            np.zeros(n, bool),
            {agent: dict(infos.get(agent, {})) for agent in self.agents},
        )
        return self._last

    def step(self, actions: Mapping[str, Any]) -> JointStep:
        """Send the actions of the agents still acting (others are ignored) and join the results.

        Raises:
            RuntimeError: before a reset or after the team is done.
            KeyError: an acting agent without an action.
        """
        last = self._last
        if last is None or last.terminated or last.truncated:
            raise RuntimeError("reset the env first: the episode has not started or is over")
        acting = [
            agent for k, agent in enumerate(self.agents) if not (last.terminations[k] or last.truncations[k])
        ]
        missing = [agent for agent in acting if agent not in actions]
        if missing:
            raise KeyError(f"no action for acting agents {missing}; got actions for {sorted(actions)}")
        observations, rewards, terminations, truncations, infos = self.env.step(
            {agent: actions[agent] for agent in acting}
        )
        self._last = JointStep(
            {agent: _latest(observations, last.observations, agent) for agent in self.agents},
            {
                agent: actions[agent] if agent in acting else _null_action(self.action_spaces[agent])
                for agent in self.agents
            },
            np.array([float(rewards.get(agent, 0.0)) for agent in self.agents]),
            last.terminations | [bool(terminations.get(agent, False)) for agent in self.agents],
            last.truncations | [bool(truncations.get(agent, False)) for agent in self.agents],
            {agent: dict(infos.get(agent, {})) for agent in self.agents},
        )
        return self._last


def _latest(observations: Mapping[str, Any], previous: Mapping[str, Any], agent: str) -> Any:
    """The agent's new observation, else a copy of its previous one (every step returns new objects)."""
    return observations[agent] if agent in observations else copy.deepcopy(previous[agent])


def _truncate_unfinished(
    terminations: np.ndarray, truncations: np.ndarray, team_truncated: np.ndarray
) -> np.ndarray:
    """Per-agent truncations (T, n) where the team is truncated (T,): every agent not terminated is too."""
    return truncations | (team_truncated[:, None] & ~terminations)


def _null_action(space: spaces.Space) -> Any:
    """The action recorded for an agent that no longer acts: zeros clipped into a Box, ``start`` of a Discrete."""
    if isinstance(space, spaces.Box):
        return np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Discrete):
        return space.start
    return np.zeros(space.shape or (), dtype=space.dtype)


# --------------------------------------------------------------------------- collecting


def collect_multiagent_dataset(
    env: ParallelEnv,
    policies: Policies,
    dataset_id: str,
    n_episodes: int,
    seed: int = 0,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
    algorithm_name: str | None = None,
    description: str | None = None,
) -> MinariDataset:
    """Roll out a team in a PettingZoo ``ParallelEnv`` and store it in diffgym's multi-agent format.

    Episode ``i`` is reset with seed ``seed + i`` (recorded per episode).

    Args:
        env: any ``ParallelEnv`` whose possible agents are all present after a reset.
        policies: ``{agent: obs -> action}`` (one callable per agent, every agent needed); a callable
            taking every agent's observation dict and returning an action dict (a joint policy); or
            ``None`` / ``"random"`` for uniform random actions (agent ``k``'s space seeded ``seed + k``).
        dataset_id: the new Minari id; must not exist yet.
        n_episodes: episodes to collect.
        seed: seed of the first reset and of random actions.
        env_id, env_kwargs: how :func:`make_parallel_env` rebuilds the env (e.g. ``"mpe2.simple_spread_v3"``
            and its kwargs), stored so that :func:`recover_parallel_env` works; optional.
        max_episode_steps: cut an episode after this many steps (marked truncated), for envs without
            their own limit.
        algorithm_name, description: Minari metadata (defaults describe the policy and env).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be at least 1, not {n_episodes}")
    stepper = JointStepper(env)
    act, policy_name = _joint_policy(stepper, policies, seed)
    buffers = [_rollout(stepper, act, seed + index, index, max_episode_steps) for index in range(n_episodes)]
    env_name = env.metadata.get("name", type(env).__name__)
    dataset = _create(
        dataset_id,
        buffers,
        None,
        spaces.Dict(stepper.observation_spaces),
        spaces.Dict(stepper.action_spaces),
        algorithm_name=algorithm_name or policy_name,
        author=None,
        description=description or f"{policy_name} policy on the PettingZoo env {env_name}, seed {seed}",
    )
    parallel_env = None if env_id is None else {"id": env_id, "kwargs": env_kwargs or {}}
    dataset.storage.update_metadata(_format_metadata(stepper.agents, parallel_env))
    return dataset


def _format_metadata(agents: Sequence[str], parallel_env: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata that marks a dataset as diffgym's multi-agent format."""
    return {
        _FORMAT_KEY: FORMAT_VERSION,
        "agents": list(agents),
        "team_reward": TEAM_REWARD,
        "parallel_env": parallel_env,
    }


def _joint_policy(stepper: JointStepper, policies: Policies, seed: int) -> tuple[JointPolicy, str]:
    """Turn the accepted policy forms into one joint policy and a name for the metadata."""
    if policies is None or (isinstance(policies, str) and policies == "random"):
        for k, space in enumerate(stepper.action_spaces.values()):
            space.seed(seed + k)
        return (
            lambda _obs: {agent: space.sample() for agent, space in stepper.action_spaces.items()}
        ), "random"
    if isinstance(policies, Mapping):
        missing = [agent for agent in stepper.agents if agent not in policies]
        if missing:
            raise AgentMismatchError(f"no policy for agents {missing}; policies given for {sorted(policies)}")
        per_agent = dict(policies)
        names = sorted({getattr(policy, "__name__", type(policy).__name__) for policy in per_agent.values()})
        return (lambda obs: {agent: per_agent[agent](obs[agent]) for agent in stepper.agents}), "+".join(
            names
        )
    if callable(policies):
        return policies, getattr(policies, "__name__", type(policies).__name__)
    raise TypeError(
        f"policies must be a dict of callables, a joint callable, None or 'random', not {policies!r}"
    )


def _rollout(
    stepper: JointStepper, act: JointPolicy, seed: int, episode_id: int, max_steps: int | None
) -> EpisodeBuffer:
    """One episode as an episode buffer of the format (see the module docstring)."""
    step = stepper.reset(seed=seed)
    observations, steps = [step.observations], []
    while not (step.terminated or step.truncated):
        step = stepper.step(act(step.observations))
        observations.append(step.observations)
        steps.append(step)
        if max_steps is not None and len(steps) >= max_steps:
            break
    terminated, truncated = team_flags(
        np.stack([s.terminations for s in steps]), np.stack([s.truncations for s in steps])
    )
    truncated[-1] = not terminated[-1]  # also an episode cut by max_steps
    return EpisodeBuffer(
        id=episode_id,
        seed=seed,
        observations=stack_tree(observations),
        actions=stack_tree([s.actions for s in steps]),
        rewards=team_reward(np.stack([s.agent_rewards for s in steps])),
        terminations=terminated,
        truncations=truncated,
        infos={
            AGENT_REWARDS: np.stack([s.agent_rewards for s in steps]),
            AGENT_TERMINATIONS: np.stack([s.terminations for s in steps]),
            AGENT_TRUNCATIONS: _truncate_unfinished(
                np.stack([s.terminations for s in steps]), np.stack([s.truncations for s in steps]), truncated
            ),
        },
    )


# --------------------------------------------------------------------------- env identity


def make_parallel_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> ParallelEnv:
    """Make a PettingZoo ``ParallelEnv`` from an importable name.

    ``env_id`` is a module with a ``parallel_env`` function (``"mpe2.simple_spread_v3"``), an explicit
    ``"module:function"``, or the shared files' spelling ``"mpe2 simple_spread_v3 parallel_env"``
    (package, module, function separated by spaces).
    """
    if ":" in env_id:
        module, function = env_id.split(":", 1)
    elif " " in env_id:
        *parts, function = env_id.split()
        module = ".".join(parts)
    else:
        module, function = env_id, "parallel_env"
    make = getattr(importlib.import_module(module), function)
    env = make(**dict(env_kwargs or {}))
    if not isinstance(env, ParallelEnv):
        raise TypeError(f"{module}.{function}(...) gave {type(env).__name__}, not a PettingZoo ParallelEnv")
    return env


def recover_parallel_env(dataset: DatasetLike) -> ParallelEnv:
    """Rebuild the ``ParallelEnv`` a multi-agent dataset records (metadata ``parallel_env``)."""
    data = load_dataset(dataset)
    recorded = data.storage.metadata.get("parallel_env")
    if not recorded:
        raise ValueError(f"dataset {data.id} does not record its env (pass env_id when collecting)")
    return make_parallel_env(recorded["id"], recorded.get("kwargs"))


# --------------------------------------------------------------------------- reading


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


def dataset_agents(dataset: DatasetLike) -> tuple[str, ...]:
    """The agent ids of a multi-agent dataset in its stored order; checks them against its spaces.

    Raises:
        ValueError: not a dataset in this format.
        AgentMismatchError: the metadata's agents and the ``Dict`` space keys differ.
    """
    data = load_dataset(dataset)
    agents = data.storage.metadata.get("agents")
    if not agents or _FORMAT_KEY not in data.storage.metadata:
        raise ValueError(
            f"dataset {data.id} is not in diffgym's multi-agent format (its metadata lacks "
            f"{_FORMAT_KEY!r} / 'agents'); make it with collect_multiagent_dataset or import_multiagent_d4rl"
        )
    for what, space in (("observation", data.observation_space), ("action", data.action_space)):
        keys = list(space.spaces) if isinstance(space, spaces.Dict) else None
        if keys is None or set(keys) != set(agents) or len(keys) != len(agents):
            raise AgentMismatchError(
                f"dataset {data.id}: metadata lists {len(agents)} agents {agents} but the {what} space has "
                f"keys {keys}"
            )
    return tuple(agents)


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


def check_agents_and_spaces(dataset: DatasetLike, env: ParallelEnv | gym.Env) -> None:
    """Check that a multi-agent dataset has the env's agents and, agent by agent, its spaces.

    Agents are matched by name: the env may list them in another order (the dataset's order is the
    one every reader returns).

    Raises:
        AgentMismatchError: a different number of agents or different names.
        DatasetSpaceMismatchError: naming the agent and the differing part, e.g.
            ``observation['agent_1'] shape (18,) in the dataset but (17,) in the env``.
    """
    data = load_dataset(dataset)
    agents = dataset_agents(data)
    env_agents, observation_space, action_space = _env_agents_and_spaces(env)
    if len(env_agents) != len(agents) or set(env_agents) != set(agents):
        raise AgentMismatchError(
            f"dataset {data.id} has {len(agents)} agents {list(agents)} but the env has {len(env_agents)} "
            f"{list(env_agents)}"
        )
    check_spaces(data.observation_space, observation_space, "observation")
    check_spaces(data.action_space, action_space, "action")


def _env_agents_and_spaces(env: ParallelEnv | gym.Env) -> tuple[tuple[str, ...], spaces.Space, spaces.Space]:
    """An env's agents and joint ``Dict`` spaces, for a ``ParallelEnv`` or a joint-agent Gymnasium env."""
    if isinstance(env, gym.Env):
        if not isinstance(env.observation_space, spaces.Dict):
            raise AgentMismatchError(
                f"a joint-agent env has Dict spaces keyed by agent, not {env.observation_space}"
            )
        agents = tuple(getattr(env, "agents", env.observation_space.spaces))
        return agents, env.observation_space, env.action_space
    agents = tuple(env.possible_agents)
    return (
        agents,
        spaces.Dict({agent: env.observation_space(agent) for agent in agents}),
        spaces.Dict({agent: env.action_space(agent) for agent in agents}),
    )


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


# --------------------------------------------------------------------------- segments


class MultiAgentSegments(NamedTuple):
    """A batch of ``B`` multi-agent segments of horizon ``H`` (``n`` agents in dataset order)."""

    observations: np.ndarray  #: (B, H, n, obs_dim) float32
    actions: np.ndarray  #: (B, H, n, act_dim) float32
    rewards: np.ndarray  #: (B, H) float32 team reward, zero on padding
    agent_rewards: np.ndarray  #: (B, H, n) float32, zero on padding
    mask: np.ndarray  #: (B, H) bool, True on real steps
    returns: np.ndarray  #: (B,) float32 discounted team return-to-go from the segment start
    agent_returns: np.ndarray  #: (B, n) float32 discounted return-to-go of each agent


class MultiAgentSegmentDataset(SegmentWindows[MultiAgentSegments]):
    """Windows of ``horizon`` steps of a multi-agent dataset, with :class:`~diffgym.data.SegmentDataset`'s padding.

    The same rows as ``SegmentDataset`` (:func:`~diffgym.data.segment_layout`): padding repeats each
    agent's final observation with zero actions and rewards (mask False); ``pad_before`` rows repeat
    the first step. ``observations`` / ``actions`` give the real steps, ``(N_steps, n, D)``.

    Args:
        dataset: anything :func:`read_multiagent_episodes` accepts.
        horizon: ``H``, steps per segment.
        discount: discount of the returns-to-go.
        use_padding: every step starts a window (True) or only windows of ``H`` real steps (False).
        pad_before: rows repeating each episode's first step before it.
        env: checked against the dataset when given (see :func:`read_multiagent_episodes`).
    """

    def __init__(
        self,
        dataset: DatasetLike,
        horizon: int,
        discount: float = 0.99,
        use_padding: bool = True,
        pad_before: int = 0,
        env: ParallelEnv | gym.Env | None = None,
    ) -> None:
        episodes = read_multiagent_episodes(dataset, env)
        layout = segment_layout(episodes.lengths, horizon, use_padding, pad_before)
        self.agents, self.horizon, self.discount = episodes.agents, horizon, discount
        self.observation_dims, self.action_dims = episodes.observation_dims, episodes.action_dims
        self._observations = layout.observations(episodes.observations)
        self._actions = layout.actions(episodes.actions)
        self._rewards = layout.rewards(episodes.rewards)
        self._agent_rewards = layout.rewards(episodes.agent_rewards)
        self._mask, self._starts = layout.mask, layout.starts
        returns = np.stack(
            [
                discounted_returns_to_go(rewards, episodes.lengths, discount)
                for rewards in (episodes.rewards, *episodes.agent_rewards.T)
            ],
            axis=1,
        )[layout.start_steps]
        self._returns, self._agent_returns = returns[:, 0], returns[:, 1:]

    def rows(self) -> SegmentRows:
        """The padded row arrays (observations (R, n, obs_dim), actions (R, n, act_dim), team rewards
        (R,)) and window starts with the team's returns-to-go, e.g. to move them to a device once."""
        return SegmentRows(
            self._observations, self._actions, self._rewards, self._mask, self._starts, self._returns, None
        )

    def __getitem__(self, indices: np.ndarray) -> MultiAgentSegments:
        """The segments at ``indices`` (B,) ints in ``[0, len(self))``."""
        rows = self._window_rows(indices)
        return MultiAgentSegments(
            observations=self._observations[rows],
            actions=self._actions[rows],
            rewards=self._rewards[rows],
            agent_rewards=self._agent_rewards[rows],
            mask=self._mask[rows],
            returns=self._returns[indices],
            agent_returns=self._agent_returns[indices],
        )


# --------------------------------------------------------------------------- D4RL-layout import


def import_multiagent_d4rl(
    path: str | Path,
    dataset_id: str | None = None,
    env: ParallelEnv | None = None,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    agents: Sequence[str] | None = None,
    description: str | None = None,
) -> MinariDataset:
    """Import a D4RL-layout HDF5 file with an agent axis (the shared ``mpe-spread-*.hdf5``) into the format.

    The file holds ``observations`` (T, n, ...), ``actions`` (T, n, ...), ``rewards``, ``terminals`` and
    optionally ``timeouts`` (T, n) and ``next_observations`` (T, n, ...), agents in the order of its
    metadata ``agents``. Episodes end at rows where every agent is terminated or timed out; without
    ``next_observations`` the last transition of each episode is dropped, as :func:`~diffgym.data.import_d4rl`
    does (whose other rules apply too). Other ``infos/`` arrays are not imported (a warning says so).

    Args:
        path: the ``.hdf5`` file.
        dataset_id: the new Minari id; default :func:`~diffgym.data.imported_dataset_id`.
        env: the ``ParallelEnv`` whose spaces the data must fit; default made by :func:`make_parallel_env`
            from ``env_id`` / ``env_kwargs`` or the file's metadata ``env_id`` / ``env_kwargs``. Without
            any env the spaces come from the arrays (``Box(-inf, inf)`` observations, ``Box(-1, 1)`` or
            the data's range for actions).
        env_id, env_kwargs: override the file's.
        agents: the agent ids in the file's order; default the metadata ``agents``, else the env's
            ``possible_agents``.
        description: Minari description.

    Reference returns come from the metadata (as :func:`~diffgym.data.import_d4rl`), else from
    :mod:`diffgym.scores` by the file name (``mpe-spread-*``: the shared README's random / expert).

    Raises:
        ValueError: arrays without a (common) agent axis or missing.
        AgentMismatchError: the agent ids do not match the arrays or the env.
        DatasetSpaceMismatchError: an agent's arrays do not fit its space in the env.
    """
    path = Path(path)
    with h5py.File(path, "r") as file:
        meta = json.loads(file.attrs.get("metadata", "{}"))
        arrays = _read_agent_arrays(file, path)
    env_id = env_id or meta.get("env_id")
    env_kwargs = env_kwargs if env_kwargs is not None else meta.get("env_kwargs", {})
    own_env = env is None and env_id is not None
    if own_env:
        env = _try_make_parallel(env_id, env_kwargs)
    try:
        agents = _file_agents(agents or meta.get("agents"), env, arrays["rewards"].shape[1], path)
        obs_spaces, action_spaces = _agent_spaces(arrays, agents, env, path)
    finally:
        if own_env and env is not None:
            env.close()
    buffers = _split_episodes(
        _team_arrays(arrays), _dtype_box(arrays["observations"]), _dtype_box(arrays["actions"])
    )
    dataset = _create(
        dataset_id or imported_dataset_id(path),
        [_agent_buffer(buffer, agents) for buffer in buffers],
        None,
        spaces.Dict(obs_spaces),
        spaces.Dict(action_spaces),
        algorithm_name=meta.get("made_by", "unknown (D4RL-layout file)"),
        author=None,
        description=description
        or f"Imported from the multi-agent D4RL-layout file {path.name} (env {env_id})",
    )
    parallel_env = {"id": env_id, "kwargs": env_kwargs} if env_id else None
    source = {
        "source_file": path.name,
        "source_env_id": env_id,
        "source_env_kwargs": env_kwargs,
        "source_metadata": meta,
    }
    dataset.storage.update_metadata(
        {**_format_metadata(agents, parallel_env), **source, **_file_references(meta, path)}
    )
    return dataset


def _read_agent_arrays(file: h5py.File, path: Path) -> dict[str, np.ndarray]:
    """The file's arrays, checked to share ``T`` rows and ``n`` agents on axis 1."""
    required = ("observations", "actions", "rewards", "terminals")
    missing = [key for key in required if key not in file]
    if missing:
        raise ValueError(f"{path} is not a D4RL-layout file: it lacks {missing}")
    keys = [key for key in (*required, "timeouts", "next_observations") if key in file]
    arrays = {key: file[key][()] for key in keys}
    rewards = arrays["rewards"]
    if rewards.ndim != 2:
        raise ValueError(
            f"{path}: the multi-agent importer needs rewards shaped (T, n_agents), not {rewards.shape}"
        )
    shape = rewards.shape
    wrong = {key: value.shape for key, value in arrays.items() if not _agent_shaped(key, value.shape, shape)}
    if wrong:
        raise ValueError(
            f"{path}: the multi-agent importer needs every array shaped (T, n_agents, ...) with T, n_agents = "
            f"{shape} (observations and actions with a feature axis); these differ: {wrong}"
        )
    ignored = sorted(f"infos/{name}" for name in file.get("infos", {}))
    if ignored:
        warnings.warn(
            f"{path}: not importing {ignored} (the multi-agent importer keeps no extra infos)", stacklevel=3
        )
    arrays["terminals"] = arrays["terminals"].astype(bool)
    arrays["timeouts"] = arrays.get("timeouts", np.zeros(shape, bool)).astype(bool)
    return arrays


def _agent_shaped(key: str, shape: tuple[int, ...], steps_agents: tuple[int, ...]) -> bool:
    """Whether a file array has the (T, n) rows of ``rewards``: flags exactly, vectors with a feature axis."""
    if key in _AGENT_FLAG_ARRAYS:
        return shape == steps_agents
    return len(shape) >= 3 and shape[:2] == steps_agents


def _try_make_parallel(env_id: str, env_kwargs: dict[str, Any]) -> ParallelEnv | None:
    """:func:`make_parallel_env`, or None with a warning when it cannot be made."""
    try:
        return make_parallel_env(env_id, env_kwargs)
    except Exception as error:
        warnings.warn(
            f"cannot make the PettingZoo env {env_id!r} ({error}); spaces come from the arrays", stacklevel=4
        )
        return None


def _file_agents(
    agents: Sequence[str] | None, env: ParallelEnv | None, n: int, path: Path
) -> tuple[str, ...]:
    """The file's agent ids, checked against its agent axis and the env's agents."""
    if agents is None and env is not None:
        agents = env.possible_agents
    if agents is None:
        raise ValueError(f"{path}: its metadata names no agents and there is no env; pass agents=[...]")
    agents = tuple(agents)
    if len(agents) != n or len(set(agents)) != n:
        raise AgentMismatchError(f"{path}: its arrays have {n} agents but the agent ids are {list(agents)}")
    if env is not None and (len(env.possible_agents) != n or set(env.possible_agents) != set(agents)):
        raise AgentMismatchError(
            f"{path}: the file has {n} agents {list(agents)} but the env has {len(env.possible_agents)} "
            f"{list(env.possible_agents)}"
        )
    return agents


def _agent_spaces(
    arrays: dict[str, np.ndarray], agents: tuple[str, ...], env: ParallelEnv | None, path: Path
) -> tuple[dict[str, spaces.Space], dict[str, spaces.Space]]:
    """Each agent's observation and action space: the env's with the file's float dtype, or from the arrays."""
    obs, actions = arrays["observations"], arrays["actions"]
    if env is None:
        observation_box = spaces.Box(-np.inf, np.inf, obs.shape[2:], _float_dtype(obs.dtype))
        return (
            {agent: observation_box for agent in agents},
            {agent: _action_box(actions[:, k]) for k, agent in enumerate(agents)},
        )
    return (
        {
            a: _fitting(env.observation_space(a), obs[:, k], a, k, "observation", path)
            for k, a in enumerate(agents)
        },
        {a: _fitting(env.action_space(a), actions[:, k], a, k, "action", path) for k, a in enumerate(agents)},
    )


def _fitting(
    env_space: spaces.Space, array: np.ndarray, agent: str, k: int, what: str, path: Path
) -> spaces.Space:
    """The env's space for agent ``k``'s rows ``array`` (T, ...) with the file's float dtype, or an error."""
    space = _with_dtype(env_space, array)
    if space is None:
        raise DatasetSpaceMismatchError(
            f"{path}: {what} of agent {agent!r} (index {k}) has shape {array.shape[1:]} and dtype {array.dtype} "
            f"in the file, which do not fit the env's {what} space {env_space}"
        )
    return space


def _dtype_box(array: np.ndarray) -> spaces.Box:
    """A Box carrying the array's (float) dtype, all that the episode splitting uses of a space."""
    return spaces.Box(-np.inf, np.inf, array.shape[1:], _float_dtype(array.dtype))


def _team_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The flat team arrays the D4RL episode splitting takes; per-agent arrays go to ``infos/``."""
    terminated, truncated = team_flags(arrays["terminals"], arrays["timeouts"])
    vectors = ("observations", "actions", "next_observations")
    team: dict[str, np.ndarray] = {key: arrays[key] for key in vectors if key in arrays}
    return {
        **team,
        "rewards": team_reward(arrays["rewards"]),
        "terminals": terminated,
        "timeouts": truncated,
        f"infos/{AGENT_REWARDS}": arrays["rewards"],
        f"infos/{AGENT_TERMINATIONS}": arrays["terminals"],
        f"infos/{AGENT_TRUNCATIONS}": arrays["timeouts"],
    }


def _agent_buffer(buffer: EpisodeBuffer, agents: tuple[str, ...]) -> EpisodeBuffer:
    """A split episode in the format: agent-keyed observations and actions, per-agent infos of ``T`` rows.

    The split repeats each info's last row for the final observation (dropped here) and may mark the
    last step truncated (an unterminated tail, or a transition dropped for want of a next
    observation): every agent that has not terminated is then truncated too.
    """
    assert buffer.infos is not None
    infos = {key: np.asarray(value)[:-1] for key, value in buffer.infos.items()}
    infos[AGENT_TRUNCATIONS] = _truncate_unfinished(
        infos[AGENT_TERMINATIONS], infos[AGENT_TRUNCATIONS], np.asarray(buffer.truncations, bool)
    )
    observations, actions = np.asarray(buffer.observations), np.asarray(buffer.actions)
    return dataclasses.replace(
        buffer,
        observations={agent: observations[:, k] for k, agent in enumerate(agents)},
        actions={agent: actions[:, k] for k, agent in enumerate(agents)},
        infos=infos,
    )


def _file_references(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """Reference returns from the file's metadata, else :mod:`diffgym.scores` by the file name."""
    from_meta = _references(meta)
    if from_meta:
        return from_meta
    try:
        reference = get_reference(path.stem)
    except KeyError:
        return {}
    return {
        "ref_min_score": reference.random,
        "ref_max_score": reference.expert,
        "ref_score_source": reference.source,
    }
