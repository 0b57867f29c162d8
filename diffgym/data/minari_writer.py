"""Write episode buffers into a new local Minari dataset.

Every writer in diffgym (collection, D4RL import, the team format, SynthER's upsampling) builds
:class:`minari.data_collector.EpisodeBuffer` objects straight from numpy arrays and stores them with
:func:`write_dataset` (Minari's ``DataCollector`` would need jax).
"""

from __future__ import annotations

import shutil
import warnings

import gymnasium as gym
import minari
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from minari import MinariDataset
from minari.data_collector import EpisodeBuffer
from minari.storage import get_dataset_path

__all__ = ["write_dataset"]


def write_dataset(
    dataset_id: str,
    buffers: list[EpisodeBuffer],
    env: gym.Env | None,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    algorithm_name: str,
    author: str | None,
    description: str,
) -> MinariDataset:
    """:func:`minari.create_dataset_from_buffers` without its warnings about optional metadata.

    The env is recorded only when it has a spec that can be serialised (not e.g. Meta-World's,
    registered with a callable entry point); otherwise just the spaces are stored. A write that fails
    leaves no half-written dataset behind (a later load would take it for complete).

    Args:
        dataset_id: the new Minari id; must not exist yet.
        buffers: the episodes, in order.
        env: the env the data comes from, if any (see above).
        observation_space, action_space: the spaces the buffers' arrays live in.
        algorithm_name, author, description: Minari metadata.
    """
    env = env if env is not None and env.spec is not None and _spec_serialisable(env.spec) else None
    directory = get_dataset_path(dataset_id)
    existed = directory.exists()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is set to None", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"env_spec is None", category=UserWarning)
            return minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env,
                observation_space=observation_space,
                action_space=action_space,
                algorithm_name=algorithm_name,
                author=author,
                description=description,
            )
    except BaseException:
        if not existed:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _spec_serialisable(spec: EnvSpec) -> bool:
    """Whether Minari can store the env spec (warns when it cannot)."""
    try:
        spec.to_json()
    except (TypeError, ValueError) as error:
        warnings.warn(f"not recording the env spec in the dataset: {error}", stacklevel=4)
        return False
    return True
