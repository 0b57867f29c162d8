"""Load Minari datasets (by id, directory, object or D4RL-layout file) into flat numpy arrays.

Shapes below use ``N`` for the number of transitions and ``E`` for the number of episodes. Every
episode of ``T`` steps has ``T + 1`` observations (Minari's layout); transition ``t`` goes from
observation ``t`` to observation ``t + 1``, so episode boundaries are never crossed.
"""

from __future__ import annotations

import difflib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeAlias

import gymnasium as gym
import minari
import numpy as np
from filelock import FileLock
from gymnasium import spaces
from minari import MinariDataset
from minari.dataset.minari_dataset import parse_dataset_id
from minari.storage import get_dataset_path

from diffgym.data.d4rl import (
    ENV_UNAVAILABLE,
    IMPORTED_NAMESPACE,
    SpacePair,
    check_hdf5_file,
    explain_cached_import,
    import_d4rl,
    imported_dataset_id,
    missing_env_now_installed,
    with_reference_spaces,
)
from diffgym.data.tree import ArrayTree, iter_leaves, storage_dtype, tree_map
from diffgym.data.validation import (
    DatasetSpaceMismatchError,
    check_episode_lengths,
    check_finite,
    check_spaces,
)

__all__ = [
    "DatasetLike",
    "EpisodeArrays",
    "Transitions",
    "flatten_observations",
    "iterate_episodes",
    "load_dataset",
    "load_transitions",
    "read_episodes",
    "validate_dataset",
]

#: What every ``dataset=`` argument in diffgym accepts.
DatasetLike: TypeAlias = str | os.PathLike | MinariDataset

_HDF5_SUFFIXES = (".hdf5", ".h5")
#: Episodes read per opening of a dataset's file (see :func:`iterate_episodes`).
EPISODES_PER_OPEN = 256
#: How alike (difflib's ratio) a local id must be to a missing one to be listed as near it.
_NEAR_CUTOFF = 0.6
#: A missing id this alike to a local id of another name is taken for a typo of it: not downloaded.
_TYPO_CUTOFF = 0.9


class Transitions(NamedTuple):
    """All transitions of a dataset, concatenated in episode order.

    Float arrays are float32, integer arrays int64. For a ``Dict`` observation space,
    ``observations`` and ``next_observations`` are dicts ``key -> (N, *key_shape)`` (use
    :func:`flatten_observations` for one vector per step).
    """

    observations: ArrayTree  #: (N, *obs_shape)
    actions: np.ndarray  #: (N, *act_shape)
    rewards: np.ndarray  #: (N,) float32
    next_observations: ArrayTree  #: (N, *obs_shape)
    terminals: np.ndarray  #: (N,) bool, Minari's ``terminations``
    timeouts: np.ndarray  #: (N,) bool, Minari's ``truncations``
    episode_ids: np.ndarray  #: (N,) int64, the Minari episode id of each transition


class EpisodeArrays(NamedTuple):
    """Per-episode arrays concatenated once, keeping each episode's final observation.

    Episode ``i`` holds steps ``step_offsets[i]:step_offsets[i + 1]`` and observations
    ``observation_offsets[i]:observation_offsets[i + 1]`` (one more row than steps).
    """

    observations: ArrayTree  #: (N + E, *obs_shape): each episode's T + 1 observations
    actions: np.ndarray  #: (N, *act_shape)
    rewards: np.ndarray  #: (N,) float32
    terminations: np.ndarray  #: (N,) bool
    truncations: np.ndarray  #: (N,) bool
    infos: dict[str, np.ndarray]  #: requested info keys -> (N, ...), the info aligned with observation t
    lengths: np.ndarray  #: (E,) int64, steps per episode
    episode_ids: np.ndarray  #: (E,) int64, Minari episode ids

    @property
    def step_offsets(self) -> np.ndarray:
        """(E + 1,) first step row of each episode, then N."""
        return np.concatenate([[0], np.cumsum(self.lengths)])

    @property
    def observation_offsets(self) -> np.ndarray:
        """(E + 1,) first observation row of each episode, then N + E."""
        return self.step_offsets + np.arange(len(self.lengths) + 1)

    def observation_rows(self) -> np.ndarray:
        """(N,) the observation row of each step (add 1 for its next observation)."""
        return np.arange(int(self.lengths.sum())) + np.repeat(np.arange(len(self.lengths)), self.lengths)


