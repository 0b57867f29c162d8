"""A dataset's episodes as memory-mapped ``.npy`` files, for datasets larger than memory.

:func:`map_episodes` streams the episodes once, one at a time, into the flat files of a cache folder
next to the Minari dataset (never the whole dataset in memory), then opens them with
``np.load(mmap_mode="r")``: the operating system pages rows in as they are read and drops them
under memory pressure. The layout is :class:`~diffgym.data.EpisodeArrays`' (each episode's ``T + 1``
observations once, not observations and next observations apart).

The cache folder is ``<dataset>/diffgym-cache/episodes-<key>``, ``key`` hashing the dataset id, the
name, size and modification time of each file of its ``data/`` folder, and the cache layout's
version: a rewritten dataset gets a fresh cache. It is written under a temporary name and renamed
when complete, so an interrupted write never leaves a cache that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import minari
import numpy as np

from diffgym.data.loading import DatasetLike, EpisodeArrays, load_dataset, read_episodes_into
from diffgym.data.tree import ArrayTree, storage_dtype, tree_map

__all__ = ["advise_access", "cache_folder", "map_episodes"]

#: Bumped whenever the files' layout changes, so that old caches are not read.
_LAYOUT_VERSION = 1
_STEP_FIELDS = ("rewards", "terminations", "truncations")


def map_episodes(
    dataset: DatasetLike, check_finite_values: bool = True, cache_root: str | os.PathLike | None = None
) -> EpisodeArrays:
    """Every episode of a dataset as read-only memory-mapped arrays (built once, then reused).

    Same arrays as :func:`~diffgym.data.read_episodes` (without infos), in ``np.memmap`` s.

    Args:
        dataset: anything :func:`~diffgym.data.load_dataset` accepts.
        check_finite_values: check each episode for NaN / inf while it is written (a cache is only
            written for a dataset that passes).
        cache_root: where the cache folders go; default ``diffgym-cache`` beside the dataset's
            ``data/`` folder.

    Raises:
        EpisodeLengthError, NonFiniteDataError: the dataset is broken (no cache is left behind).
    """
    data = load_dataset(dataset)
    folder = cache_folder(data, cache_root)
    if not folder.is_dir():
        _write_cache(data, folder, check_finite_values)
    return _open_cache(folder)


def cache_folder(data: minari.MinariDataset, cache_root: str | os.PathLike | None = None) -> Path:
    """The cache folder of a dataset: see the module's doc."""
    data_path = Path(data.storage.data_path)
    root = Path(cache_root) if cache_root is not None else data_path.parent / "diffgym-cache"
    digest = hashlib.sha256(f"{_LAYOUT_VERSION}\n{data.id}\n".encode())
    for file in sorted(path for path in data_path.rglob("*") if path.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(data_path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return root / f"episodes-{digest.hexdigest()[:20]}"


def _write_cache(data: minari.MinariDataset, folder: Path, check_finite_values: bool) -> None:
    """Stream the episodes into a temporary folder, then rename it to ``folder`` (atomically)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    temporary.mkdir()
    try:
        layout: dict[str, Any] = {}

        def allocate(
            episode: minari.EpisodeData, infos: dict, n_steps: int, n_episodes: int
        ) -> EpisodeArrays:
            return _allocate_files(temporary, layout, episode, n_steps, n_episodes)

        arrays = read_episodes_into(data, allocate, check_each_episode=check_finite_values)
        for leaf in _leaves(arrays):
            leaf.flush()
        np.save(temporary / "lengths.npy", arrays.lengths)
        np.save(temporary / "episode_ids.npy", arrays.episode_ids)
        (temporary / "layout.json").write_text(json.dumps(layout))
        del arrays
        _publish(temporary, folder)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def _publish(temporary: Path, folder: Path) -> None:
    """Rename the finished cache into place; another process that finished first wins."""
    try:
        temporary.rename(folder)
    except OSError:
        if not folder.is_dir():
            raise


def _allocate_files(
    folder: Path, layout: dict[str, Any], episode: minari.EpisodeData, n_steps: int, n_episodes: int
) -> EpisodeArrays:
    """Empty ``.npy`` files shaped after the first episode, opened for writing; ``layout`` gets their
    names (observations and actions as trees of file names)."""
    layout["observations"] = _names(episode.observations, "observations")
    layout["actions"] = _names(episode.actions, "actions")

    def create(example: np.ndarray, name: str, rows: int) -> np.ndarray:
        example = np.asarray(example)
        shape = (rows, *example.shape[1:])
        return np.lib.format.open_memmap(folder / name, "w+", storage_dtype(example.dtype), shape)

    return EpisodeArrays(
        observations=tree_map(lambda a, n: create(a, n, n_steps + n_episodes), episode.observations, layout["observations"]),
        actions=tree_map(lambda a, n: create(a, n, n_steps), episode.actions, layout["actions"]),
        rewards=create(np.empty(0, np.float32), "rewards.npy", n_steps),
        terminations=create(np.empty(0, bool), "terminations.npy", n_steps),
        truncations=create(np.empty(0, bool), "truncations.npy", n_steps),
        infos={},
        lengths=np.empty(0, dtype=np.int64),
        episode_ids=np.empty(0, dtype=np.int64),
    )  # fmt: skip


def _names(tree: Any, prefix: str) -> Any:
    """A file name for each leaf of ``tree`` (dict keys by position, so any key is a safe name)."""
    if isinstance(tree, dict):
        return {key: _names(value, f"{prefix}-{index}") for index, (key, value) in enumerate(tree.items())}
    return f"{prefix}.npy"


def advise_access(arrays: EpisodeArrays, pattern: str) -> None:
    """Tell the kernel how the memory-mapped arrays will be read: ``"random"`` (rows by index: no
    read-ahead, which for a dataset larger than the page cache reads tens of times the rows asked
    for) or ``"sequential"`` (in order: read ahead). A no-op where ``madvise`` is not available."""
    advice = {
        "random": getattr(mmap, "MADV_RANDOM", None),
        "sequential": getattr(mmap, "MADV_SEQUENTIAL", None),
    }
    if pattern not in advice:
        raise ValueError(f"pattern must be 'random' or 'sequential', not {pattern!r}")
    for leaf in _leaves(arrays):
        mapping = getattr(leaf, "_mmap", None)
        if mapping is not None and advice[pattern] is not None and hasattr(mapping, "madvise"):
            mapping.madvise(advice[pattern])


def _leaves(arrays: EpisodeArrays) -> list[np.memmap]:
    """The memory-mapped arrays among ``arrays``' fields."""
    leaves: list[np.memmap] = []
    tree_map(leaves.append, arrays.observations)
    tree_map(leaves.append, arrays.actions)
    leaves += [getattr(arrays, name) for name in _STEP_FIELDS]
    return leaves


def _open_cache(folder: Path) -> EpisodeArrays:
    """The cache's arrays, memory-mapped read-only."""
    layout = json.loads((folder / "layout.json").read_text())

    def load(name: str) -> np.ndarray:
        return np.load(folder / name, mmap_mode="r")

    observations: ArrayTree = tree_map(load, layout["observations"])
    return EpisodeArrays(
        observations=observations,
        actions=tree_map(load, layout["actions"]),
        rewards=load("rewards.npy"),
        terminations=load("terminations.npy"),
        truncations=load("truncations.npy"),
        infos={},
        lengths=np.load(folder / "lengths.npy"),
        episode_ids=np.load(folder / "episode_ids.npy"),
    )
