"""Import D4RL's flat HDF5 layout into a new local Minari dataset.

Users still hold D4RL's files (and ``../shared/datasets/`` keeps data made the way D4RL made it), so
:func:`import_d4rl` turns a file of per-transition rows (``observations``, ``actions``, ``rewards``,
``terminals``, ``timeouts``, ...) into Minari episodes, taking the spaces from the env the file names.
:func:`~diffgym.data.load_dataset` imports a file once, under :func:`imported_dataset_id`, and loads it
from the local store afterwards.

The building blocks (episode splitting, space inference, reference returns) are public for
:mod:`diffgym.data.team.d4rl`, which imports files with an agent axis. That importer builds on this
module, so this module does not import it: :mod:`diffgym.data.team` registers it with
:func:`register_agent_axis_importer`, and :func:`import_d4rl` hands such files on to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import h5py
import numpy as np
from gymnasium import spaces
from minari import MinariDataset
from minari.data_collector import EpisodeBuffer
from minari.serialization import serialize_space

from diffgym.data.minari_writer import write_dataset
from diffgym.data.tree import ArrayTree, tree_map
from diffgym.data.validation import DatasetSpaceMismatchError, check_spaces
from diffgym.tasks.envs import ENV_FAMILIES, register_env_family
from diffgym.tasks.extras import EXTRAS, Extra, is_installed, missing_module

__all__ = [
    "ENV_UNAVAILABLE",
    "AgentAxisImporter",
    "SpacePair",
    "action_box",
    "cached_import_hint",
    "check_hdf5_file",
    "env_unavailable_record",
    "explain_cached_import",
    "file_metadata",
    "fit_space",
    "float_dtype",
    "import_d4rl",
    "imported_dataset_id",
    "missing_env_now_installed",
    "reference_returns",
    "register_agent_axis_importer",
    "split_episodes",
    "with_reference_spaces",
]

#: Part of the cache key of imported files: bump it when the import's result changes.
#: 2: goal-env files (PointMaze) are stored with the env's ``Dict`` observations instead of a ``Box``.
#: 3: an import whose env could not be made records why (:data:`ENV_UNAVAILABLE`), so that it is imported
#: afresh once the missing package is installed (imports of format 2 may hold spaces guessed from arrays).
_IMPORT_FORMAT = 3
#: The namespace of ids given to imported D4RL-layout files (local by construction: never downloaded).
IMPORTED_NAMESPACE = "imported"
#: Bytes read at a time while hashing a file (1 MiB).
_HASH_CHUNK = 1 << 20
#: The keys of a goal-conditioned env's ``Dict`` observation (``gymnasium_robotics.core.GoalEnv``).
_GOAL_KEYS = frozenset({"observation", "achieved_goal", "desired_goal"})
#: The per-step array of a D4RL-layout file that holds the goal (maze2d, and the shared maze files).
_GOAL_INFO = "infos/goal"
#: Seed of the one reset that checks where a goal env puts ``achieved_goal`` in its observation.
_CHECK_SEED = 0
#: Packages that register Gymnasium envs when imported: module -> (name, the diffgym extra installing it).
#: An env id of a known family imports its package first (:func:`~diffgym.tasks.envs.register_env_family`);
#: an id that names no family (a file's own spelling) makes the import try all of them.
_ENV_PACKAGES: dict[str, tuple[str, str]] = {
    family.module: EXTRAS[family.module] for family in ENV_FAMILIES if family.api == "gymnasium"
}
#: A pair of spaces (observation, action): an env's, which an import takes as the reference.
SpacePair = tuple[spaces.Space, spaces.Space]
#: Metadata key of an import whose env could not be made: ``{"env_id", "error", "missing_modules"}``.
ENV_UNAVAILABLE = "diffgym_env_unavailable"


class AgentAxisImporter(Protocol):
    """Imports a D4RL-layout file with an agent axis; :func:`import_d4rl` passes its arguments on."""

    def __call__(
        self,
        path: str | Path,
        dataset_id: str | None = None,
        *,
        env_id: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> MinariDataset:
        """Import the file into a new local Minari dataset."""
        ...


#: The importer :func:`import_d4rl` hands files with an agent axis to (see :func:`register_agent_axis_importer`).
_agent_axis_importer: AgentAxisImporter | None = None


def register_agent_axis_importer(importer: AgentAxisImporter) -> None:
    """Make :func:`import_d4rl` (and so :func:`~diffgym.data.load_dataset`) hand files with an agent axis to ``importer``.

    :mod:`diffgym.data.team` registers :func:`~diffgym.data.import_multiagent_d4rl` when it is imported,
    which importing anything from ``diffgym.data`` does.
    """
    global _agent_axis_importer
    _agent_axis_importer = importer


def imported_dataset_id(path: str | Path, reference_spaces: SpacePair | None = None) -> str:
    """The Minari id a D4RL-layout file is imported under: ``imported/<file stem>-<content hash>-v0``.

    The hash covers the file's bytes and the importer's format version, so an edited file (or a
    changed importer) is imported afresh while an unchanged one is loaded from the local store. An
    import with ``reference_spaces`` (see :func:`import_d4rl`) is another dataset: its id adds a hash of
    the spaces (:func:`with_reference_spaces`).
    """
    path = Path(path)
    digest = hashlib.sha256(f"diffgym-import-{_IMPORT_FORMAT}".encode())
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    dataset_id = f"{IMPORTED_NAMESPACE}/{stem}-{digest.hexdigest()[:12]}-v0"
    return dataset_id if reference_spaces is None else with_reference_spaces(dataset_id, reference_spaces)


def with_reference_spaces(dataset_id: str, reference_spaces: SpacePair) -> str:
    """``imported/<stem>-<hash>-v0`` -> ``imported/<stem>-<hash>-s<spaces hash>-v0``: the id of the
    file's import with ``reference_spaces`` (an id without a version gets the suffix at its end)."""
    text = "".join(serialize_space(space) for space in reference_spaces)
    suffix = f"-s{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    name, dash, version = dataset_id.rpartition("-v")
    return f"{name}{suffix}{dash}{version}" if dash and version.isdigit() else f"{dataset_id}{suffix}"