def load_dataset(
    dataset: DatasetLike, download: bool = False, reference_spaces: SpacePair | None = None
) -> MinariDataset:
    """Return a :class:`minari.MinariDataset` for any of the accepted forms.

    Args:
        dataset: one of
            - a :class:`minari.MinariDataset` (returned as is);
            - a path to a Minari dataset directory (the one holding ``data/`` or ``data/`` itself);
            - a path to a D4RL-layout ``.hdf5`` / ``.h5`` file: imported once into the local Minari
              store (``MINARI_DATASETS_PATH`` or ``~/.minari``) under
              :func:`~diffgym.data.imported_dataset_id`, which hashes the file's content, and loaded
              from there afterwards;
            - a Minari dataset id such as ``"mujoco/hopper/medium-v0"``. An existing path wins over an
              id of the same spelling.
        download: for ids only, passed to :func:`minari.load_dataset`. With the default ``False`` an
            id must already be in the local store, exactly like ``minari.load_dataset(id)``; with
            ``True`` Minari downloads a missing dataset from its remote, unless the id looks like a
            typo of a local one (a local id of another name with difflib ratio >= 0.9, e.g.
            ``d4rl/hoper/medium-v0`` beside ``d4rl/hopper/medium-v0``): that is refused before any
            download (``minari download ID`` fetches it anyway).
        reference_spaces: for D4RL-layout files only: ``(observation space, action space)`` of the env
            the data is for (an agent passes its env's). A cached import whose spaces agree with them is
            loaded; otherwise the file is imported with them (:func:`~diffgym.data.import_d4rl`'s
            ``reference_spaces``, under :func:`~diffgym.data.imported_dataset_id` with the spaces), so a
            file whose metadata names no ``gym.make``-able env still gets the env's spaces. Used when
            both are ``Box`` spaces (a ``Dict`` observation is left to the env the file names).

    A cached import whose env could not be made when it was imported (its spaces were guessed from the
    arrays) is imported afresh once the missing package is installed.

    Raises:
        FileNotFoundError: a path that does not exist (anything ending in ``.hdf5`` / ``.h5``, or that
            is not a Minari id, is taken for a path); an id that is not in the local store (with
            ``download=False``, or a typo of a local id) or that Minari could not download. The message
            lists the local ids near it.
        ValueError: a path that is neither a Minari dataset directory nor an HDF5 file.
    """
    if isinstance(dataset, MinariDataset):
        return dataset
    path = Path(dataset)
    if isinstance(dataset, os.PathLike) or path.exists() or path.suffix in _HDF5_SUFFIXES:
        return _load_path(path, reference_spaces)
    return _load_id(str(dataset), download)


def _load_id(dataset_id: str, download: bool) -> MinariDataset:
    """A dataset of the local store, or (``download``) of Minari's remote; see :func:`load_dataset`."""
    if not _is_dataset_id(dataset_id):
        raise FileNotFoundError(
            f"{dataset_id} does not exist, and it is not a Minari dataset id either (namespace/name-vN)"
        )
    if get_dataset_path(dataset_id).joinpath("data").exists():
        return minari.load_dataset(dataset_id)
    near = _near_local_ids(dataset_id)
    missing = f"no local dataset has id {dataset_id!r} (Minari store: {get_dataset_path()})"
    if near:
        missing += f"; local ids near it: {', '.join(near)}"
    if not download:
        raise FileNotFoundError(
            f"{missing}. Run `minari download {dataset_id}` or pass download=True (it needs internet)."
        )
    if dataset_id.startswith(IMPORTED_NAMESPACE + "/"):
        raise FileNotFoundError(
            f"{missing}. Ids under {IMPORTED_NAMESPACE}/ name local imports of D4RL-layout files, which no "
            "remote has: pass the .hdf5 file itself (or import it again with `diffgym data import FILE`)."
        )
    if _is_typo(dataset_id, near):
        raise FileNotFoundError(
            f"{missing}. It looks like a typo of {near[0]!r}, so it is not downloaded; if it is a dataset "
            f"of Minari's remote, run `minari download {dataset_id}` first."
        )
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as error:  # whatever the download raised: say first that the id is not local
        raise FileNotFoundError(f"{missing}, and Minari could not download it: {error}") from error


