"""Make the PettingZoo ``ParallelEnv`` of a team from an importable name, or from what a dataset records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pettingzoo import ParallelEnv

from diffgym.data.loading import DatasetLike, load_dataset
from diffgym.tasks.extras import import_extra

__all__ = ["make_parallel_env", "recover_parallel_env"]


def make_parallel_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> ParallelEnv:
    """Make a PettingZoo ``ParallelEnv`` from an importable name.

    ``env_id`` is a module with a ``parallel_env`` function (``"mpe2.simple_spread_v3"``), an explicit
    ``"module:function"``, or the shared files' spelling ``"mpe2 simple_spread_v3 parallel_env"``
    (package, module, function separated by spaces).

    Raises:
        MissingExtraError: the env's package is an extra that is not installed (``mpe2``: ``pip install
            'diffgym[mpe]'``); the message names the install command.
    """
    if ":" in env_id:
        module, function = env_id.split(":", 1)
    elif " " in env_id:
        *parts, function = env_id.split()
        module = ".".join(parts)
    else:
        module, function = env_id, "parallel_env"
    make = getattr(import_extra(module, f"the PettingZoo env {env_id!r}"), function)
    env = make(**dict(env_kwargs or {}))
    if not isinstance(env, ParallelEnv):
        raise TypeError(f"{module}.{function}(...) gave {type(env).__name__}, not a PettingZoo ParallelEnv")
    return env


def recover_parallel_env(dataset: DatasetLike) -> ParallelEnv:
    """Rebuild the ``ParallelEnv`` a multi-agent dataset records (metadata ``parallel_env``)."""
    data = load_dataset(dataset)
    recorded = data.storage.metadata.get("parallel_env")
    if not recorded:
        raise ValueError(f"dataset {data.id} does not record its env (pass env_id when collecting)")
    return make_parallel_env(recorded["id"], recorded.get("kwargs"))