def import_d4rl(
    path: str | Path,
    dataset_id: str | None = None,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    description: str | None = None,
    reference_spaces: SpacePair | None = None,
) -> MinariDataset:
    """Import a D4RL-layout HDF5 file into a new local Minari dataset.

    The file holds one row per transition: ``observations``, ``actions``, ``rewards``, ``terminals``,
    ``timeouts``, optionally ``next_observations`` and per-step arrays under ``infos/``.

    - **Episodes** end at rows whose ``terminals`` or ``timeouts`` is true; rows after the last such
      row form a final episode marked truncated at its last step (its ``timeouts`` reads true after
      the import). Files without ``timeouts`` split on ``terminals`` only.
    - **Observations**: each episode stores its rows' ``observations`` plus the last row's
      ``next_observations`` as final observation. Without ``next_observations`` the last transition
      of every episode is dropped (its next observation is unknown, as in D4RL's
      ``qlearning_dataset``) and the new last step is marked truncated; one-row episodes vanish.
      Rows where ``next_observations[t] != observations[t + 1]`` inside an episode are reported with
      a warning: Minari keeps one observation sequence per episode.
    - **Infos**: each ``infos/<key>`` array with one row per transition is stored as Minari infos
      with ``T + 1`` entries (Minari's convention: entry ``t`` goes with observation ``t``); the
      final entry repeats the last row.
    - **Env and spaces**: ``env_id`` (else the ``env_id`` in the file attribute ``metadata``, with its
      ``env_kwargs``) is made with ``gym.make`` (an id of a family diffgym supports, such as
      ``Meta-World/...``, imports its package first: :func:`~diffgym.tasks.envs.register_env_family`);
      when its spaces have the file's shapes they are used (with the file's float dtype) and the env
      spec is stored.
    - **Reference spaces** (``reference_spaces``: the spaces of the env the data is for, e.g. of the
      agent built with ``env`` and ``dataset=path``): they win over the env's when both fit the arrays
      and differ, and stand in for an env that cannot be made (a file whose metadata names an env by a
      spelling ``gym.make`` does not know, as Meta-World's ``reach-v3-goal-observable``). Observations
      and actions must have the spaces' shapes (a ``Dict`` observation space is left to the env: its
      goal-env checks need one); the env spec is then stored only when the env's spaces agree.
    - **Goal envs** (gymnasium-robotics ``GoalEnv``s such as ``PointMaze_UMaze-v3``, whose observation
      is a ``Dict`` with ``observation``, ``achieved_goal`` and ``desired_goal``): when ``observations``
      fits ``observation`` and ``infos/goal`` fits ``desired_goal``, observations are stored as that
      ``Dict`` (each Box with the file's float dtype): ``observation`` = ``observations``,
      ``desired_goal`` = ``infos/goal`` (a final observation takes its last transition's goal, as the
      env reports the goal it rewarded) and ``achieved_goal`` = the first ``goal_dim`` entries of
      ``observations``. That last part is an *assumption* (true for PointMaze, whose achieved goal is
      the ball's x, y; false e.g. for FetchPush, whose achieved goal is the object's position); it is
      checked twice: the ``achieved_goal`` space must have the goal's shape, and one env reset
      (seed 0) must give ``achieved_goal == observation[:goal_dim]``.
    - **Fallback**: when the env's spaces do not fit the arrays (a warning says so) or the env cannot
      be made, observations get ``Box(-inf, inf)`` and actions ``Box(-1, 1)`` (D4RL's convention) when
      the data lies within it, else ``Box(min, max)`` of the data; the env id is then only kept in
      the metadata (``source_env_id``), and a warning names the env that could not be made and how to
      give one. Pass ``env_id`` / ``env_kwargs`` (or ``reference_spaces``) to take the spaces from an
      env the file does not name in a ``gym.make``-able way (Meta-World: ``env_id="Meta-World/MT1",
      env_kwargs={"env_name": "reach-v3"}``).
    - **Reference returns** for :func:`minari.get_normalized_score` and
      :func:`diffgym.scores.normalized_score`, taken from ``metadata`` in this order:
      ``ref_min_score`` / ``ref_max_score``; ``eval_random`` / ``eval_controller`` mean returns (the
      shared maze files, whose README normalises with the controller = 100, random = 0); D4RL's
      ``d4rl_ref``. The choice is recorded in ``ref_score_source``.
    - **Multi-agent files** (per-agent ``rewards`` (N, n > 1), or an ``agents`` list in the metadata) are
      handed to :func:`diffgym.data.import_multiagent_d4rl` with the same arguments but
      ``reference_spaces`` (see :func:`register_agent_axis_importer`).

    Args:
        path: the ``.hdf5`` file.
        dataset_id: the new Minari id; default :func:`imported_dataset_id`.
        env_id: overrides the file's env id.
        env_kwargs: overrides the file's env kwargs.
        description: Minari description; default names the file and env.
        reference_spaces: (observation space, action space) of the env the data is for (see above).

    An import whose env could not be made (so that its spaces came from the arrays) records why under
    :data:`ENV_UNAVAILABLE` in its metadata, with the missing packages: :func:`~diffgym.data.load_dataset`
    imports the file afresh once they are installed (see :func:`missing_env_now_installed`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an HDF5 file, missing arrays, or a multi-agent file whose arrays lack a common
            agent axis.
    """
    path = check_hdf5_file(path)
    with h5py.File(path, "r") as file:
        file_meta = file_metadata(file)
        multi_agent = _has_agent_axis(file, file_meta)
        arrays = {} if multi_agent else _read_flat(file, path)
    if multi_agent:
        if _agent_axis_importer is None:
            raise ValueError(f"{path} has an agent axis: import diffgym.data.team to import it")
        return _agent_axis_importer(
            path, dataset_id, env_id=env_id, env_kwargs=env_kwargs, description=description
        )
    named_by = "env_id" if env_id else "the file's metadata"
    env_id = env_id or file_meta.get("env_id")
    env_kwargs = env_kwargs if env_kwargs is not None else file_meta.get("env_kwargs", {})
    env, unavailable = _try_make(env_id, env_kwargs) if env_id else (None, None)
    try:
        obs_space, action_space, spaces_from = _import_spaces(arrays, env, reference_spaces)
        if unavailable is not None and spaces_from == "arrays":
            _warn_env_unavailable(unavailable, named_by, obs_space, action_space)
        dataset = write_dataset(
            dataset_id or imported_dataset_id(path, reference_spaces),
            split_episodes(arrays, obs_space, action_space),
            env if spaces_from == "env" else None,
            obs_space,
            action_space,
            algorithm_name=file_meta.get("made_by", "unknown (D4RL-layout file)"),
            author=None,
            description=description or f"Imported from the D4RL-layout file {path.name} (env {env_id})",
        )
    finally:
        if env is not None:
            env.close()
    source = {
        "source_file": path.name,
        "source_path": str(path.resolve()),
        "source_env_id": env_id,
        "source_env_kwargs": env_kwargs,
        "source_metadata": file_meta,
    }
    if unavailable is not None and spaces_from == "arrays":
        source[ENV_UNAVAILABLE] = unavailable
    dataset.storage.update_metadata({**source, **reference_returns(file_meta)})
    return dataset