def _is_dataset_id(name: str) -> bool:
    """Whether ``name`` is a Minari id with a version (``namespace/name-vN``)."""
    try:
        parse_dataset_id(name)
    except (ValueError, TypeError):  # TypeError: no version
        return False
    return True


def _near_local_ids(dataset_id: str) -> list[str]:
    """The local store's ids most like ``dataset_id``, best first."""
    local = minari.list_local_datasets()
    return difflib.get_close_matches(dataset_id, list(local), n=5, cutoff=_NEAR_CUTOFF)


def _is_typo(dataset_id: str, near: list[str]) -> bool:
    """Whether ``dataset_id`` is a near miss of the closest local id's name (not another version of it)."""
    if not near:
        return False
    name, closest = _versionless(dataset_id), _versionless(near[0])
    return name != closest and difflib.SequenceMatcher(None, name, closest).ratio() >= _TYPO_CUTOFF


def _versionless(dataset_id: str) -> str:
    """``namespace/name`` of ``namespace/name-vN``."""
    namespace, name, _ = parse_dataset_id(dataset_id)
    return f"{namespace}/{name}" if namespace else name


def _load_path(path: Path, reference_spaces: SpacePair | None) -> MinariDataset:
    """Load a Minari dataset directory or a (cached import of a) D4RL-layout HDF5 file."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (no such file or directory)")
    if path.is_file() and path.suffix in _HDF5_SUFFIXES:
        return _load_import(path, reference_spaces)
    for data_dir in (path, path / "data"):
        if data_dir.joinpath("metadata.json").is_file():
            return MinariDataset(data_dir)
    raise ValueError(
        f"{path} is neither a Minari dataset directory (with data/metadata.json) nor a D4RL-layout "
        f"file ({', '.join(_HDF5_SUFFIXES)})"
    )


def _load_import(path: Path, reference_spaces: SpacePair | None) -> MinariDataset:
    """The cached import of a D4RL-layout file (with ``reference_spaces``: one that agrees with them, see
    :func:`load_dataset`), imported (afresh when the cached one is stale).

    One process at a time reads or writes a file's imports (a lock file beside them): runs started
    together on the same file (two background runs, Ray tasks) import it once, and none reads an
    import another is still writing."""
    dataset_id = imported_dataset_id(check_hdf5_file(path))
    folder = get_dataset_path(dataset_id)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f"{folder.name}.lock"):
        return _import_once(path, dataset_id, reference_spaces)


def _import_once(path: Path, dataset_id: str, reference_spaces: SpacePair | None) -> MinariDataset:
    boxes = reference_spaces is not None and all(isinstance(s, spaces.Box) for s in reference_spaces)
    if not boxes:
        return _cached_import(path, dataset_id, None)
    assert reference_spaces is not None
    cached = _fresh_cached(dataset_id)
    if cached is not None and _spaces_agree(cached, reference_spaces):
        return cached
    return _cached_import(path, with_reference_spaces(dataset_id, reference_spaces), reference_spaces)


def _fresh_cached(dataset_id: str) -> MinariDataset | None:
    """The local import ``dataset_id`` unless missing or stale (:func:`missing_env_now_installed`)."""
    if not get_dataset_path(dataset_id).joinpath("data").exists():
        return None
    cached = minari.load_dataset(dataset_id)
    return None if missing_env_now_installed(cached) else cached


def _spaces_agree(dataset: MinariDataset, reference_spaces: SpacePair) -> bool:
    """Whether the dataset's spaces pass :func:`check_spaces` against ``reference_spaces``."""
    try:
        check_spaces(dataset.observation_space, reference_spaces[0], "observation")
        check_spaces(dataset.action_space, reference_spaces[1], "action")
    except DatasetSpaceMismatchError:
        return False
    return True


