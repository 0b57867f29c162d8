"""The env options of every command that makes an env: ``--env ID`` and ``--env-kwargs YAML``.

The id's family (Meta-World, gymnasium-robotics, mpe2) is registered by the core
(:func:`diffgym.tasks.envs.make_env`); this module only reads the options.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_env_options", "env_kwargs"]

#: what ``--env-kwargs`` says in every command's help
ENV_KWARGS_HELP = (
    "the env's arguments as a YAML (or JSON) mapping, e.g. --env-kwargs '{env_name: reach-v3}' for "
    "Meta-World/MT1 (default: none)"
)


def add_env_options(
    parser: argparse.ArgumentParser, env_help: str, dest: str = "env", **env_options: Any
) -> None:
    """Add ``--env`` (stored as ``dest``, with ``env_help`` and ``env_options``) and ``--env-kwargs``."""
    parser.add_argument("--env", dest=dest, help=env_help, **env_options)
    parser.add_argument("--env-kwargs", metavar="YAML", help=ENV_KWARGS_HELP)


def env_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--env-kwargs`` read as YAML: a dict, or None when it was not given.

    Raises:
        ValueError: the text is not YAML, or not a mapping.
    """
    import yaml

    text = getattr(args, "env_kwargs", None)
    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"--env-kwargs {text!r} is not YAML: {error}") from error
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"--env-kwargs must be a mapping of argument names to values, e.g. '{{env_name: reach-v3}}'; "
            f"got {text!r}"
        )
    return value
