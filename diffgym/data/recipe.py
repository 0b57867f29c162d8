"""D4RL's recipe for offline datasets, as a function: train a behaviour policy, then roll out its checkpoints.

D4RL (Fu et al. 2020) made its MuJoCo sets from one SAC run: ``random`` (uniform actions),
``medium`` (a checkpoint scoring about a third of the expert reference, run with stochastic
actions), ``medium-replay`` (the SAC replay buffer up to that checkpoint) and ``expert`` (the last
checkpoint). :func:`make_d4rl_datasets` does the same with Stable-Baselines3's SAC on any
Gymnasium env and writes each set as a D4RL-layout HDF5 file (``observations``, ``actions``,
``rewards``, ``next_observations``, ``terminals``, ``timeouts``, and a JSON ``metadata``
attribute: env id, recipe, checkpoint returns, mean return), the layout ``diffgym data import`` and
the benchmarks read. The shared datasets of diffgym's benchmarks were made this way (their README
gives the settings); ``diffgym data make-d4rl`` is the command.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym.scores import get_reference
from diffgym.tasks.envs import make_env

__all__ = ["KINDS", "D4RLRecipe", "make_d4rl_datasets", "write_d4rl_file"]

KINDS = ("random", "medium", "medium-replay", "expert")


@dataclasses.dataclass(frozen=True)
class D4RLRecipe:
    """The settings of one behaviour-policy run and the sets rolled out from it.

    Args:
        env_id: a Gymnasium id (its family registered first, see :func:`~diffgym.tasks.envs.make_env`).
        train_steps: SAC's env steps (the shared sets: 150k).
        checkpoint_every: env steps between checkpoints, each scored by ``eval_episodes``
            deterministic episodes.
        transitions: rows of each rolled-out set (``random``, ``medium``, ``expert``).
        medium_return: the return ``medium`` aims at (the checkpoint nearest it is taken); default:
            a third of the env's expert reference return (:func:`diffgym.scores.get_reference`).
        eval_episodes: episodes that score a checkpoint.
        seed: SAC's seed, and the first reset's seed of each rollout.
        env_kwargs: the env's arguments (recorded with the recipe in every file's metadata).
    """

    env_id: str
    train_steps: int = 150_000
    checkpoint_every: int = 10_000
    transitions: int = 100_000
    medium_return: float | None = None
    eval_episodes: int = 5
    seed: int = 0
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def make_env(self) -> gym.Env:
        return make_env(self.env_id, self.env_kwargs)

    def medium_target(self) -> float:
        if self.medium_return is not None:
            return self.medium_return
        try:
            return get_reference(self.env_id).expert / 3.0
        except KeyError as error:
            raise ValueError(
                f"no expert reference return for {self.env_id!r}: give medium_return (--medium-return)"
            ) from error


@dataclasses.dataclass
class _Checkpoint:
    step: int
    policy_state: dict[str, torch.Tensor]
    mean_return: float


class _Checkpoints(BaseCallback):
    """Every ``every`` env steps: a copy of the policy's weights and its deterministic return."""

    def __init__(self, every: int, score: Callable[[SAC], float], log: Callable[[str], None]) -> None:
        super().__init__()
        self.every, self.score, self.log = every, score, log
        self.saved: list[_Checkpoint] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            mean_return = self.score(self.model)  # type: ignore[arg-type]
            state = copy.deepcopy(self.model.policy.state_dict())
            self.saved.append(_Checkpoint(self.num_timesteps, state, mean_return))
            self.log(f"checkpoint {self.num_timesteps}: return {mean_return:.1f}")
        return True