def _cached_import(path: Path, dataset_id: str, reference_spaces: SpacePair | None) -> MinariDataset:
    """The import ``dataset_id`` of ``path`` from the local store, or imported (afresh when stale)."""
    if get_dataset_path(dataset_id).joinpath("data").exists():
        cached = minari.load_dataset(dataset_id)
        if not missing_env_now_installed(cached):
            return cached
        unavailable = cached.storage.metadata[ENV_UNAVAILABLE]
        warnings.warn(
            f"importing {path} afresh: its cached import {dataset_id} took its spaces from the arrays "
            f"because env {unavailable['env_id']!r} could not be made, and "
            f"{', '.join(unavailable['missing_modules'])} is installed now",
            stacklevel=6,
        )
        shutil.rmtree(get_dataset_path(dataset_id))
    return import_d4rl(path, dataset_id=dataset_id, reference_spaces=reference_spaces)


def read_episodes(
    dataset: DatasetLike, info_keys: tuple[str, ...] = (), check_finite_values: bool = True
) -> EpisodeArrays:
    """Read every episode once into preallocated concatenated arrays.

    Floats become float32 and integers int64 while copying, so no second full-size copy is made.

    Args:
        dataset: anything :func:`load_dataset` accepts.
        info_keys: per-step info fields to keep (``"goal"`` or nested ``"a/b"``). Minari stores ``T + 1``
            infos (the reset info first) or ``T``; the first ``T`` are kept, entry ``t`` belonging to
            observation ``t``.
        check_finite_values: raise :class:`~diffgym.data.NonFiniteDataError` on NaN / inf in
            observations, actions or rewards.

    Raises:
        EpisodeLengthError: an episode whose arrays disagree in length.
        NonFiniteDataError: see ``check_finite_values``.
    """
    data = load_dataset(dataset)
    arrays = read_episodes_into(data, _allocate, info_keys)
    if check_finite_values:
        _check_finite(arrays)
    return arrays


#: Makes a dataset's empty buffers from its first episode: ``(episode, infos, n_steps, n_episodes)``.
Allocator: TypeAlias = Callable[[minari.EpisodeData, dict[str, np.ndarray], int, int], EpisodeArrays]


def read_episodes_into(
    data: MinariDataset,
    allocate: Allocator,
    info_keys: tuple[str, ...] = (),
    check_each_episode: bool = False,
) -> EpisodeArrays:
    """:func:`read_episodes`'s episode loop into the buffers ``allocate`` makes (e.g. memory-mapped files).

    With ``check_each_episode`` each episode's rows are checked for NaN / inf right after they are
    copied (no full-size temporary, unlike a check of the whole arrays).
    """
    n_steps, n_episodes = data.total_steps, data.total_episodes
    if n_episodes == 0:
        raise ValueError(f"dataset {data.id} has no episodes")
    buffers: EpisodeArrays | None = None
    lengths = np.zeros(n_episodes, dtype=np.int64)
    step = 0
    for index, episode in enumerate(iterate_episodes(data)):
        infos = {key: _info_field(episode.infos, key, episode.id) for key in info_keys}
        n = _checked_length(episode, infos)
        if step + n > n_steps:
            raise ValueError(f"dataset {data.id}: its metadata counts {n_steps} steps, its episodes more")
        if buffers is None:
            buffers = allocate(episode, infos, n_steps, n_episodes)
        _fill(buffers, episode, infos, step, step + index)
        if check_each_episode:
            _check_finite(_episode_rows(buffers, step, step + index, n, episode.id))
        lengths[index], step = n, step + n
    if step != n_steps:
        raise ValueError(f"dataset {data.id}: its metadata counts {n_steps} steps, its episodes {step}")
    assert buffers is not None
    return buffers._replace(lengths=lengths, episode_ids=data.episode_indices.astype(np.int64))


def iterate_episodes(data: MinariDataset) -> Iterator[minari.EpisodeData]:
    """Every episode of ``data`` in order, as ``data.iterate_episodes()``, with the file opened again
    for each block of :data:`EPISODES_PER_OPEN` episodes: HDF5 keeps caches per open file that grow
    with every episode group read (232–241 MB of memory after 10,000 episodes in one opening, 17–18 MB
    reopened every 256; ``zoo/results/larger-than-memory/probes.json``), which would bound the data we
    can read by RAM."""
    indices = data.episode_indices
    assert indices is not None
    for start in range(0, len(indices), EPISODES_PER_OPEN):
        yield from data.iterate_episodes(indices[start : start + EPISODES_PER_OPEN])