def check_hdf5_file(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path` once it is known to be an existing HDF5 file.

    Raises:
        FileNotFoundError: nothing exists at ``path``, or it is a directory.
        ValueError: the file lacks the HDF5 signature.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is a directory, not a D4RL-layout .hdf5 file")
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file (it lacks the HDF5 signature); a D4RL-layout file is HDF5"
        )
    return path


def env_unavailable_record(env_id: str, error: BaseException, missing: list[str]) -> dict[str, Any]:
    """What an import stores under :data:`ENV_UNAVAILABLE` when its env could not be made.

    Args:
        env_id: the env.
        error: why it could not be made.
        missing: the top-level modules it may need that are not installed (an installed one later makes
            the import stale, see :func:`missing_env_now_installed`).
    """
    found = missing_module(error)
    candidates = {*missing, found or ""}  # a missing submodule of an installed package is a wrong name
    modules = sorted(name for name in candidates if name and "." not in name and not is_installed(name))
    return {"env_id": env_id, "error": f"{type(error).__name__}: {error}", "missing_modules": modules}


def missing_env_now_installed(dataset: MinariDataset) -> bool:
    """Whether an import's spaces were guessed because its env could not be made and a package it was
    missing has been installed since (its cached import is then stale)."""
    record = dataset.storage.metadata.get(ENV_UNAVAILABLE) or {}
    return any(is_installed(module) for module in record.get("missing_modules", []))


def cached_import_hint(dataset: MinariDataset) -> str:
    """For a dataset imported from a D4RL-layout file: how to remove the cached import or import it
    afresh (to append to an error about the dataset); empty for any other dataset."""
    metadata = dataset.storage.metadata
    if "source_file" not in metadata:
        return ""
    source = metadata.get("source_path", metadata["source_file"])
    env = "" if metadata.get("source_env_id") else " --env ENV_ID --env-kwargs YAML"  # spaces from the arrays
    hint = (
        f"\n  {dataset.id} is an import of {source} cached in the local Minari store "
        f"({dataset.storage.data_path}): import the file afresh with "
        f"`diffgym data import {source} --id {dataset.id}{env} --overwrite`, or remove the cached import "
        f"with `minari delete {dataset.id}`"
    )
    unavailable = metadata.get(ENV_UNAVAILABLE)
    if unavailable:
        hint += (
            f" (its spaces came from the arrays: env {unavailable['env_id']!r} could not be made, "
            f"{unavailable['error']})"
        )
    return hint


@contextlib.contextmanager
def explain_cached_import(dataset: MinariDataset) -> Iterator[None]:
    """Add :func:`cached_import_hint` to a :class:`~diffgym.data.DatasetSpaceMismatchError` raised inside."""
    try:
        yield
    except DatasetSpaceMismatchError as error:
        hint = cached_import_hint(dataset)
        if not hint:
            raise
        raise DatasetSpaceMismatchError(f"{error}{hint}") from error


def file_metadata(file: h5py.File) -> dict[str, Any]:
    """The file attribute ``metadata`` (a JSON object: ``env_id``, ``env_kwargs``, ``agents``, reference
    returns, ...), empty when absent."""
    return json.loads(file.attrs.get("metadata", "{}"))


def _read_flat(file: h5py.File, path: Path) -> dict[str, np.ndarray]:
    """Read the flat arrays (and ``infos/...`` as ``infos/<key>``) and check their shapes."""
    missing = [key for key in ("observations", "actions", "rewards", "terminals") if key not in file]
    if missing:
        raise ValueError(f"{path} is not a D4RL-layout file: it lacks {missing}")
    n = len(file["rewards"])
    arrays = {key: file[key][()] for key in ("observations", "actions")}
    for key in ("rewards", "terminals", "timeouts"):  # (N,) or (N, 1); D4RL v0 files lack timeouts
        arrays[key] = file[key][()].reshape(n) if key in file else np.zeros(n, dtype=bool)
    if "next_observations" in file:
        arrays["next_observations"] = file["next_observations"][()]
    if "infos" in file:
        file["infos"].visititems(lambda name, obj: _read_info(arrays, name, obj, n))
    wrong = {key: len(value) for key, value in arrays.items() if len(value) != n}
    if wrong:
        raise ValueError(f"{path}: arrays must all have {n} rows; these differ: {wrong}")
    arrays["terminals"], arrays["timeouts"] = (
        arrays["terminals"].astype(bool),
        arrays["timeouts"].astype(bool),
    )
    return arrays


def _has_agent_axis(file: h5py.File, meta: dict[str, Any]) -> bool:
    """Whether a file holds per-agent arrays: ``rewards`` (N, n > 1), or the metadata lists ``agents``."""
    rewards = file.get("rewards")
    per_agent = rewards is not None and rewards.ndim > 1 and rewards.shape[1] > 1
    return per_agent or bool(meta.get("agents"))


def _read_info(arrays: dict[str, np.ndarray], name: str, obj: h5py.HLObject, n: int) -> None:
    """Keep an ``infos/`` dataset with one row per transition."""
    if isinstance(obj, h5py.Dataset) and obj.ndim > 0 and len(obj) == n:
        arrays[f"infos/{name}"] = obj[()]


def _try_make(env_id: str, env_kwargs: dict[str, Any]) -> tuple[gym.Env | None, dict[str, Any] | None]:
    """``gym.make`` the env, importing the package of its family first (or, for an id of no known family,
    every package that registers envs); without an env, the :func:`env_unavailable_record` of why."""
    try:
        register_env_family(env_id)  # a missing package raises MissingExtraError, naming its extra
        return gym.make(env_id, **env_kwargs), None
    except gym.error.UnregisteredEnv:  # NameNotFound, or NamespaceNotFound of an unknown namespace
        missing = _import_env_packages()  # maybe one of their envs, registered on import
    except Exception as error:
        return None, env_unavailable_record(env_id, error, [])
    try:
        return gym.make(env_id, **env_kwargs), None
    except Exception as error:
        return None, env_unavailable_record(env_id, error, missing)


def _warn_env_unavailable(
    record: dict[str, Any], named_by: str, obs_space: spaces.Space, action_space: spaces.Space
) -> None:
    """Warn that the env of ``record`` (:func:`env_unavailable_record`) could not be made, so that the
    spaces came from the arrays: name the extras it may need and the ways to give the env."""
    hint = "".join(
        f"; {Extra(*_ENV_PACKAGES[module]).message('its envs', plural=True)}"
        for module in record["missing_modules"]
        if module in _ENV_PACKAGES and Extra(*_ENV_PACKAGES[module]).command not in record["error"]
    )
    warnings.warn(
        f"cannot make env {record['env_id']!r} named by {named_by} ({record['error']}{hint}); spaces come "
        f"from the arrays (observations {obs_space}, actions {action_space}), which fit no env's bounds. Give "
        "the env: build the agent with it (e.g. DiffusionPolicy('MlpPolicy', env, dataset=path) imports the "
        "file with env's spaces), or import_d4rl(path, env_id=..., env_kwargs=...), or `diffgym data import "
        "PATH --env ENV_ID --env-kwargs YAML`",
        stacklevel=3,
    )


