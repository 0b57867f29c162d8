"""A PettingZoo ``ParallelEnv`` as one Gymnasium env of the joint agent (diffgym's multi-agent data view).

:class:`JointAgentEnv` presents the team the way :mod:`diffgym.data.multiagent` stores it, so a
dataset collected from the parallel env fits the wrapper's spaces and SB3-style code (``reset``,
``step``, ``evaluate_policy`` with a single env) can step the team.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from diffgym.data.team import JointStepper, team_reward

__all__ = ["JointAgentEnv", "TeamPolicy", "evaluate_team"]


class JointAgentEnv(gym.Env[dict[str, Any], dict[str, Any]]):
    """Step every agent of a ``ParallelEnv`` at once, as one Gymnasium env.

    - ``observation_space`` / ``action_space``: ``Dict({agent: space})`` over ``possible_agents``.
      Gymnasium sorts ``Dict`` keys, so use :attr:`agents` (``possible_agents`` order) for the order.
    - ``step(actions)`` takes an action per agent (agents that have finished are skipped) and returns
      every agent's latest observation, the **team reward** (the mean of the agents' rewards, 0 for
      finished agents: :func:`diffgym.data.team_reward`), ``terminated`` when every agent terminated,
      ``truncated`` when every agent finished and not all terminated (:func:`diffgym.data.team_flags`).
    - ``info``: ``agent_rewards``, ``agent_terminations``, ``agent_truncations`` arrays ``(n,)`` in agent
      order (zeros / False after a reset) and ``agent_infos`` ``{agent: info}``.
    - A finished agent keeps its final observation until the team is done.

    Example:
        >>> from mpe2 import simple_spread_v3
        >>> env = JointAgentEnv(simple_spread_v3.parallel_env(N=3, max_cycles=5, continuous_actions=True))
        >>> obs, info = env.reset(seed=0)
        >>> env.agents, info["agent_rewards"].shape
        (('agent_0', 'agent_1', 'agent_2'), (3,))
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> bool(abs(reward - info["agent_rewards"].mean()) < 1e-12)
        True

    Args:
        env: a ``ParallelEnv`` whose possible agents are all present after a reset.
    """

    def __init__(self, env: ParallelEnv) -> None:
        self.parallel_env = env
        self._stepper = JointStepper(env)
        self.agents: tuple[str, ...] = self._stepper.agents
        self.observation_space = spaces.Dict(self._stepper.observation_spaces)
        self.action_space = spaces.Dict(self._stepper.action_spaces)
        self.metadata = dict(env.metadata)
        self.render_mode = getattr(env, "render_mode", None)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset the parallel env (with ``seed``); every agent's observation and the joint info."""
        super().reset(seed=seed)
        step = self._stepper.reset(seed=seed, options=options)
        return step.observations, step.info()

    def step(
        self, action: dict[str, Any]
    ) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        """One step of every acting agent; see the class docstring for what it returns."""
        step = self._stepper.step(action)
        reward = float(team_reward(step.agent_rewards))
        return step.observations, reward, step.terminated, step.truncated, step.info()

    def render(self) -> Any:
        """The parallel env's render."""
        return self.parallel_env.render()

    def close(self) -> None:
        """Close the parallel env."""
        self.parallel_env.close()


class TeamPolicy(Protocol):
    """What :func:`evaluate_team` drives: SB3's ``predict`` on ``{agent: observation}`` returning
    ``{agent: action}`` and a state passed back next step (MADiff's plans; None if unused)."""

    def predict(
        self,
        observation: dict[str, Any],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[Any, Any]: ...


def evaluate_team(
    model: TeamPolicy,
    env: ParallelEnv | JointAgentEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    seed: int | None = None,
    callback: Callable[[JointAgentEnv], None] | None = None,
    return_episode_rewards: bool = False,
) -> tuple[float, float] | tuple[list[float], list[int]]:
    """SB3's ``evaluate_policy`` for a team on a PettingZoo ``ParallelEnv``: the team return of each
    episode is the sum over steps of the mean of the agents' rewards (:func:`diffgym.data.team_reward`).

    Args:
        model: anything with SB3's ``predict`` on per-agent dicts (a :class:`~diffgym.MADiff`).
        env: the ``ParallelEnv`` (or its :class:`JointAgentEnv`).
        n_eval_episodes: episodes to play.
        deterministic: passed to ``predict``.
        seed: episode ``i`` resets with ``seed + i`` (None: unseeded).
        callback: called with the joint env after each reset and step (e.g. to grab ``env.render()``).
        return_episode_rewards: return every episode's team return and length instead of mean and std.

    Returns:
        ``(mean, std)`` of the team returns, or ``(returns, lengths)``.
    """
    joint = env if isinstance(env, JointAgentEnv) else JointAgentEnv(env)
    returns: list[float] = []
    lengths: list[int] = []
    for episode in range(n_eval_episodes):
        observation, _ = joint.reset(seed=None if seed is None else seed + episode)
        if callback is not None:
            callback(joint)
        state, start, total, steps, done = None, np.ones(1, dtype=bool), 0.0, 0, False
        while not done:
            action, state = model.predict(observation, state, start, deterministic)
            start = np.zeros(1, dtype=bool)
            observation, reward, terminated, truncated, _ = joint.step(action)
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
            if callback is not None:
                callback(joint)
        returns.append(total)
        lengths.append(steps)
    if return_episode_rewards:
        return returns, lengths
    return float(np.mean(returns)), float(np.std(returns))
