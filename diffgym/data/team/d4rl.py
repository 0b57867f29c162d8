"""Import D4RL-layout HDF5 files with an agent axis (the shared ``mpe-spread-*.hdf5``) into the team format.

The single-agent importer (:mod:`diffgym.data.d4rl`) does the episode splitting and space inference;
importing this module registers :func:`import_multiagent_d4rl` with it
(:func:`~diffgym.data.d4rl.register_agent_axis_importer`), so that :func:`~diffgym.data.import_d4rl` and
:func:`~diffgym.data.load_dataset` hand such files on to it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces
from minari import MinariDataset
from minari.data_collector import EpisodeBuffer
from pettingzoo import ParallelEnv

from diffgym.data.d4rl import (
    ENV_UNAVAILABLE,
    action_box,
    check_hdf5_file,
    env_unavailable_record,
    file_metadata,
    fit_space,
    float_dtype,
    imported_dataset_id,
    reference_returns,
    register_agent_axis_importer,
    split_episodes,
)
from diffgym.data.minari_writer import write_dataset
from diffgym.data.team.envs import make_parallel_env
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
from diffgym.data.validation import DatasetSpaceMismatchError
from diffgym.scores import get_reference

__all__ = ["import_multiagent_d4rl"]

#: The per-step (T, n) arrays of a multi-agent D4RL-layout file (the others have a feature axis too).
_AGENT_FLAG_ARRAYS = frozenset({"rewards", "terminals", "timeouts"})


def import_multiagent_d4rl(
    path: str | Path,
    dataset_id: str | None = None,
    env: ParallelEnv | None = None,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    agents: Sequence[str] | None = None,
    description: str | None = None,
) -> MinariDataset:
    """Import a D4RL-layout HDF5 file with an agent axis (the shared ``mpe-spread-*.hdf5``) into the format.

    The file holds ``observations`` (T, n, ...), ``actions`` (T, n, ...), ``rewards``, ``terminals`` and
    optionally ``timeouts`` (T, n) and ``next_observations`` (T, n, ...), agents in the order of its
    metadata ``agents``. Episodes end at rows where every agent is terminated or timed out; without
    ``next_observations`` the last transition of each episode is dropped, as :func:`~diffgym.data.import_d4rl`
    does (whose other rules apply too). Other ``infos/`` arrays are not imported (a warning says so).

    Args:
        path: the ``.hdf5`` file.
        dataset_id: the new Minari id; default :func:`~diffgym.data.imported_dataset_id`.
        env: the ``ParallelEnv`` whose spaces the data must fit; default made by :func:`~diffgym.data.make_parallel_env`
            from ``env_id`` / ``env_kwargs`` or the file's metadata ``env_id`` / ``env_kwargs``. Without
            any env the spaces come from the arrays (``Box(-inf, inf)`` observations, ``Box(-1, 1)`` or
            the data's range for actions).
        env_id, env_kwargs: override the file's.
        agents: the agent ids in the file's order; default the metadata ``agents``, else the env's
            ``possible_agents``.
        description: Minari description.

    Reference returns come from the metadata (as :func:`~diffgym.data.import_d4rl`), else from
    :mod:`diffgym.scores` by the file name (``mpe-spread-*``: the shared README's random / expert). An
    env that could not be made is recorded as :func:`~diffgym.data.import_d4rl` records it (the import is
    made afresh once its missing package is installed).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an HDF5 file, or arrays without a (common) agent axis or missing.
        AgentMismatchError: the agent ids do not match the arrays or the env.
        DatasetSpaceMismatchError: an agent's arrays do not fit its space in the env.
    """
    path = check_hdf5_file(path)
    with h5py.File(path, "r") as file:
        meta = file_metadata(file)
        arrays = _read_agent_arrays(file, path)
    env_id = env_id or meta.get("env_id")
    env_kwargs = env_kwargs if env_kwargs is not None else meta.get("env_kwargs", {})
    made, unavailable = (
        (None, None) if env is not None or env_id is None else _try_make_parallel(env_id, env_kwargs)
    )
    env = made if env is None else env
    try:
        agents = _file_agents(agents or meta.get("agents"), env, arrays["rewards"].shape[1], path)
        obs_spaces, action_spaces = _agent_spaces(arrays, agents, env, path)
    finally:
        if made is not None:
            made.close()
    buffers = split_episodes(
        _team_arrays(arrays), _dtype_box(arrays["observations"]), _dtype_box(arrays["actions"])
    )
    dataset = write_dataset(
        dataset_id or imported_dataset_id(path),
        [_agent_buffer(buffer, agents) for buffer in buffers],
        None,
        spaces.Dict(obs_spaces),
        spaces.Dict(action_spaces),
        algorithm_name=meta.get("made_by", "unknown (D4RL-layout file)"),
        author=None,
        description=description
        or f"Imported from the multi-agent D4RL-layout file {path.name} (env {env_id})",
    )
    parallel_env = {"id": env_id, "kwargs": env_kwargs} if env_id else None
    source = {
        "source_file": path.name,
        "source_path": str(path.resolve()),
        "source_env_id": env_id,
        "source_env_kwargs": env_kwargs,
        "source_metadata": meta,
    }
    if unavailable is not None:
        source[ENV_UNAVAILABLE] = unavailable
    dataset.storage.update_metadata(
        {**format_metadata(agents, parallel_env), **source, **_file_references(meta, path)}
    )
    return dataset


def _read_agent_arrays(file: h5py.File, path: Path) -> dict[str, np.ndarray]:
    """The file's arrays, checked to share ``T`` rows and ``n`` agents on axis 1."""
    required = ("observations", "actions", "rewards", "terminals")
    missing = [key for key in required if key not in file]
    if missing:
        raise ValueError(f"{path} is not a D4RL-layout file: it lacks {missing}")
    keys = [key for key in (*required, "timeouts", "next_observations") if key in file]
    arrays = {key: file[key][()] for key in keys}
    rewards = arrays["rewards"]
    if rewards.ndim != 2:
        raise ValueError(
            f"{path}: the multi-agent importer needs rewards shaped (T, n_agents), not {rewards.shape}"
        )
    shape = rewards.shape
    wrong = {key: value.shape for key, value in arrays.items() if not _agent_shaped(key, value.shape, shape)}
    if wrong:
        raise ValueError(
            f"{path}: the multi-agent importer needs every array shaped (T, n_agents, ...) with T, n_agents = "
            f"{shape} (observations and actions with a feature axis); these differ: {wrong}"
        )
    ignored = sorted(f"infos/{name}" for name in file.get("infos", {}))
    if ignored:
        warnings.warn(
            f"{path}: not importing {ignored} (the multi-agent importer keeps no extra infos)", stacklevel=3
        )
    arrays["terminals"] = arrays["terminals"].astype(bool)
    arrays["timeouts"] = arrays.get("timeouts", np.zeros(shape, bool)).astype(bool)
    return arrays


def _agent_shaped(key: str, shape: tuple[int, ...], steps_agents: tuple[int, ...]) -> bool:
    """Whether a file array has the (T, n) rows of ``rewards``: flags exactly, vectors with a feature axis."""
    if key in _AGENT_FLAG_ARRAYS:
        return shape == steps_agents
    return len(shape) >= 3 and shape[:2] == steps_agents


def _try_make_parallel(
    env_id: str, env_kwargs: dict[str, Any]
) -> tuple[ParallelEnv | None, dict[str, Any] | None]:
    """:func:`~diffgym.data.make_parallel_env`; when it cannot be made, a warning and the
    :func:`~diffgym.data.d4rl.env_unavailable_record` of why."""
    try:
        return make_parallel_env(env_id, env_kwargs), None
    except Exception as error:
        warnings.warn(
            f"cannot make the PettingZoo env {env_id!r} ({error}); spaces come from the arrays", stacklevel=4
        )
        return None, env_unavailable_record(env_id, error, [])


def _file_agents(
    agents: Sequence[str] | None, env: ParallelEnv | None, n: int, path: Path
) -> tuple[str, ...]:
    """The file's agent ids, checked against its agent axis and the env's agents."""
    if agents is None and env is not None:
        agents = env.possible_agents
    if agents is None:
        raise ValueError(f"{path}: its metadata names no agents and there is no env; pass agents=[...]")
    agents = tuple(agents)
    if len(agents) != n or len(set(agents)) != n:
        raise AgentMismatchError(f"{path}: its arrays have {n} agents but the agent ids are {list(agents)}")
    if env is not None and (len(env.possible_agents) != n or set(env.possible_agents) != set(agents)):
        raise AgentMismatchError(
            f"{path}: the file has {n} agents {list(agents)} but the env has {len(env.possible_agents)} "
            f"{list(env.possible_agents)}"
        )
    return agents


def _agent_spaces(
    arrays: dict[str, np.ndarray], agents: tuple[str, ...], env: ParallelEnv | None, path: Path
) -> tuple[dict[str, spaces.Space], dict[str, spaces.Space]]:
    """Each agent's observation and action space: the env's with the file's float dtype, or from the arrays."""
    obs, actions = arrays["observations"], arrays["actions"]
    if env is None:
        observation_box = spaces.Box(-np.inf, np.inf, obs.shape[2:], float_dtype(obs.dtype))
        return (
            {agent: observation_box for agent in agents},
            {agent: action_box(actions[:, k]) for k, agent in enumerate(agents)},
        )
    return (
        {
            a: _fitting(env.observation_space(a), obs[:, k], a, k, "observation", path)
            for k, a in enumerate(agents)
        },
        {a: _fitting(env.action_space(a), actions[:, k], a, k, "action", path) for k, a in enumerate(agents)},
    )


def _fitting(
    env_space: spaces.Space, array: np.ndarray, agent: str, k: int, what: str, path: Path
) -> spaces.Space:
    """The env's space for agent ``k``'s rows ``array`` (T, ...) with the file's float dtype, or an error."""
    space = fit_space(env_space, array)
    if space is None:
        raise DatasetSpaceMismatchError(
            f"{path}: {what} of agent {agent!r} (index {k}) has shape {array.shape[1:]} and dtype {array.dtype} "
            f"in the file, which do not fit the env's {what} space {env_space}"
        )
    return space


def _dtype_box(array: np.ndarray) -> spaces.Box:
    """A Box carrying the array's (float) dtype, all that the episode splitting uses of a space."""
    return spaces.Box(-np.inf, np.inf, array.shape[1:], float_dtype(array.dtype))


def _team_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The flat team arrays the D4RL episode splitting takes; per-agent arrays go to ``infos/``."""
    terminated, truncated = team_flags(arrays["terminals"], arrays["timeouts"])
    vectors = ("observations", "actions", "next_observations")
    team: dict[str, np.ndarray] = {key: arrays[key] for key in vectors if key in arrays}
    return {
        **team,
        "rewards": team_reward(arrays["rewards"]),
        "terminals": terminated,
        "timeouts": truncated,
        f"infos/{AGENT_REWARDS}": arrays["rewards"],
        f"infos/{AGENT_TERMINATIONS}": arrays["terminals"],
        f"infos/{AGENT_TRUNCATIONS}": arrays["timeouts"],
    }


def _agent_buffer(buffer: EpisodeBuffer, agents: tuple[str, ...]) -> EpisodeBuffer:
    """A split episode in the format: agent-keyed observations and actions, per-agent infos of ``T`` rows.

    The split repeats each info's last row for the final observation (dropped here) and may mark the
    last step truncated (an unterminated tail, or a transition dropped for want of a next
    observation): every agent that has not terminated is then truncated too.
    """
    assert buffer.infos is not None
    infos = {key: np.asarray(value)[:-1] for key, value in buffer.infos.items()}
    infos[AGENT_TRUNCATIONS] = truncate_unfinished(
        infos[AGENT_TERMINATIONS], infos[AGENT_TRUNCATIONS], np.asarray(buffer.truncations, bool)
    )
    observations, actions = np.asarray(buffer.observations), np.asarray(buffer.actions)
    return dataclasses.replace(
        buffer,
        observations={agent: observations[:, k] for k, agent in enumerate(agents)},
        actions={agent: actions[:, k] for k, agent in enumerate(agents)},
        infos=infos,
    )


def _file_references(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """Reference returns from the file's metadata, else :mod:`diffgym.scores` by the file name."""
    from_meta = reference_returns(meta)
    if from_meta:
        return from_meta
    try:
        reference = get_reference(path.stem)
    except KeyError:
        return {}
    return {
        "ref_min_score": reference.random,
        "ref_max_score": reference.expert,
        "ref_score_source": reference.source,
    }


register_agent_axis_importer(import_multiagent_d4rl)