def _import_env_packages() -> list[str]:
    """Import the installed packages of :data:`_ENV_PACKAGES`; the modules of the missing ones."""
    missing = []
    for module in _ENV_PACKAGES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def _import_spaces(
    arrays: dict[str, np.ndarray], env: gym.Env | None, reference: SpacePair | None = None
) -> tuple[spaces.Space, spaces.Space, str]:
    """Observation and action spaces for the file, and where they come from: ``"env"``, ``"reference"``
    (``reference`` fitted to the arrays) or ``"arrays"`` (see :func:`import_d4rl`)."""
    obs, actions = arrays["observations"], arrays["actions"]
    from_env, why = _env_spaces(env, arrays) if env is not None else (None, "")
    if from_env is not None and (reference is None or _agree(from_env, reference)):
        return (*from_env, "env")
    if reference is not None:
        obs_space, action_space = fit_space(reference[0], obs), fit_space(reference[1], actions)
        if obs_space is not None and action_space is not None:
            return obs_space, action_space, "reference"
    if from_env is not None:
        return (*from_env, "env")
    if env is not None:
        warnings.warn(
            f"the file's arrays (observations {obs.shape[1:]}, actions {actions.shape[1:]}) do not fit "
            f"{env.spec.id if env.spec else env}'s spaces ({env.observation_space}, {env.action_space}){why}; "
            "storing Box spaces from the arrays and keeping the env id in the metadata only",
            stacklevel=3,
        )
    return spaces.Box(-np.inf, np.inf, obs.shape[1:], float_dtype(obs.dtype)), action_box(actions), "arrays"


