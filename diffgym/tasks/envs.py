"""Env ids of the families diffgym supports, and making an env from an id and its kwargs.

Some env families register their ids only when their package is imported (Meta-World's
``Meta-World/MT1``, gymnasium-robotics' ``PointMaze_UMaze-v3``); a plain ``gym.make`` of such an id
fails with ``NamespaceNotFound`` / ``NameNotFound`` until someone imports the package. This module is
the one place that knows which package an id needs (:data:`ENV_FAMILIES`, by id prefix):
:func:`register_env_family` imports it (a missing one raises
:class:`~diffgym.tasks.extras.MissingExtraError` naming ``pip install 'diffgym[EXTRA]'``), and
:func:`make_env` does that, then ``gym.make``.

>>> env_family("Meta-World/MT1").module, env_family("AntMaze_UMaze-v5").module
('metaworld', 'gymnasium_robotics')
>>> env_family("Ant-v5") is None  # Gymnasium's own: nothing to import
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import gymnasium as gym

from diffgym.tasks.extras import import_extra

__all__ = ["ENV_FAMILIES", "EnvFamily", "env_family", "make_env", "register_env_family"]


class EnvFamily(NamedTuple):
    """Envs whose ids start with one of ``prefixes``; importing ``module`` makes them available."""

    module: str  #: the package to import (a key of :data:`~diffgym.tasks.extras.EXTRAS`)
    prefixes: tuple[str, ...]  #: env ids of the family start with one of these
    #: ``gym.make`` ids, or PettingZoo modules (made by ``diffgym.data.make_parallel_env``)
    api: Literal["gymnasium", "pettingzoo"]


#: The families diffgym supports, by id prefix. gymnasium-robotics' prefixes leave Gymnasium's own
#: MuJoCo ids (``Ant-v5``) alone.
ENV_FAMILIES: tuple[EnvFamily, ...] = (
    EnvFamily("metaworld", ("Meta-World/",), "gymnasium"),
    EnvFamily(
        "gymnasium_robotics",
        ("PointMaze", "AntMaze", "Fetch", "HandManipulate", "HandReach", "AdroitHand", "FrankaKitchen"),
        "gymnasium",
    ),
    EnvFamily("mpe2", ("mpe2.", "mpe2:", "mpe2 "), "pettingzoo"),
)


def env_family(env_id: str) -> EnvFamily | None:
    """The family of ``env_id`` (None: a Gymnasium id that needs no import, or an unknown one)."""
    return next((family for family in ENV_FAMILIES if env_id.startswith(family.prefixes)), None)


def register_env_family(env_id: str) -> EnvFamily | None:
    """Import the package of ``env_id``'s family, which registers its envs; its family, or None.

    Raises:
        MissingExtraError: the family's package is not installed (the message names its extra).
    """
    family = env_family(env_id)
    if family is not None:
        import_extra(family.module, f"the env {env_id!r}")
    return family


def make_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None, **make_kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **env_kwargs, **make_kwargs)`` after :func:`register_env_family`.

    Args:
        env_id: a Gymnasium id (``"Meta-World/MT1"``, ``"PointMaze_UMaze-v3"``, ``"Hopper-v5"``).
        env_kwargs: the env's arguments (``{"env_name": "reach-v3"}`` for ``Meta-World/MT1``).
        make_kwargs: further ``gym.make`` arguments (``max_episode_steps``, ``render_mode``, ...).

    Raises:
        MissingExtraError: the id's family is not installed.
        ValueError: the id names a PettingZoo env (make it with
            :func:`~diffgym.data.make_parallel_env`), or Gymnasium knows no such id (the message lists
            the families diffgym registers itself).
    """
    family = register_env_family(env_id)
    if family is not None and family.api == "pettingzoo":
        raise ValueError(
            f"{env_id!r} is a PettingZoo env, not a Gymnasium one: make it with "
            "diffgym.data.make_parallel_env (team agents such as MADiff take it)"
        )
    try:
        return gym.make(env_id, **dict(env_kwargs or {}), **make_kwargs)
    except gym.error.UnregisteredEnv as error:
        known = " or ".join(
            f"{', '.join(f.prefixes)} ({f.module})" for f in ENV_FAMILIES if f.api == "gymnasium"
        )
        raise ValueError(
            f"cannot make env {env_id!r}: {error} diffgym imports the package of ids starting with {known} "
            "itself; import the package of any other env family before making its envs"
        ) from error
