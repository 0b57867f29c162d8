"""Benchmark: time and memory of the data layer on a hopper-sized dataset.

``run()`` writes a D4RL-layout file of ``n_transitions`` random hopper-like rows (11 observation and
3 action dimensions, episodes of 1000 steps), imports it into a temporary Minari store, then measures
each operation in a fresh Python process: wall time and peak resident memory above the process's
own after-import baseline (resident memory polled every millisecond).

Measured, each against references from the same run:

- ``flat_read``: reading the flat D4RL file with h5py (contiguous arrays: the floor for any reader);
- ``load_transitions``: :func:`diffgym.data.load_transitions` through Minari's episode API;
- ``direct_h5py``: the same arrays read straight from Minari's ``main_data.hdf5`` with h5py, one
  episode group after another, without Minari's per-episode objects;
- ``segment_dataset``: building :class:`diffgym.data.SegmentDataset` (``horizon``, padding on,
  ``construct_seconds``) and drawing batches of ``batch_size`` segments (``sample_batch_ms``, mean of
  100); ``seconds`` covers both;
- ``map_episodes``: the memory-mapped path (``dataset_in_memory=False``): streaming the episodes into
  the ``.npy`` cache (:func:`diffgym.data.map_episodes`), its first use;
- ``mapped_training_data``: what an agent does with that cache afterwards: open it, fit the
  observation statistics and IQL's reward scale in chunks, and draw batches of ``batch_size``
  transitions by index (``sample_batch_ms``, mean of 100);
- ``mapped_agent``: all of it inside an agent: IQL built on ``Hopper-v5`` with
  ``dataset_in_memory=False`` (IQL's reward scale and the statistics from the chunks), then
  :data:`AGENT_STEPS` gradient steps (``steps_per_second``).

Besides the peak resident memory, each operation reports ``peak_anon_mb``: the peak of anonymous
memory (``RssAnon``), which is what must fit in RAM; resident pages of memory-mapped files count in
the former only, and the kernel drops them under memory pressure. :func:`run_mapped` measures the
memory-mapped path alone, for sizes whose in-memory arrays would not fit.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]

_OBS_DIM, _ACT_DIM, _EPISODE_LENGTH = 11, 3, 1000
_DATASET_ID = "bench/hopper-like/random-v0"
_FILE_NAME = "hopper-like.hdf5"


def run(
    n_transitions: int = 1_000_000,
    horizon: int = 32,
    batch_size: int = 256,
    seed: int = 0,
    scratch: Path | None = None,
) -> dict[str, Any]:
    """Build the dataset once in a temporary Minari store and measure every operation.

    Args:
        scratch: where the temporary folder goes (a benchmark session's scratch folder, removed with
            it even when the session is killed); default: the system's temporary folder.

    Returns:
        ``{"setup": {...}, "<operation>": {"seconds": ..., "peak_rss_mb": ..., ...}, ...}``.
    """
    with tempfile.TemporaryDirectory(prefix="data-layer-", dir=scratch) as root:
        env = {**os.environ, "MINARI_DATASETS_PATH": str(Path(root) / "minari")}
        setup = _child(env, "build", root, n_transitions, seed)
        results: dict[str, Any] = {"setup": _setup(n_transitions, horizon, batch_size, setup)}
        for task in ("flat_read", "load_transitions", "direct_h5py", "segment_dataset", *_MAPPED_TASKS):
            results[task] = _child(env, task, root, horizon, batch_size)
    return results


def run_mapped(
    n_transitions: int = 10_000_000, batch_size: int = 256, seed: int = 0, scratch: Path | None = None
) -> dict[str, Any]:
    """:func:`run` for the memory-mapped path only (``map_episodes``, ``mapped_training_data``,
    ``mapped_agent``)."""
    with tempfile.TemporaryDirectory(prefix="data-layer-", dir=scratch) as root:
        env = {**os.environ, "MINARI_DATASETS_PATH": str(Path(root) / "minari")}
        build = _child(env, "build", root, n_transitions, seed)
        results: dict[str, Any] = {"setup": _setup(n_transitions, 0, batch_size, build)}
        for task in _MAPPED_TASKS:
            results[task] = _child(env, task, root, 0, batch_size)
    return results


def arrays_mb(n_transitions: int) -> float:
    """Size of the transitions' own arrays: observations, next observations, actions, rewards (float32),
    terminals and timeouts (bool)."""
    return round(n_transitions * (4 * (2 * _OBS_DIM + _ACT_DIM + 1) + 2) / 2**20, 1)


_MAPPED_TASKS = ("map_episodes", "mapped_training_data", "mapped_agent")
#: gradient steps of ``mapped_agent``
AGENT_STEPS = 200
#: modules imported before a task's baseline is taken, by task
_BASELINE_IMPORTS = {"mapped_agent": ("diffgym.agents.baselines.iql", "gymnasium.envs.mujoco.hopper_v5")}


def _setup(n_transitions: int, horizon: int, batch_size: int, build: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_transitions": n_transitions,
        "arrays_mb": arrays_mb(n_transitions),
        "episode_length": _EPISODE_LENGTH,
        "obs_dim": _OBS_DIM,
        "act_dim": _ACT_DIM,
        "horizon": horizon,
        "batch_size": batch_size,
        "cpu_count": os.cpu_count(),
        **{f"build_{key}": value for key, value in build.items()},
    }


def _child(env: dict[str, str], task: str, *args: Any) -> dict[str, Any]:
    """Run ``_task_<task>(*args)`` in a fresh interpreter and return its JSON result."""
    code = (
        "import json, sys; from diffgym.zoo.benchmarks import data_loading as b; "
        "print(json.dumps(b._measure(sys.argv[1], json.loads(sys.argv[2]))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, task, json.dumps(args)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    """Current resident memory of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _anon_mb() -> float:
    """Current resident anonymous memory of this process (``RssAnon`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 2**10
    return 0.0


class _PeakRSS(threading.Thread):
    """Polls the resident memory every millisecond while a task runs and keeps the maximum.

    ``ru_maxrss`` cannot serve: it is the process's all-time peak, which importing torch may
    already have set above anything the task reaches.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.peak_anon = _rss_mb(), _anon_mb()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.001):
            self.peak, self.peak_anon = max(self.peak, _rss_mb()), max(self.peak_anon, _anon_mb())

    def stop(self) -> tuple[float, float]:
        """Peak resident and peak anonymous memory (MB)."""
        self._done.set()
        self.join()
        return max(self.peak, _rss_mb()), max(self.peak_anon, _anon_mb())


