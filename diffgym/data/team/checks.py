"""Checks that a dataset is in the team format and that its agents and spaces fit an env."""

from __future__ import annotations

import gymnasium as gym
from gymnasium import spaces
from pettingzoo import ParallelEnv

from diffgym.data.d4rl import explain_cached_import
from diffgym.data.loading import DatasetLike, load_dataset
from diffgym.data.team.format import FORMAT_KEY, AgentMismatchError
from diffgym.data.validation import check_spaces

__all__ = ["check_agents_and_spaces", "dataset_agents"]


def dataset_agents(dataset: DatasetLike) -> tuple[str, ...]:
    """The agent ids of a multi-agent dataset in its stored order; checks them against its spaces.

    Raises:
        ValueError: not a dataset in this format.
        AgentMismatchError: the metadata's agents and the ``Dict`` space keys differ.
    """
    data = load_dataset(dataset)
    agents = data.storage.metadata.get("agents")
    if not agents or FORMAT_KEY not in data.storage.metadata:
        raise ValueError(
            f"dataset {data.id} is not in diffgym's multi-agent format (its metadata lacks "
            f"{FORMAT_KEY!r} / 'agents'); make it with collect_multiagent_dataset or import_multiagent_d4rl"
        )
    for what, space in (("observation", data.observation_space), ("action", data.action_space)):
        keys = list(space.spaces) if isinstance(space, spaces.Dict) else None
        if keys is None or set(keys) != set(agents) or len(keys) != len(agents):
            raise AgentMismatchError(
                f"dataset {data.id}: metadata lists {len(agents)} agents {agents} but the {what} space has "
                f"keys {keys}"
            )
    return tuple(agents)


def check_agents_and_spaces(dataset: DatasetLike, env: ParallelEnv | gym.Env) -> None:
    """Check that a multi-agent dataset has the env's agents and, agent by agent, its spaces.

    Agents are matched by name: the env may list them in another order (the dataset's order is the
    one every reader returns).

    Raises:
        AgentMismatchError: a different number of agents or different names.
        DatasetSpaceMismatchError: naming the agent and the differing part, e.g.
            ``observation['agent_1'] shape (18,) in the dataset but (17,) in the env``; for an import of
            a D4RL-layout file, also how to import it afresh (:func:`~diffgym.data.d4rl.explain_cached_import`).
    """
    data = load_dataset(dataset)
    agents = dataset_agents(data)
    env_agents, observation_space, action_space = _env_agents_and_spaces(env)
    if len(env_agents) != len(agents) or set(env_agents) != set(agents):
        raise AgentMismatchError(
            f"dataset {data.id} has {len(agents)} agents {list(agents)} but the env has {len(env_agents)} "
            f"{list(env_agents)}"
        )
    with explain_cached_import(data):
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