def _episode_rows(buffers: EpisodeArrays, step: int, row: int, n: int, episode_id: int) -> EpisodeArrays:
    """One episode's rows of the buffers (views), as an :class:`EpisodeArrays` of one episode."""
    steps = slice(step, step + n)
    return EpisodeArrays(
        observations=tree_map(lambda a: a[row : row + n + 1], buffers.observations),
        actions=tree_map(lambda a: a[steps], buffers.actions),
        rewards=buffers.rewards[steps],
        terminations=buffers.terminations[steps],
        truncations=buffers.truncations[steps],
        infos={},
        lengths=np.array([n], dtype=np.int64),
        episode_ids=np.array([episode_id], dtype=np.int64),
    )


def _info_field(infos: dict | None, key: str, episode_id: int) -> np.ndarray:
    """Look up a (``/``-separated, possibly nested) info key of one episode."""
    value = infos or {}
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"episode {episode_id} has no info field {key!r}; infos: {list(infos or {})}")
        value = value[part]
    return np.asarray(value)


def _checked_length(episode: minari.EpisodeData, infos: dict[str, np.ndarray]) -> int:
    """Return the episode's number of steps after checking every field's length."""
    n = len(episode.rewards)
    lengths = {name: len(array) for name, array in iter_leaves(episode.observations, "observations")}
    lengths.update(
        {name: len(array) for name, array in iter_leaves(episode.actions, "actions")},
        terminations=len(episode.terminations),
        truncations=len(episode.truncations),
    )
    check_episode_lengths(episode.id, n, lengths)
    short = {f"infos/{key}": len(value) for key, value in infos.items() if len(value) < n}
    check_episode_lengths(episode.id, n, short)
    return n


def _allocate(
    episode: minari.EpisodeData, infos: dict[str, np.ndarray], n_steps: int, n_episodes: int
) -> EpisodeArrays:
    """Empty arrays shaped after the first episode."""
    return EpisodeArrays(
        observations=tree_map(lambda a: _empty_like(a, n_steps + n_episodes), episode.observations),
        actions=tree_map(lambda a: _empty_like(a, n_steps), episode.actions),
        rewards=np.empty(n_steps, dtype=np.float32),
        terminations=np.empty(n_steps, dtype=bool),
        truncations=np.empty(n_steps, dtype=bool),
        infos={key: _empty_like(value, n_steps) for key, value in infos.items()},
        lengths=np.empty(0, dtype=np.int64),
        episode_ids=np.empty(0, dtype=np.int64),
    )


def _empty_like(example: np.ndarray, rows: int) -> np.ndarray:
    """``(rows, *example.shape[1:])`` uninitialised, in diffgym's in-memory dtype."""
    example = np.asarray(example)
    return np.empty((rows, *example.shape[1:]), dtype=storage_dtype(example.dtype))


def _fill(
    buffers: EpisodeArrays, episode: minari.EpisodeData, infos: dict[str, np.ndarray], step: int, row: int
) -> None:
    """Copy one episode into the buffers at step ``step`` and observation row ``row``."""
    n = len(episode.rewards)
    tree_map(
        lambda buffer, value: _copy_rows(buffer, value, row, n + 1),
        buffers.observations,
        episode.observations,
    )
    tree_map(lambda buffer, value: _copy_rows(buffer, value, step, n), buffers.actions, episode.actions)
    for name in ("rewards", "terminations", "truncations"):
        _copy_rows(getattr(buffers, name), getattr(episode, name), step, n)
    for key, value in infos.items():
        _copy_rows(buffers.infos[key], value, step, n)


def _copy_rows(buffer: np.ndarray, value: np.ndarray, start: int, n: int) -> None:
    """``buffer[start:start + n] = value[:n]`` (casting to the buffer's dtype)."""
    buffer[start : start + n] = value[:n]


