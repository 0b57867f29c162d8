"""Make a Minari dataset by rolling out any policy: an SB3 model, a scripted controller, random actions.

This is the project's recipe for regenerating data from a policy (``diffgym data make`` runs it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from minari import MinariDataset
from minari.data_collector import EpisodeBuffer

from diffgym.data.minari_writer import write_dataset
from diffgym.data.tree import stack_tree
from diffgym.tasks.envs import make_env

__all__ = ["collect_dataset"]

#: A policy as :func:`collect_dataset` calls it: observation -> action.
Policy = Callable[[Any], Any]


def collect_dataset(
    env: gym.Env | str,
    policy: Any,
    dataset_id: str,
    n_steps: int | None = None,
    n_episodes: int | None = None,
    seed: int = 0,
    deterministic: bool = False,
    info_keys: Sequence[str] = (),
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
) -> MinariDataset:
    """Roll out a policy and store the episodes as a new local Minari dataset.

    Episode ``i`` is reset with seed ``seed + i`` (recorded in the dataset); a random policy samples
    from ``env.action_space`` seeded with ``seed``. Collection stops at ``n_steps`` transitions or
    ``n_episodes`` episodes, whichever comes first; an episode cut by ``n_steps`` is marked truncated.

    Args:
        env: a Gymnasium env or env id (made by :func:`~diffgym.tasks.envs.make_env`, which imports the
            package of a family such as ``Meta-World/...`` first). An env with a ``spec`` is recorded so that
            ``dataset.recover_environment()`` works; otherwise only its spaces are stored.
        policy: an SB3 model (anything with ``.predict(obs, deterministic=...)``), any callable
            ``obs -> action``, or ``None`` / ``"random"`` for uniform random actions.
        dataset_id: the new Minari id, e.g. ``"test/pendulum/random-v0"``; must not exist yet.
        n_steps: stop after this many transitions.
        n_episodes: stop after this many episodes.
        seed: seed of the first reset and of random actions.
        deterministic: passed to an SB3 model's ``predict``.
        info_keys: step-info fields to record (each present in the reset info and every step info);
            stored as ``T + 1`` entries per episode, the reset info first, as Minari's ``DataCollector``.
        algorithm_name, author, description: Minari metadata (defaults describe the policy).
    """
    if n_steps is None and n_episodes is None:
        raise ValueError("give n_steps, n_episodes or both")
    own_env = isinstance(env, str)
    env = make_env(env) if isinstance(env, str) else env
    try:
        act, policy_name = _action_function(env, policy, seed, deterministic)
        buffers = _rollouts(env, act, n_steps, n_episodes, seed, tuple(info_keys))
        return write_dataset(
            dataset_id,
            buffers,
            env,
            env.observation_space,
            env.action_space,
            algorithm_name=algorithm_name or policy_name,
            author=author,
            description=description or f"{policy_name} policy on {_env_name(env)}, seed {seed}",
        )
    finally:
        if own_env:
            env.close()


def _env_name(env: gym.Env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def _action_function(env: gym.Env, policy: Any, seed: int, deterministic: bool) -> tuple[Policy, str]:
    """Turn the accepted policy forms into ``obs -> action`` and a name for the metadata."""
    if policy is None or (isinstance(policy, str) and policy == "random"):
        env.action_space.seed(seed)
        return (lambda _obs: env.action_space.sample()), "random"
    if hasattr(policy, "predict"):
        return (lambda obs: policy.predict(obs, deterministic=deterministic)[0]), type(policy).__name__
    if callable(policy):
        return policy, getattr(policy, "__name__", type(policy).__name__)
    raise TypeError(f"policy must be an SB3 model, a callable, None or 'random', not {policy!r}")


def _rollouts(
    env: gym.Env,
    act: Policy,
    n_steps: int | None,
    n_episodes: int | None,
    seed: int,
    info_keys: tuple[str, ...],
) -> list[EpisodeBuffer]:
    """Collect episodes until either budget is used up."""
    buffers: list[EpisodeBuffer] = []
    total = 0
    while (n_episodes is None or len(buffers) < n_episodes) and (n_steps is None or total < n_steps):
        budget = None if n_steps is None else n_steps - total
        buffer = _rollout(env, act, seed + len(buffers), budget, info_keys, len(buffers))
        buffers.append(buffer)
        total += len(buffer)
    return buffers


def _rollout(
    env: gym.Env,
    act: Policy,
    seed: int,
    budget: int | None,
    info_keys: tuple[str, ...],
    episode_id: int,
) -> EpisodeBuffer:
    """One episode, cut (and marked truncated) after ``budget`` steps."""
    obs, info = env.reset(seed=seed)
    observations, infos = [obs], [_pick_infos(info, info_keys, episode_id)]
    actions, rewards, terminations, truncations = [], [], [], []
    while True:
        action = act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        infos.append(_pick_infos(info, info_keys, episode_id))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        cut = budget is not None and len(rewards) >= budget
        truncations.append(bool(truncated) or (cut and not terminated))
        if terminated or truncated or cut:
            break
    return EpisodeBuffer(
        id=episode_id,
        seed=seed,
        observations=stack_tree(observations),
        actions=np.asarray(actions, dtype=env.action_space.dtype),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terminations),
        truncations=np.asarray(truncations),
        infos=stack_tree(infos) if info_keys else None,
    )


def _pick_infos(info: dict, keys: tuple[str, ...], episode_id: int) -> dict[str, Any]:
    """The requested fields of one step's info."""
    missing = [key for key in keys if key not in info]
    if missing:
        raise KeyError(f"info of episode {episode_id} lacks {missing}; it has {sorted(info)}")
    return {key: info[key] for key in keys}
