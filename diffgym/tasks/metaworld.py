"""Meta-World tasks as diffgym's benchmark uses them, and the recipe of their scripted demonstrations.

Needs ``pip install 'diffgym[metaworld]'``.

- :func:`make_task_env`: ``Meta-World/MT1`` for one task with Meta-World's random reset switched on,
  so every episode draws fresh object and goal positions (MT1 alone cycles through 50 fixed ones);
  :func:`reset_episode` seeds that draw (Meta-World ignores ``reset(seed=...)``).
- :func:`scripted_expert`: the task's hand-written policy from ``metaworld.policies``, actions
  clipped to the action space's [-1, 1].
- :func:`make_demonstrations`: the recipe of the benchmark's data (``diffgym data make-metaworld``):
  the scripted expert, without noise, for ``episodes`` episodes of ``horizon`` steps, episode ``i``
  reset with ``seed + i``, written in D4RL's flat layout with the per-step success flag under
  ``infos/success`` and a ``metadata`` attribute (env id and kwargs, versions, success rate, first
  success step, returns; no time, so the same recipe on the same build makes the same bytes). The
  shared ``metaworld-<task>.hdf5`` files were made with the same experts and settings; their
  episodes were seeded differently, so their rows are not these.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from diffgym.data.recipe import write_d4rl_file
from diffgym.tasks.envs import make_env
from diffgym.tasks.extras import import_extra

__all__ = ["ENV_ID", "make_demonstrations", "make_task_env", "reset_episode", "scripted_expert", "task_names"]

#: the Gymnasium id of one Meta-World task (its name in ``env_kwargs``)
ENV_ID = "Meta-World/MT1"
#: Meta-World's episode length
HORIZON = 500


def task_names() -> list[str]:
    """Every task with a scripted policy (``reach-v3``, ``pick-place-v3``, ...)."""
    policies = import_extra("metaworld.policies", "diffgym.tasks.metaworld")
    return sorted(policies.ENV_POLICY_MAP)


def check_task(task: str) -> None:
    """Raise ``ValueError`` naming the nearest tasks when ``task`` has no scripted policy."""
    names = task_names()
    if task not in names:
        near = difflib.get_close_matches(task, names, n=3) or names[:3]
        raise ValueError(
            f"Meta-World has no task {task!r} with a scripted policy; nearest: {', '.join(near)}"
        )


def make_task_env(task: str) -> gym.Env:
    """``Meta-World/MT1`` for ``task`` with Meta-World's random reset on (see the module doc)."""
    env = make_env(ENV_ID, {"env_name": task}, disable_env_checker=True)
    env.reset()  # MT1 sets one of its fixed tasks here; then switch to fresh random positions
    env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
    env.unwrapped._freeze_rand_vec = False  # type: ignore[attr-defined]
    env.unwrapped.seeded_rand_vec = True  # type: ignore[attr-defined]
    return env


def reset_episode(env: gym.Env, seed: int) -> np.ndarray:
    """Seed Meta-World's reset RNG (its ``reset`` ignores ``seed=``) and reset: -> (39,) observation."""
    env.unwrapped.seed(seed)  # type: ignore[attr-defined]
    observation, _ = env.reset()
    return observation


def scripted_expert(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """The task's scripted policy: (39,) observation -> (4,) action clipped to [-1, 1].

    Raises:
        ValueError: an unknown task (the nearest are named).
    """
    return _clipped(_scripted_policy(task))


def _scripted_policy(task: str) -> Any:
    check_task(task)
    return import_extra("metaworld.policies", "diffgym.tasks.metaworld").ENV_POLICY_MAP[task]()


def _clipped(policy: Any) -> Callable[[np.ndarray], np.ndarray]:
    def act(observation: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip, as the warning advises
            warnings.simplefilter("ignore", UserWarning)
            action = policy.get_action(observation)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act


def make_demonstrations(
    task: str, path: str | Path, episodes: int = 50, seed: int = 0, horizon: int = HORIZON
) -> dict[str, Any]:
    """Roll out the scripted expert (see the module doc) and write ``path``; returns its metadata and
    the ``seconds`` it took.

    Raises:
        ValueError: an unknown task (the nearest are named), or fewer than one episode or step.
    """
    policy = _scripted_policy(task)
    if episodes < 1 or not 1 <= horizon <= HORIZON:
        raise ValueError(
            f"need at least one episode of 1 to {HORIZON} steps (Meta-World's episode length), got {episodes} x {horizon}"
        )
    started = time.perf_counter()
    env, act = make_task_env(task), _clipped(policy)
    try:
        episodes_rows = [_episode(env, act, seed + index, horizon) for index in range(episodes)]
    finally:
        env.close()
    arrays = {key: np.concatenate([rows[key] for rows in episodes_rows]) for key in episodes_rows[0]}
    first_success = np.array([_first_success(rows["infos/success"]) for rows in episodes_rows])
    succeeded = first_success[first_success >= 0]
    returns = [float(rows["rewards"].sum()) for rows in episodes_rows]
    metadata = {
        "env_id": ENV_ID,
        "env_kwargs": {"env_name": task},
        "metaworld": importlib.metadata.version("metaworld"),
        "mujoco": importlib.metadata.version("mujoco"),
        "made_by": f"metaworld.policies.{type(policy).__name__}, actions clipped to [-1,1], no noise "
        f"(diffgym.tasks.metaworld.make_demonstrations)",
        "seed": seed,
        "horizon": horizon,
        "steps": len(arrays["rewards"]),
        "success_rate": float(np.mean(first_success >= 0)),
        "first_success_step": (
            {"mean": float(succeeded.mean()), "max": int(succeeded.max())} if len(succeeded) else None
        ),
        "std_return": float(np.std(returns)),
    }
    written = write_d4rl_file(Path(path), arrays, metadata)
    return written | {"seconds": round(time.perf_counter() - started, 1)}


def _episode(
    env: gym.Env, act: Callable[[np.ndarray], np.ndarray], seed: int, horizon: int
) -> dict[str, np.ndarray]:
    """One episode of ``horizon`` steps from a reset seeded ``seed``, in D4RL's columns: it ends at
    ``horizon`` or where the env truncates (a timeout) or terminates, which Meta-World does not signal."""
    rows: dict[str, list[Any]] = {key: [] for key in ("observations", "actions", "rewards", "next_observations",
                                                      "terminals", "timeouts", "infos/success")}  # fmt: skip
    observation = reset_episode(env, seed)
    for step in range(horizon):
        action = act(observation)
        next_observation, reward, terminated, truncated, info = env.step(action)
        last = terminated or truncated or step == horizon - 1
        row = (
            observation,
            action,
            reward,
            next_observation,
            terminated,
            last and not terminated,
            info["success"],
        )
        for key, value in zip(rows, row, strict=True):
            rows[key].append(value)
        if last:
            break
        observation = next_observation
    arrays = {key: np.asarray(values) for key, values in rows.items()}
    arrays["infos/success"] = arrays["infos/success"].astype(bool)
    return arrays


def _first_success(success: np.ndarray) -> int:
    """The step of the first success, -1 for none."""
    return int(np.argmax(success)) if success.any() else -1