def _check_finite(arrays: EpisodeArrays) -> None:
    """Check observations against the observation rows and step fields against the step rows."""
    episode_ids = arrays.episode_ids
    observations = dict(iter_leaves(arrays.observations, "observations"))
    check_finite(observations, arrays.observation_offsets, episode_ids, observation_rows=True)
    step_fields = dict(iter_leaves(arrays.actions, "actions"), rewards=arrays.rewards)
    check_finite(step_fields, arrays.step_offsets, episode_ids)


def load_transitions(dataset: DatasetLike, check_finite_values: bool = True) -> Transitions:
    """Load every transition of a dataset as flat arrays with correct episode boundaries.

    Within each episode ``observations = ep.observations[:-1]`` and
    ``next_observations = ep.observations[1:]``. Runs the length checks and, unless disabled, the
    NaN / inf checks (naming field, episode id and step; a non-finite *final* observation shows as
    step ``T`` of ``observations``, i.e. the last ``next_observations``).

    Args:
        dataset: anything :func:`load_dataset` accepts.
        check_finite_values: raise :class:`~diffgym.data.NonFiniteDataError` on NaN / inf.
    """
    arrays = read_episodes(dataset, check_finite_values=check_finite_values)
    rows = arrays.observation_rows()
    return Transitions(
        observations=tree_map(lambda a: a[rows], arrays.observations),
        actions=arrays.actions,
        rewards=arrays.rewards,
        next_observations=tree_map(lambda a: a[rows + 1], arrays.observations),
        terminals=arrays.terminations,
        timeouts=arrays.truncations,
        episode_ids=np.repeat(arrays.episode_ids, arrays.lengths),
    )


def validate_dataset(dataset: DatasetLike, env: gym.Env | None = None) -> None:
    """Run every check: episode lengths, finite values and, given an env, both spaces against it (a
    D4RL-layout file is loaded with the env's spaces as ``reference_spaces``, see :func:`load_dataset`).

    Raises:
        EpisodeLengthError, NonFiniteDataError, DatasetSpaceMismatchError: whichever fails first.
    """
    reference = None if env is None else (env.observation_space, env.action_space)
    data = load_dataset(dataset, reference_spaces=reference)
    read_episodes(data)
    if env is not None:
        with explain_cached_import(data):
            check_spaces(data.observation_space, env.observation_space, "observation")
            check_spaces(data.action_space, env.action_space, "action")


def flatten_observations(observations: ArrayTree | tuple, space: spaces.Space) -> np.ndarray:
    """Flatten a batch of observations to ``(N, flatdim)`` float32, as ``gymnasium.spaces.flatten`` does.

    Vectorised over the batch: ``Box`` / ``MultiBinary`` are reshaped, ``Discrete`` and
    ``MultiDiscrete`` become one-hot, ``Dict`` concatenates its keys in the space's key order and
    ``Tuple`` its parts in order.

    Args:
        observations: ``(N, *shape)`` array, or a dict / tuple of them matching ``space``.
        space: the observation space (e.g. ``dataset.observation_space``).
    """
    if isinstance(space, spaces.Dict):
        assert isinstance(observations, dict), f"Dict space {space} needs a dict of arrays"
        parts = [flatten_observations(observations[key], sub) for key, sub in space.spaces.items()]
        return np.concatenate(parts, axis=1)
    if isinstance(space, spaces.Tuple):
        parts = [flatten_observations(obs, sub) for obs, sub in zip(observations, space.spaces, strict=True)]
        return np.concatenate(parts, axis=1)
    array = np.asarray(observations)
    if isinstance(space, spaces.Discrete):
        return np.eye(int(space.n), dtype=np.float32)[array - space.start]
    if isinstance(space, spaces.MultiDiscrete):
        flat = (array - space.start).reshape(len(array), -1)
        eyes = [np.eye(int(n), dtype=np.float32) for n in space.nvec.ravel()]
        return np.concatenate([eye[flat[:, i]] for i, eye in enumerate(eyes)], axis=1)
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return array.reshape(len(array), -1).astype(np.float32, copy=False)
    raise TypeError(f"cannot flatten observations of space {space}")
