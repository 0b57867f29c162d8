"""Windows of ``H`` steps of a team dataset, shaped ``(B, H, n, D)``, with the single-agent padding."""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from diffgym.data.loading import DatasetLike
from diffgym.data.segments import SegmentRows, SegmentWindows, discounted_returns_to_go, segment_layout
from diffgym.data.team.reading import read_multiagent_episodes

__all__ = ["MultiAgentSegmentDataset", "MultiAgentSegments"]


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
        dataset: anything :func:`~diffgym.data.read_multiagent_episodes` accepts.
        horizon: ``H``, steps per segment.
        discount: discount of the returns-to-go.
        use_padding: every step starts a window (True) or only windows of ``H`` real steps (False).
        pad_before: rows repeating each episode's first step before it.
        env: checked against the dataset when given (see :func:`~diffgym.data.read_multiagent_episodes`).
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