def make_d4rl_datasets(
    recipe: D4RLRecipe,
    out: str | Path,
    kinds: Sequence[str] = KINDS,
    prefix: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Train SAC by ``recipe``, then write each of ``kinds`` to ``out/<prefix>-<kind>.hdf5``.

    Args:
        recipe: the settings.
        out: the folder of the files (created).
        kinds: which sets, from :data:`KINDS`.
        prefix: the files' prefix (default: the env id's name in lower case, ``hopper`` for ``Hopper-v5``).
        log: called with a line of progress after each checkpoint and file.

    Returns:
        kind -> the written file.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; the recipe makes {', '.join(KINDS)}")
    target = recipe.medium_target()
    folder = Path(out)
    prefix = prefix or recipe.env_id.split("-")[0].split("/")[-1].lower()
    env = recipe.make_env()
    model = SAC("MlpPolicy", env, seed=recipe.seed, buffer_size=max(recipe.train_steps, 1), verbose=0)
    checkpoints = _Checkpoints(recipe.checkpoint_every, lambda m: _score(m, recipe), log)
    model.learn(recipe.train_steps, callback=checkpoints)
    if not checkpoints.saved:
        raise ValueError(
            f"train_steps {recipe.train_steps} < checkpoint_every {recipe.checkpoint_every}: no checkpoint"
        )
    medium = min(checkpoints.saved, key=lambda c: abs(c.mean_return - target))
    chosen = {"medium": medium, "expert": checkpoints.saved[-1]}
    record = {
        "env_id": recipe.env_id,
        "recipe": dataclasses.asdict(recipe)
        | {"medium_target": target, "behaviour": "stable_baselines3.SAC"},
        "checkpoints": {c.step: c.mean_return for c in checkpoints.saved},
    }
    written: dict[str, Path] = {}
    for kind in kinds:
        source: dict[str, Any]
        if kind == "medium-replay":
            arrays = _replay_arrays(model, medium.step)
            source = {"replay_until_step": medium.step}
        elif kind == "random":
            arrays = _rollout(recipe.make_env(), None, recipe.transitions, recipe.seed)
            source = {"policy": "uniform random"}
        else:
            model.policy.load_state_dict(chosen[kind].policy_state)
            arrays = _rollout(recipe.make_env(), model, recipe.transitions, recipe.seed)
            source = {"checkpoint_step": chosen[kind].step, "checkpoint_return": chosen[kind].mean_return}
        path = folder / f"{prefix}-{kind}.hdf5"
        write_d4rl_file(path, arrays, record | {"kind": kind, **source})
        written[kind] = path
        log(f"{kind}: {len(arrays['rewards'])} transitions -> {path}")
    return written


def _score(model: SAC, recipe: D4RLRecipe) -> float:
    env = Monitor(recipe.make_env())
    env.reset(seed=recipe.seed + 1000)
    returns, _ = evaluate_policy(
        model, env, n_eval_episodes=recipe.eval_episodes, deterministic=True, return_episode_rewards=True
    )
    return float(np.mean(returns))


def _rollout(env: gym.Env, model: SAC | None, transitions: int, seed: int) -> dict[str, np.ndarray]:
    """``transitions`` steps of stochastic actions (``None``: uniform random), episodes back to back;
    the last row is marked as a timeout (the set ends there)."""
    env.action_space.seed(seed)
    rows: dict[str, list[Any]] = {
        key: []
        for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    }
    observation, _ = env.reset(seed=seed)
    for step in range(transitions):
        if model is None:
            action = env.action_space.sample()
        else:
            action, _ = model.predict(observation, deterministic=False)
        next_observation, reward, terminated, truncated, _ = env.step(action)
        last = step == transitions - 1
        row = (observation, action, reward, next_observation, terminated, truncated or last)
        for key, value in zip(rows, row, strict=True):
            rows[key].append(value)
        observation = env.reset()[0] if terminated or truncated else next_observation
    return {key: np.asarray(values) for key, values in rows.items()}


def _replay_arrays(model: SAC, steps: int) -> dict[str, np.ndarray]:
    """The first ``steps`` transitions of SAC's replay buffer (one env), in the order they were collected."""
    buffer = model.replay_buffer
    assert buffer is not None
    timeouts = buffer.timeouts[:steps, 0].astype(bool)
    timeouts[-1] = True  # the set ends here
    return {
        "observations": buffer.observations[:steps, 0],
        "actions": buffer.actions[:steps, 0],
        "rewards": buffer.rewards[:steps, 0],
        "next_observations": buffer.next_observations[:steps, 0],
        "terminals": buffer.dones[:steps, 0].astype(bool) & ~buffer.timeouts[:steps, 0].astype(bool),
        "timeouts": timeouts,
    }


def write_d4rl_file(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> dict[str, Any]:
    """D4RL's flat layout (float32 arrays, bool flags; a key ``infos/<name>`` in the ``infos`` group),
    written beside ``path`` then moved over it; returns the ``metadata`` attribute written (the given
    fields, the mean return and the number of episodes)."""
    returns = _episode_returns(arrays["rewards"], arrays["terminals"] | arrays["timeouts"])
    metadata = metadata | {"mean_return": float(np.mean(returns)), "episodes": len(returns)}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        with h5py.File(name, "w") as file:
            for key, values in arrays.items():
                flag = key in ("terminals", "timeouts") or np.asarray(values).dtype == bool
                file.create_dataset(key, data=np.asarray(values, dtype=bool if flag else np.float32))
            file.attrs["metadata"] = json.dumps(metadata)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)
    return metadata


def _episode_returns(rewards: np.ndarray, ends: np.ndarray) -> list[float]:
    boundaries = np.flatnonzero(ends) + 1
    return [
        float(chunk.sum())
        for chunk in np.split(np.asarray(rewards, dtype=np.float64), boundaries)
        if len(chunk)
    ]
