"""Step a PettingZoo ``ParallelEnv`` as one joint agent over its ``possible_agents``.

The shared logic of :func:`~diffgym.data.collect_multiagent_dataset` and
:class:`diffgym.wrappers.JointAgentEnv`; the conventions (finished agents, team flags) are the format's
(:mod:`diffgym.data.team.format`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from diffgym.data.team.format import (
    AGENT_REWARDS,
    AGENT_TERMINATIONS,
    AGENT_TRUNCATIONS,
    AgentMismatchError,
    team_flags,
)

__all__ = ["JointStep", "JointStepper"]


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
        """Whether every agent has terminated (see :func:`~diffgym.data.team_flags`)."""
        return bool(team_flags(self.terminations, self.truncations)[0])

    @property
    def truncated(self) -> bool:
        """Whether every agent has finished and not all terminated."""
        return bool(team_flags(self.terminations, self.truncations)[1])

    def info(self) -> dict[str, Any]:
        """The joint info: the :data:`~diffgym.data.team.format.AGENT_INFO_KEYS` arrays (n,) and ``agent_infos``."""
        return {
            AGENT_REWARDS: self.agent_rewards,
            AGENT_TERMINATIONS: self.terminations,
            AGENT_TRUNCATIONS: self.truncations,
            "agent_infos": self.agent_infos,
        }


class JointStepper:
    """Resets and steps a PettingZoo ``ParallelEnv`` as one joint agent over ``possible_agents``.

    Every possible agent must be present after a reset. The shared logic of
    :func:`~diffgym.data.collect_multiagent_dataset` and :class:`diffgym.wrappers.JointAgentEnv`.
    """

    def __init__(self, env: ParallelEnv) -> None:
        self.env = env
        self.agents: tuple[str, ...] = tuple(env.possible_agents)
        self.observation_spaces = {agent: env.observation_space(agent) for agent in self.agents}
        self.action_spaces = {agent: env.action_space(agent) for agent in self.agents}
        self._last: JointStep | None = None

    def reset(self, seed: int | None = None, options: dict | None = None) -> JointStep:
        """Reset the env; raises :class:`~diffgym.data.AgentMismatchError` unless every possible agent is there."""
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


def _null_action(space: spaces.Space) -> Any:
    """The action recorded for an agent that no longer acts: zeros clipped into a Box, ``start`` of a Discrete."""
    if isinstance(space, spaces.Box):
        return np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Discrete):
        return space.start
    return np.zeros(space.shape or (), dtype=space.dtype)
