"""The team format: a Minari dataset over a joint-agent view of a PettingZoo ``ParallelEnv``.

Minari has no multi-agent format, so diffgym stores a team of agents as **one Minari dataset of the
joint agent**, the view :class:`diffgym.wrappers.JointAgentEnv` gives of a ``ParallelEnv``:

- ``observation_space`` = ``Dict({agent: env.observation_space(agent)})`` and ``action_space`` likewise,
  one key per agent of ``env.possible_agents``. Gymnasium's ``Dict`` *sorts* its keys (``agent_10``
  before ``agent_2``), so the agent order is stored explicitly in the dataset metadata ``agents`` (the
  env's ``possible_agents`` order) and every reader of :mod:`diffgym.data.team` returns agents in that
  order.
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
- metadata: ``agents``, ``team_reward``, ``diffgym_multiagent`` (:data:`FORMAT_KEY`: the format
  version) and ``parallel_env`` (``{"id", "kwargs"}`` for :func:`~diffgym.data.make_parallel_env`, when
  known), so :func:`~diffgym.data.recover_parallel_env` rebuilds the env.

Why this and not the alternatives: a stacked ``Box((n, obs_dim))`` observation would make the agent
axis native but forces every agent to one shape and keeps identity only as a position; an own HDF5
layout (like the D4RL-style MPE files) would lose Minari's tooling (storage, metadata, episode
access, ``minari`` CLI). Keys keep each agent's identity and space (heterogeneous teams, ``Discrete``
actions) inside a standard Minari dataset that single-agent code can still read (with the team
reward), and the joint view is also a Gymnasium env, so SB3-style evaluation can step it.

Readers (:mod:`diffgym.data.team.reading`, :mod:`diffgym.data.team.segments`) give arrays with an
explicit agent axis, agents in metadata order: :class:`~diffgym.data.MultiAgentEpisodes` and
:class:`~diffgym.data.MultiAgentSegmentDataset` windows shaped ``(B, H, n, D)``.

Data comes from :func:`~diffgym.data.collect_multiagent_dataset` (any ``ParallelEnv``, any per-agent
or joint policy) or :func:`~diffgym.data.import_multiagent_d4rl` (D4RL-layout files with an agent axis
such as the shared ``mpe-spread-*.hdf5``; :func:`~diffgym.data.import_d4rl` and
:func:`~diffgym.data.load_dataset` hand such files to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "AGENT_INFO_KEYS",
    "AGENT_REWARDS",
    "AGENT_TERMINATIONS",
    "AGENT_TRUNCATIONS",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "TEAM_REWARD",
    "AgentMismatchError",
    "format_metadata",
    "team_flags",
    "team_reward",
    "truncate_unfinished",
]

#: Version of this format, stored in the metadata under :data:`FORMAT_KEY`.
FORMAT_VERSION = 1
#: The metadata key that marks a dataset as this format.
FORMAT_KEY = "diffgym_multiagent"
#: The team reward's definition, stored in the metadata ``team_reward``.
TEAM_REWARD = "mean"
#: Per-agent step infos of the format, each (T, n) per episode in agent order.
AGENT_REWARDS, AGENT_TERMINATIONS, AGENT_TRUNCATIONS = (
    "agent_rewards",
    "agent_terminations",
    "agent_truncations",
)
AGENT_INFO_KEYS = (AGENT_REWARDS, AGENT_TERMINATIONS, AGENT_TRUNCATIONS)


class AgentMismatchError(ValueError):
    """The agents of a dataset, its arrays or an env disagree (count or names)."""


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


def truncate_unfinished(
    terminations: np.ndarray, truncations: np.ndarray, team_truncated: np.ndarray
) -> np.ndarray:
    """Per-agent truncations (T, n) where the team is truncated (T,): every agent not terminated is too."""
    return truncations | (team_truncated[:, None] & ~terminations)


def format_metadata(agents: Sequence[str], parallel_env: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata that marks a dataset as diffgym's multi-agent format."""
    return {
        FORMAT_KEY: FORMAT_VERSION,
        "agents": list(agents),
        "team_reward": TEAM_REWARD,
        "parallel_env": parallel_env,
    }
