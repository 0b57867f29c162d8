"""Normalised scores: ``100 * (return - random) / (expert - random)``.

References come from D4RL for the environments D4RL defined (MuJoCo locomotion, maze2d), from the
shared datasets' README for tasks defined there (the maze2d evaluation task on PointMaze v3, see
:mod:`diffgym.mazes`; MPE simple_spread's team return), from a Minari dataset's own ``ref_min_score`` /
``ref_max_score`` when a dataset is given, or from :func:`register_reference`. Every
:class:`Reference` names its source.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
from minari import MinariDataset

__all__ = ["Reference", "get_reference", "normalized_score", "register_reference"]

_D4RL = "D4RL (d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE)"
_MAZE_EVAL = (
    "shared/datasets/README.md, maze2d eval task on PointMaze v3 (diffgym.mazes): noise-free waypoint "
    "controller = 100, uniform random = 0; 50-episode means as in the maze files' metadata"
)

_MPE_SPREAD = (
    "shared/datasets/README.md, mpe2 simple_spread_v3 parallel_env(N=3, local_ratio=0.5, max_cycles=25, "
    "continuous_actions=True): uniform random = 0, Hungarian-assignment expert = 100 (200-episode means of "
    "the team return)"
)


class Reference(NamedTuple):
    """Reference returns of one task: ``random`` scores 0, ``expert`` scores 100."""

    random: float
    expert: float
    source: str


_REFERENCES: dict[str, Reference] = {
    "hopper": Reference(-20.272305, 3234.3, _D4RL),
    "halfcheetah": Reference(-280.178953, 12135.0, _D4RL),
    "walker2d": Reference(1.629008, 4592.3, _D4RL),
    "ant": Reference(-325.6, 3879.7, _D4RL),
    "maze2d-umaze": Reference(23.85, 161.86, _D4RL),
    "maze2d-medium": Reference(13.13, 277.39, _D4RL),
    "maze2d-large": Reference(6.7, 273.99, _D4RL),
    # the same numbers as the maze files' metadata eval_random / eval_controller (README rounds them)
    "maze2d-umaze-eval": Reference(8.74, 216.82, _MAZE_EVAL),
    "maze2d-medium-eval": Reference(8.8, 427.44, _MAZE_EVAL),
    # team returns (sum over steps of the agents' mean reward) of the shared mpe-spread-* files' env
    "mpe-spread": Reference(-24.69, -5.66, _MPE_SPREAD),
}


def register_reference(name: str, random: float, expert: float, source: str) -> None:
    """Add (or replace) the reference returns of a task.

    Args:
        name: task name; looked up as described in :func:`get_reference`.
        random: the return that scores 0 (usually a uniform random policy's mean return).
        expert: the return that scores 100.
        source: where the numbers come from (a paper, a dataset README, ...).
    """
    if random == expert:
        raise ValueError(f"random and expert references of {name!r} are both {random}")
    _REFERENCES[name.lower()] = Reference(float(random), float(expert), source)


def _tokens(name: str) -> list[str]:
    return [token for token in re.split(r"[^a-z0-9]+", name.lower()) if token]


def _lookup(name: str) -> Reference | None:
    """Exact name, else the registered name whose tokens appear contiguously in ``name`` (longest)."""
    if name.lower() in _REFERENCES:
        return _REFERENCES[name.lower()]
    tokens = _tokens(name)
    best: tuple[int, Reference] | None = None
    for key, reference in _REFERENCES.items():
        key_tokens = _tokens(key)
        size = len(key_tokens)
        found = any(tokens[i : i + size] == key_tokens for i in range(len(tokens) - size + 1))
        if found and (best is None or size > best[0]):
            best = (size, reference)
    return None if best is None else best[1]


def get_reference(name_or_dataset: str | MinariDataset) -> Reference:
    """The reference returns of a task name or a Minari dataset.

    A name matches a registered name exactly, or contains its ``-``/``/``/``_``-separated words in
    order (``"hopper-medium-v2"``, ``"mujoco/hopper/medium-v0"`` and ``"Hopper-v5"`` all match
    ``"hopper"``; ``"antmaze"`` does not match ``"ant"``); the longest match wins. A dataset's own
    ``ref_min_score`` / ``ref_max_score`` come first; without them its env id, then its dataset id,
    are looked up as names.

    Raises:
        KeyError: nothing known; register one or pass ``reference=`` to :func:`normalized_score`.
    """
    if isinstance(name_or_dataset, MinariDataset):
        return _dataset_reference(name_or_dataset)
    reference = _lookup(name_or_dataset)
    if reference is None:
        raise KeyError(
            f"no reference returns for {name_or_dataset!r}; known: {sorted(_REFERENCES)}. Use "
            "register_reference(...) or pass reference=(random, expert)."
        )
    return reference


def _dataset_reference(dataset: MinariDataset) -> Reference:
    metadata = dataset.storage.metadata
    if metadata.get("ref_min_score") is not None and metadata.get("ref_max_score") is not None:
        source = metadata.get("ref_score_source", f"Minari dataset {dataset.id} (ref_min/max_score)")
        return Reference(float(metadata["ref_min_score"]), float(metadata["ref_max_score"]), source)
    names = [dataset.env_spec.id] if dataset.env_spec is not None else []
    for name in [*names, dataset.id]:
        reference = _lookup(name)
        if reference is not None:
            return reference
    raise KeyError(
        f"dataset {dataset.id} has no reference returns and its names match none of {sorted(_REFERENCES)}"
    )


def normalized_score(
    name_or_dataset: str | MinariDataset,
    returns: float | np.ndarray,
    reference: Reference | tuple[float, float] | None = None,
) -> float | np.ndarray:
    """``100 * (returns - random) / (expert - random)``.

    Args:
        name_or_dataset: task name or Minari dataset (see :func:`get_reference`); ignored when
            ``reference`` is given.
        returns: one undiscounted episode return or an array of them.
        reference: explicit references, ``(random, expert)`` or a :class:`Reference`.

    Returns:
        A float for a scalar ``returns``, else an array of the same shape.
    """
    if reference is None:
        reference = get_reference(name_or_dataset)
    random, expert = float(reference[0]), float(reference[1])
    scores = 100.0 * (np.asarray(returns, dtype=np.float64) - random) / (expert - random)
    return float(scores) if scores.ndim == 0 else scores
