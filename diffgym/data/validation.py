"""Checks that a dataset can be used: spaces that match an environment, finite values, consistent lengths.

The error classes subclass :class:`ValueError`, so ``except ValueError`` still catches them. The array
checks here work on the concatenated arrays that :mod:`diffgym.data.loading` builds, so they are
vectorised; :func:`diffgym.data.validate_dataset` runs all of them on a dataset.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gymnasium import spaces

__all__ = [
    "DatasetSpaceMismatchError",
    "EpisodeLengthError",
    "NonFiniteDataError",
    "check_episode_lengths",
    "check_finite",
    "check_spaces",
]

#: Relative and absolute tolerance when comparing Box bounds: a float64 environment bound stored as
#: float32 in a dataset still matches.
BOUNDS_TOLERANCE = 1e-6


class DatasetSpaceMismatchError(ValueError):
    """A dataset's observation or action space does not fit the environment's."""


class NonFiniteDataError(ValueError):
    """A dataset field holds NaN or ±inf."""


class EpisodeLengthError(ValueError):
    """An episode's arrays disagree in length (``T + 1`` observations, ``T`` of everything else)."""


def check_spaces(dataset_space: spaces.Space, env_space: spaces.Space, what: str = "observation") -> None:
    """Raise :class:`DatasetSpaceMismatchError` unless ``dataset_space`` fits ``env_space``.

    Compared, recursively through ``Dict`` spaces: the space type, ``Dict`` keys, shapes, the dtype
    *kind* (float vs integer vs bool; float32 data for a float64 env is fine), Box bounds (equal within
    :data:`BOUNDS_TOLERANCE`, infinities must match), ``Discrete`` size and start, ``MultiDiscrete``
    sizes.

    Args:
        dataset_space: the space recorded in the dataset.
        env_space: the environment's space.
        what: the name used in the message ("observation", "action").

    Raises:
        DatasetSpaceMismatchError: naming the part that differs and showing both spaces.
    """
    problem = _space_difference(dataset_space, env_space, what)
    if problem is not None:
        raise DatasetSpaceMismatchError(
            f"{what} space mismatch: {problem}.\n  dataset: {dataset_space}\n  env:     {env_space}"
        )


def _space_difference(data: spaces.Space, env: spaces.Space, where: str) -> str | None:
    """Describe the first difference between two spaces, or return None when they fit."""
    if type(data) is not type(env):
        return f"{where} is {type(data).__name__} in the dataset but {type(env).__name__} in the env"
    if isinstance(data, spaces.Dict):
        assert isinstance(env, spaces.Dict)
        if set(data.spaces) != set(env.spaces):
            return f"{where} keys differ: dataset {sorted(data.spaces)} vs env {sorted(env.spaces)}"
        for key in data.spaces:
            problem = _space_difference(data[key], env[key], f"{where}[{key!r}]")
            if problem is not None:
                return problem
        return None
    if data.shape != env.shape:
        return f"{where} shape {data.shape} in the dataset but {env.shape} in the env"
    if _dtype_class(data) != _dtype_class(env):
        return f"{where} dtype {data.dtype} in the dataset but {env.dtype} in the env (different kind)"
    return _leaf_difference(data, env, where)


def _dtype_class(space: spaces.Space) -> str | None:
    """'float', 'int' (signed or unsigned), 'bool' or another numpy kind letter; None without dtype."""
    if space.dtype is None:
        return None
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(space.dtype.kind, space.dtype.kind)


def _leaf_difference(data: spaces.Space, env: spaces.Space, where: str) -> str | None:
    """Compare the parameters of two non-Dict spaces of the same type and shape."""
    if isinstance(data, spaces.Box):
        assert isinstance(env, spaces.Box)
        for name in ("low", "high"):
            a, b = getattr(data, name).astype(np.float64), getattr(env, name).astype(np.float64)
            if not np.allclose(a, b, rtol=BOUNDS_TOLERANCE, atol=BOUNDS_TOLERANCE):
                return f"{where} bounds differ ({name}: dataset {a} vs env {b})"
    elif isinstance(data, spaces.Discrete):
        assert isinstance(env, spaces.Discrete)
        if (data.n, data.start) != (env.n, env.start):
            return (
                f"{where} Discrete(n={data.n}, start={data.start}) vs Discrete(n={env.n}, start={env.start})"
            )
    elif isinstance(data, spaces.MultiDiscrete):
        assert isinstance(env, spaces.MultiDiscrete)
        if not np.array_equal(data.nvec, env.nvec):
            return f"{where} MultiDiscrete sizes {data.nvec} vs {env.nvec}"
    return None


def check_finite(
    fields: Mapping[str, np.ndarray],
    offsets: np.ndarray,
    episode_ids: np.ndarray,
    observation_rows: bool = False,
) -> None:
    """Raise :class:`NonFiniteDataError` at the first NaN or ±inf in any float field.

    Args:
        fields: name -> concatenated per-episode array, shape ``(R, ...)``; non-float arrays are skipped.
            Every field in one call must share the same row layout.
        offsets: ``(E + 1,)`` row offsets: episode ``i`` is rows ``offsets[i]:offsets[i + 1]``.
        episode_ids: ``(E,)`` the dataset's ids of those episodes, used in the message.
        observation_rows: the fields hold ``T + 1`` observations per episode; a bad last row is then
            called the final observation (the last step's next observation).

    Raises:
        NonFiniteDataError: naming the field, the episode id and the step within the episode.
    """
    for name, array in fields.items():
        if array.dtype.kind != "f":
            continue
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if not bad.any():
            continue
        row = int(np.flatnonzero(bad)[0])
        episode = int(np.searchsorted(offsets, row, side="right") - 1)
        step = row - int(offsets[episode])
        length = int(offsets[episode + 1] - offsets[episode])
        final = " (the final observation, i.e. next_observations of the last step)"
        note = final if observation_rows and step == length - 1 else ""
        raise NonFiniteDataError(
            f"{name} of episode {int(episode_ids[episode])} at step {step} (of {length} rows){note} is "
            f"not finite: {array[row]}"
        )


def check_episode_lengths(episode_id: int, n_steps: int, lengths: Mapping[str, int]) -> None:
    """Raise :class:`EpisodeLengthError` unless every field of one episode has its expected length.

    Args:
        episode_id: the episode's id, used in the message.
        n_steps: ``T``, the number of rewards.
        lengths: field name -> number of rows; names starting with ``observations`` must have
            ``T + 1`` rows, all others ``T``.
    """
    expected = {name: n_steps + 1 if name.startswith("observations") else n_steps for name in lengths}
    wrong = {name: n for name, n in lengths.items() if n != expected[name]}
    if wrong:
        details = ", ".join(f"{name}: {n} (expected {expected[name]})" for name, n in wrong.items())
        raise EpisodeLengthError(
            f"episode {episode_id} has {n_steps} rewards but its arrays disagree: {details}"
        )