def _env_spaces(env: gym.Env, arrays: dict[str, np.ndarray]) -> tuple[SpacePair | None, str]:
    """The env's spaces fitted to the arrays, or None and why not (``""`` or starting with ``": "``)."""
    obs_space: spaces.Space | None
    if isinstance(env.observation_space, spaces.Dict):
        obs_space, why = _goal_dict_space(env, arrays)
    else:
        obs_space, why = fit_space(env.observation_space, arrays["observations"]), ""
    action_space = fit_space(env.action_space, arrays["actions"])
    if obs_space is None or action_space is None:
        return None, why
    return (obs_space, action_space), ""


def _agree(found: SpacePair, reference: SpacePair) -> bool:
    """Whether both spaces of ``found`` pass :func:`~diffgym.data.check_spaces` against ``reference``."""
    try:
        for space, env_space, what in zip(found, reference, ("observation", "action"), strict=True):
            check_spaces(space, env_space, what)
    except DatasetSpaceMismatchError:
        return False
    return True


def _goal_dict_space(env: gym.Env, arrays: dict[str, np.ndarray]) -> tuple[spaces.Dict | None, str]:
    """The goal env's ``Dict`` space with the file's dtypes, or None and why it does not fit.

    See :func:`import_d4rl` (goal envs) for the conditions; the reason starts with ``": "``.
    """
    space = env.observation_space
    assert isinstance(space, spaces.Dict)
    obs, goal = arrays["observations"], arrays.get(_GOAL_INFO)
    if set(space.spaces) != _GOAL_KEYS:
        return None, f": a Dict observation imports only with the goal-env keys {sorted(_GOAL_KEYS)}"
    if goal is None or goal.ndim != 2 or obs.ndim != 2 or goal.shape[1] > obs.shape[1]:
        return None, f": a goal-env Dict needs (N, D) observations and an (N, G <= D) {_GOAL_INFO} array"
    goal_dim = goal.shape[1]
    parts = {
        "observation": fit_space(space["observation"], obs),
        "achieved_goal": fit_space(space["achieved_goal"], obs[:, :goal_dim]),
        "desired_goal": fit_space(space["desired_goal"], goal),
    }
    boxes = {key: part for key, part in parts.items() if isinstance(part, spaces.Box)}
    if len(boxes) < len(parts):
        unfit = sorted(set(parts) - set(boxes))
        return None, f": {unfit} do not fit observations[:, :{goal_dim}] / {_GOAL_INFO} as Boxes"
    if not _achieved_goal_is_prefix(env, goal_dim):
        return None, f": after a reset its achieved_goal is not observation[:{goal_dim}]"
    return spaces.Dict({key: boxes[key] for key in space.spaces}), ""


