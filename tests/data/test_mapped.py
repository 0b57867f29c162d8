"""Memory-mapped episodes (``map_episodes``): same arrays as ``read_episodes``, cached, written atomically."""

import os
import tracemalloc

import numpy as np
import pytest

from diffgym.data import NonFiniteDataError, map_episodes, read_episodes
from diffgym.data import loading as loading_module
from diffgym.data import mapped as mapped_module
from diffgym.data.tree import iter_leaves


def _assert_same(mapped, read):
    for field in ("rewards", "terminations", "truncations", "lengths", "episode_ids"):
        np.testing.assert_array_equal(getattr(mapped, field), getattr(read, field), err_msg=field)
    for tree in ("observations", "actions"):
        for (name, a), (_, b) in zip(
            iter_leaves(getattr(mapped, tree), tree), iter_leaves(getattr(read, tree), tree), strict=True
        ):
            assert a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("dict_obs", [False, True])
def test_mapped_episodes_equal_read_episodes(make_dataset, dict_obs):
    dataset = make_dataset([5, 3, 7], dict_obs=dict_obs)
    mapped = map_episodes(dataset)
    assert isinstance(mapped.rewards, np.memmap) and not mapped.rewards.flags.writeable
    _assert_same(mapped, read_episodes(dataset))


def test_the_cache_is_written_once_then_reused(make_dataset, monkeypatch):
    dataset = make_dataset([4, 6])
    first = map_episodes(dataset)
    folder = mapped_module.cache_folder(dataset)
    assert folder.is_dir() and [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary left
    monkeypatch.setattr(mapped_module, "read_episodes_into", _fail)  # a second call reads no episode
    _assert_same(map_episodes(dataset), first)


def test_an_interrupted_write_leaves_no_cache(make_dataset, monkeypatch):
    dataset = make_dataset([4, 6])
    calls = []

    def fill_then_fail(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(*args)

    original = loading_module._fill
    monkeypatch.setattr(loading_module, "_fill", fill_then_fail)
    with pytest.raises(KeyboardInterrupt):
        map_episodes(dataset)
    folder = mapped_module.cache_folder(dataset)
    assert not folder.parent.exists() or list(folder.parent.iterdir()) == []
    monkeypatch.setattr(loading_module, "_fill", original)
    _assert_same(map_episodes(dataset), read_episodes(dataset))


def test_a_broken_dataset_is_refused_and_not_cached(make_dataset):
    def poison(index, arrays):
        if index == 1:
            arrays["rewards"][2] = np.nan

    dataset = make_dataset([4, 6], edit=poison)
    with pytest.raises(NonFiniteDataError, match="rewards"):
        map_episodes(dataset)
    assert not mapped_module.cache_folder(dataset).exists()


def test_a_changed_dataset_gets_a_fresh_cache(make_dataset):
    dataset = make_dataset([4, 6])
    before = mapped_module.cache_folder(dataset)
    data_file = next(p for p in dataset.storage.data_path.iterdir() if p.suffix == ".hdf5")
    stat = data_file.stat()
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert mapped_module.cache_folder(dataset) != before


def test_building_the_cache_never_holds_the_dataset_in_memory(make_dataset, monkeypatch, tmp_path):
    """Python-side allocations (numpy's are traced) stay far below the arrays' own size."""
    dataset = make_dataset([2000] * 40)  # 80k steps: arrays of about 2.9 MB
    size = _nbytes(map_episodes(dataset, cache_root=tmp_path / "elsewhere"))
    monkeypatch.setattr(loading_module, "_allocate", _fail)  # the in-memory buffers are never made
    tracemalloc.start()
    map_episodes(dataset)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < size / 4, (peak, size)


def _nbytes(arrays):
    trees = {"observations": arrays.observations, "actions": arrays.actions}
    steps = [arrays.rewards, arrays.terminations, arrays.truncations]
    return sum(a.nbytes for _, a in iter_leaves(trees, "")) + sum(a.nbytes for a in steps)


def _fail(*args, **kwargs):
    raise AssertionError("not expected to be called")


def test_episodes_are_read_with_the_file_opened_again_for_each_block(make_dataset, monkeypatch):
    dataset = make_dataset([5, 3, 7, 2, 4])
    openings = []
    read = dataset.storage.get_episodes

    def counted(indices):
        openings.append(list(indices))
        return read(indices)

    monkeypatch.setattr(loading_module, "EPISODES_PER_OPEN", 2)
    monkeypatch.setattr(dataset.storage, "get_episodes", counted)
    episodes = list(loading_module.iterate_episodes(dataset))
    assert openings == [[0, 1], [2, 3], [4]]  # HDF5's per-file caches grow with each episode read
    monkeypatch.undo()
    for blocked, whole in zip(episodes, dataset.iterate_episodes(), strict=True):
        assert blocked.id == whole.id
        np.testing.assert_array_equal(blocked.observations, whole.observations)
        np.testing.assert_array_equal(blocked.rewards, whole.rewards)
    _assert_same(map_episodes(dataset), read_episodes(dataset))


def test_batches_read_rows_by_index_without_read_ahead_and_chunks_with_it(make_dataset, monkeypatch):
    """A dataset larger than the page cache: with read-ahead around each sampled row, 50 IQL steps on
    30M rows in a 700 MB cgroup read 111.6 GiB; without it 200 steps read 0.48 GiB
    (zoo/results/larger-than-memory/memory_limit.json)."""
    import gymnasium as gym
    import torch

    from diffgym import batches as batches_module
    from diffgym.batches import MappedBatches

    advice = []
    monkeypatch.setattr(batches_module, "advise_access", lambda arrays, pattern: advice.append(pattern))

    class Policy:
        observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)

        @staticmethod
        def scale_action(action):
            return action

    batches = MappedBatches(map_episodes(make_dataset([5, 3, 7])), Policy(), torch.device("cpu"))
    assert advice == ["random"]
    chunks = list(batches.chunks(chunk_rows=4))
    assert len(chunks) == 4 and advice == ["random", "sequential", "random"]
    batches.sample(4, torch.Generator().manual_seed(0))
    assert advice == ["random", "sequential", "random"]


def test_access_advice_applies_to_every_mapped_array_and_names_bad_patterns(make_dataset, monkeypatch):
    import mmap

    dataset = make_dataset([5, 3])
    arrays = map_episodes(dataset)
    advised = []

    class Mapping:  # stands in for each array's mmap, whose methods cannot be patched
        def __init__(self, name):
            self.name = name

        def madvise(self, advice):
            advised.append((self.name, advice))

    leaves = mapped_module._leaves(arrays)
    assert leaves and all(
        getattr(leaf, "_mmap", None) is not None for leaf in leaves
    )  # real mappings to advise
    monkeypatch.setattr(mapped_module, "_leaves", lambda _: [_Leaf(Mapping(i)) for i in range(len(leaves))])
    for pattern, advice in (("random", mmap.MADV_RANDOM), ("sequential", mmap.MADV_SEQUENTIAL)):
        advised.clear()
        mapped_module.advise_access(arrays, pattern)
        assert advised == [(i, advice) for i in range(len(leaves))]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="pattern must be 'random' or 'sequential', not 'backwards'"):
        mapped_module.advise_access(arrays, "backwards")
    _assert_same(arrays, read_episodes(dataset))


class _Leaf:
    def __init__(self, mapping):
        self._mmap = mapping
