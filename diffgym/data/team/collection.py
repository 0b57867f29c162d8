"""Roll out a team in a PettingZoo ``ParallelEnv`` into a Minari dataset of the team format."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import numpy as np
from gymnasium import spaces
from minari import MinariDataset
from minari.data_collector import EpisodeBuffer
from pettingzoo import ParallelEnv

from diffgym.data.minari_writer import write_dataset
from diffgym.data.team.format import (
    AGENT_REWARDS,
    AGENT_TERMINATIONS,
    AGENT_TRUNCATIONS,
    AgentMismatchError,
    format_metadata,
    team_flags,
    team_reward,
    truncate_unfinished,
)
from diffgym.data.team.stepping import JointStepper
from diffgym.data.tree import stack_tree

__all__ = ["JointPolicy", "Policies", "collect_multiagent_dataset"]

#: A joint policy: every agent's observation -> every acting agent's action.
JointPolicy: TypeAlias = Callable[[dict[str, Any]], Mapping[str, Any]]
#: What :func:`collect_multiagent_dataset` accepts as policy.
Policies: TypeAlias = Mapping[str, Callable[[Any], Any]] | JointPolicy | str | None


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
        env_id, env_kwargs: how :func:`~diffgym.data.make_parallel_env` rebuilds the env (e.g. ``"mpe2.simple_spread_v3"``
            and its kwargs), stored so that :func:`~diffgym.data.recover_parallel_env` works; optional.
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
    dataset = write_dataset(
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
    dataset.storage.update_metadata(format_metadata(stepper.agents, parallel_env))
    return dataset


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
    """One episode as an episode buffer of the format (see :mod:`diffgym.data.team.format`)."""
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
            AGENT_TRUNCATIONS: truncate_unfinished(
                np.stack([s.terminations for s in steps]), np.stack([s.truncations for s in steps]), truncated
            ),
        },
    )