def _achieved_goal_is_prefix(env: gym.Env, goal_dim: int) -> bool:
    """Whether one reset (seed :data:`_CHECK_SEED`) gives ``achieved_goal == observation[:goal_dim]``."""
    try:
        observation, _ = env.reset(seed=_CHECK_SEED)
    except Exception as error:
        warnings.warn(f"cannot reset the env to check its achieved_goal ({error})", stacklevel=5)
        return False
    return bool(
        np.array_equal(observation["achieved_goal"], np.asarray(observation["observation"])[:goal_dim])
    )


def action_box(actions: np.ndarray) -> spaces.Box:
    """A Box for actions ``(N, *act_shape)``: ``Box(-1, 1)`` (D4RL's and Minari's action range) when the
    data fits in it, else the data's per-dimension range; float dtype as :func:`float_dtype`."""
    low, high = actions.min(axis=0), actions.max(axis=0)
    if low.min() >= -1 and high.max() <= 1:
        low, high = -1.0, 1.0
    return spaces.Box(low, high, actions.shape[1:], float_dtype(actions.dtype))


def float_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a file's array is stored with: its own when it is a float, else float32."""
    return dtype if dtype.kind == "f" else np.dtype(np.float32)


def fit_space(space: spaces.Space, array: np.ndarray) -> spaces.Space | None:
    """The env's ``space`` for rows ``array`` ``(N, *shape)``, or None when they do not fit it.

    A float Box gets the array's float dtype (bounds cast to it); other Boxes and ``Discrete`` spaces are
    returned as they are; any other space does not fit.
    """
    if space.shape != array.shape[1:]:
        return None
    if isinstance(space, spaces.Box) and space.dtype.kind == "f" and array.dtype.kind == "f":
        low, high = space.low.astype(array.dtype), space.high.astype(array.dtype)
        return spaces.Box(low, high, space.shape, array.dtype)
    if isinstance(space, (spaces.Box, spaces.Discrete)):
        return space
    return None