def _measure(task: str, args: list[Any]) -> dict[str, Any]:
    """Import everything first, then time ``task`` and its peak memory above that baseline."""
    import diffgym.batches  # noqa: F401  (diffgym.data and torch in the baseline, as in any user process)

    for module in _BASELINE_IMPORTS.get(task, ()):  # what a user process has imported before training
        importlib.import_module(module)
    function: Callable[..., dict[str, Any]] = globals()[f"_task_{task}"]
    baseline, baseline_anon = _rss_mb(), _anon_mb()
    monitor = _PeakRSS()
    monitor.start()
    start = time.perf_counter()
    extra = function(*args)
    seconds = time.perf_counter() - start
    peak, peak_anon = monitor.stop()
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak - baseline, 1),
        "peak_anon_mb": round(peak_anon - baseline_anon, 1),
        **extra,
    }


def _task_build(root: str, n_transitions: int, seed: int) -> dict[str, Any]:
    """Write the D4RL-layout file and import it; the measured time is the import's."""
    import h5py

    rng = np.random.default_rng(seed)
    n_episodes = -(-n_transitions // _EPISODE_LENGTH)
    states = rng.normal(size=(n_transitions + n_episodes, _OBS_DIM)).astype(np.float32)
    rows = np.arange(n_transitions) + np.arange(n_transitions) // _EPISODE_LENGTH
    timeouts = (np.arange(n_transitions) % _EPISODE_LENGTH == _EPISODE_LENGTH - 1) | (
        np.arange(n_transitions) == n_transitions - 1
    )
    path = Path(root) / _FILE_NAME
    with h5py.File(path, "w") as file:
        file["observations"] = states[rows]
        file["next_observations"] = states[rows + 1]
        file["actions"] = rng.uniform(-1, 1, size=(n_transitions, _ACT_DIM)).astype(np.float32)
        file["rewards"] = rng.normal(size=n_transitions).astype(np.float32)
        file["terminals"] = np.zeros(n_transitions, dtype=bool)
        file["timeouts"] = timeouts
    del states
    from diffgym.data import import_d4rl

    start = time.perf_counter()
    dataset = import_d4rl(path, dataset_id=_DATASET_ID, env_id="Hopper-v5")  # its spaces: an agent can train
    return {
        "import_d4rl_seconds": round(time.perf_counter() - start, 3),
        "d4rl_file_mb": round(path.stat().st_size / 2**20, 1),
        "minari_file_mb": round(
            dataset.storage.data_path.joinpath("main_data.hdf5").stat().st_size / 2**20, 1
        ),
        "n_episodes": dataset.total_episodes,
    }


def _task_flat_read(root: str, *_: Any) -> dict[str, Any]:
    import h5py

    with h5py.File(Path(root) / _FILE_NAME, "r") as file:
        arrays = {key: file[key][()] for key in file}
    return {"result_mb": round(sum(a.nbytes for a in arrays.values()) / 2**20, 1)}


def _task_load_transitions(*_: Any) -> dict[str, Any]:
    from diffgym.data import load_transitions

    transitions = load_transitions(_DATASET_ID)
    return {"result_mb": round(sum(np.asarray(a).nbytes for a in transitions) / 2**20, 1)}


def _task_direct_h5py(*_: Any) -> dict[str, Any]:
    """Minari's storage read with h5py alone into preallocated arrays, then the transition gather."""
    import h5py
    import minari

    dataset = minari.load_dataset(_DATASET_ID)
    n, n_episodes = dataset.total_steps, dataset.total_episodes
    observations = np.empty((n + n_episodes, _OBS_DIM), np.float32)
    actions, rewards = np.empty((n, _ACT_DIM), np.float32), np.empty(n, np.float32)
    terminals, timeouts = np.empty(n, bool), np.empty(n, bool)
    lengths, step = np.empty(n_episodes, np.int64), 0
    with h5py.File(dataset.storage.data_path / "main_data.hdf5", "r") as file:
        for index in range(n_episodes):
            group = file[f"episode_{index}"]
            length = group["rewards"].shape[0]
            group["observations"].read_direct(
                observations, dest_sel=np.s_[step + index : step + index + length + 1]
            )
            group["actions"].read_direct(actions, dest_sel=np.s_[step : step + length])
            rewards[step : step + length] = group["rewards"][()]
            terminals[step : step + length] = group["terminations"][()]
            timeouts[step : step + length] = group["truncations"][()]
            lengths[index], step = length, step + length
    rows = np.arange(n) + np.repeat(np.arange(n_episodes), lengths)
    result = (observations[rows], actions, rewards, observations[rows + 1], terminals, timeouts)
    return {"result_mb": round(sum(a.nbytes for a in result) / 2**20, 1)}


def _task_segment_dataset(root: str, horizon: int, batch_size: int) -> dict[str, Any]:
    from diffgym.data import SegmentDataset

    start = time.perf_counter()
    segments = SegmentDataset(_DATASET_ID, horizon=horizon)
    built = time.perf_counter()
    rng = np.random.default_rng(0)
    n_batches = 100
    for _ in range(n_batches):
        segments.sample(batch_size, rng)
    per_batch = (time.perf_counter() - built) / n_batches
    return {
        "construct_seconds": round(built - start, 3),
        "n_segments": len(segments),
        "sample_batch_ms": round(per_batch * 1000, 3),
    }


def _task_map_episodes(*_: Any) -> dict[str, Any]:
    from diffgym.data import map_episodes
    from diffgym.data.mapped import cache_folder

    map_episodes(_DATASET_ID)
    folder = cache_folder(_load(_DATASET_ID))
    return {"cache_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)}


def _task_mapped_training_data(root: str, horizon: int, batch_size: int) -> dict[str, Any]:
    """An agent's set-up on the cache (statistics, IQL scale), then batches drawn by index."""
    import gymnasium as gym
    import torch

    from diffgym.batches import MappedBatches
    from diffgym.data import map_episodes
    from diffgym.normalizers import GaussianNormalizer, fit_in_chunks
    from diffgym.rl import iql_reward_scale_chunked

    class _Policy:  # what MappedBatches uses of a policy: the spaces and the action scaling
        observation_space = gym.spaces.Box(-np.inf, np.inf, (_OBS_DIM,), np.float32)

        @staticmethod
        def scale_action(action: np.ndarray) -> np.ndarray:
            return action

    batches = MappedBatches(map_episodes(_DATASET_ID), _Policy(), torch.device("cpu"))  # type: ignore[arg-type]
    fit_in_chunks(GaussianNormalizer, (obs[: len(r)] for obs, _, r, _ in batches.chunks()))
    iql_reward_scale_chunked(batches.chunks())
    prepared = time.perf_counter()
    generator, n_batches = torch.Generator().manual_seed(0), 100
    for _ in range(n_batches):
        batches.sample(batch_size, generator)
    per_batch = (time.perf_counter() - prepared) / n_batches
    return {"sample_batch_ms": round(per_batch * 1000, 3)}


def _task_mapped_agent(root: str, horizon: int, batch_size: int) -> dict[str, Any]:
    """IQL on the cache (``dataset_in_memory=False``): built, then :data:`AGENT_STEPS` gradient steps."""
    from diffgym import IQL

    model = IQL(
        "MlpPolicy", "Hopper-v5", dataset=_DATASET_ID, dataset_in_memory=False, batch_size=batch_size, seed=0
    )
    started = time.perf_counter()
    model.learn(AGENT_STEPS)
    return {"steps_per_second": round(AGENT_STEPS / (time.perf_counter() - started), 1)}


def _load(dataset_id: str) -> Any:
    import minari

    return minari.load_dataset(dataset_id)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