def split_episodes(
    arrays: dict[str, np.ndarray], obs_space: spaces.Space, action_space: spaces.Space
) -> list[EpisodeBuffer]:
    """Cut a file's flat arrays into episode buffers (see :func:`import_d4rl` for the rules).

    Args:
        arrays: ``observations``, ``actions``, ``rewards``, ``terminals`` and ``timeouts`` with one row per
            transition, optionally ``next_observations`` and per-step ``infos/<key>`` arrays.
        obs_space: the space the observations are stored in (a goal-env ``Dict`` builds the dicts).
        action_space: its dtype is the actions'.
    """
    n = len(arrays["rewards"])
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    tail = len(ends) == 0 or ends[-1] != n - 1
    if tail:
        ends = np.append(ends, n - 1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if "next_observations" in arrays:
        _warn_inconsistent_next(arrays["observations"], arrays["next_observations"], ends)
    obs, next_obs = _observation_trees(arrays, obs_space)
    actions = arrays["actions"].astype(action_space.dtype, copy=False)
    infos = {key[len("infos/") :]: value for key, value in arrays.items() if key.startswith("infos/")}
    buffers: list[EpisodeBuffer] = []
    for start, end in zip(starts, ends + 1, strict=True):
        buffer = _episode(arrays, obs, actions, next_obs, infos, int(start), int(end), len(buffers))
        if buffer is not None:
            buffers.append(buffer)
    if tail and buffers:
        buffers[-1].truncations[-1] = True
    dropped = len(starts) - len(buffers)
    if dropped:
        warnings.warn(f"dropped {dropped} one-row episodes (no next_observations in the file)", stacklevel=3)
    return buffers


def _observation_trees(
    arrays: dict[str, np.ndarray], obs_space: spaces.Space
) -> tuple[ArrayTree, ArrayTree | None]:
    """Observations and next observations (None without ``next_observations``) as ``obs_space`` stores them.

    Arrays ``(N, *obs_shape)`` for a Box space; for a goal-env ``Dict`` (see :func:`import_d4rl`) dicts of
    ``(N, ...)`` arrays whose ``desired_goal`` is the row's goal in both (the env reports the goal it
    rewarded the transition with, also after drawing a new one).
    """

    def stored(rows: np.ndarray) -> ArrayTree:
        if isinstance(obs_space, spaces.Dict):
            return _goal_observations(rows, arrays[_GOAL_INFO], obs_space)
        return rows.astype(obs_space.dtype, copy=False)

    next_obs = arrays.get("next_observations")
    return stored(arrays["observations"]), None if next_obs is None else stored(next_obs)


def _goal_observations(rows: np.ndarray, goal: np.ndarray, obs_space: spaces.Dict) -> dict[str, ArrayTree]:
    """Goal-env observations ``key -> (N, ...)`` in ``obs_space``'s key order and dtypes.

    ``rows``: (N, D) observations, ``goal``: (N, G) goals; ``achieved_goal`` is ``rows[:, :G]``.
    """
    parts = {"observation": rows, "achieved_goal": rows[:, : goal.shape[1]], "desired_goal": goal}
    return {key: parts[key].astype(sub.dtype, copy=False) for key, sub in obs_space.spaces.items()}


def _episode(
    arrays: dict[str, np.ndarray],
    obs: ArrayTree,
    actions: np.ndarray,
    next_obs: ArrayTree | None,
    infos: dict[str, np.ndarray],
    start: int,
    end: int,
    episode_id: int,
) -> EpisodeBuffer | None:
    """Rows ``start:end`` as one episode buffer (None when nothing is left of it)."""
    if next_obs is None:
        end -= 1  # the last row's next observation is unknown: drop that transition
        if end <= start:
            return None
        observations = tree_map(lambda rows: rows[start : end + 1], obs)
    else:
        observations = tree_map(
            lambda rows, next_rows: np.concatenate([rows[start:end], next_rows[end - 1 : end]]), obs, next_obs
        )
    truncations = arrays["timeouts"][start:end].copy()
    if next_obs is None:
        truncations[-1] = True
    return EpisodeBuffer(
        id=episode_id,
        observations=observations,
        actions=actions[start:end],
        rewards=arrays["rewards"][start:end],
        terminations=arrays["terminals"][start:end],
        truncations=truncations,
        infos={key: np.concatenate([value[start:end], value[end - 1 : end]]) for key, value in infos.items()}
        or None,
    )


def _warn_inconsistent_next(obs: np.ndarray, next_obs: np.ndarray, ends: np.ndarray) -> None:
    """Warn when ``next_observations[t] != observations[t + 1]`` inside an episode."""
    inside = np.ones(len(obs) - 1, dtype=bool)
    inside[ends[ends < len(obs) - 1]] = False
    differs = (next_obs[:-1] != obs[1:]).reshape(len(obs) - 1, -1).any(axis=1) & inside
    if differs.any():
        warnings.warn(
            f"next_observations[t] != observations[t + 1] at {int(differs.sum())} rows inside episodes "
            f"(first at row {int(np.flatnonzero(differs)[0])}); the import keeps observations[t + 1]",
            stacklevel=4,
        )


def reference_returns(meta: dict[str, Any]) -> dict[str, Any]:
    """Minari's reference-return fields (``ref_min_score``, ``ref_max_score``, ``ref_score_source``) from a
    file's metadata (see :func:`import_d4rl` for the order); empty when it has none."""
    if "ref_min_score" in meta and "ref_max_score" in meta:
        low, high, source = meta["ref_min_score"], meta["ref_max_score"], "file metadata ref_min/max_score"
    elif "eval_random" in meta and "eval_controller" in meta:
        low, high = meta["eval_random"]["mean_return"], meta["eval_controller"]["mean_return"]
        source = "dataset README / file metadata: uniform random = 0, noise-free controller = 100"
    elif "d4rl_ref" in meta:
        low, high = meta["d4rl_ref"]["ref_min_score"], meta["d4rl_ref"]["ref_max_score"]
        source = "D4RL reference returns (file metadata d4rl_ref)"
    else:
        return {}
    return {"ref_min_score": float(low), "ref_max_score": float(high), "ref_score_source": source}
