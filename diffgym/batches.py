"""A dataset's transitions for training, sampled as SB3 replay batches: on the training device
(:class:`OfflineBatches`) or memory-mapped from a cache, one batch at a time (:class:`MappedBatches`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch import Tensor

from diffgym.data import EpisodeArrays, Transitions, flatten_observations
from diffgym.data.mapped import advise_access
from diffgym.data.tree import tree_map
from diffgym.policies import AgentPolicy

#: ``(observations, next_observations, rewards, dones)`` of consecutive transitions; observations may
#: hold one row more, the next chunk's first (see :func:`~diffgym.rl.iql_reward_scale_chunked`).
Chunk = tuple[Tensor, Tensor, Tensor, Tensor]
#: Bytes of flat observations per chunk when a memory-mapped dataset is read in full.
CHUNK_BYTES = 16 * 2**20  # 64 MiB took about 2x the time and 2.6x the memory at 10M rows (probes.json)


def _tensor(array: np.ndarray, device: torch.device | str) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)


class OfflineBatches:
    """A dataset's transitions as tensors on the training device, sampled uniformly by index.

    Observations are flattened (Dict keys in the space's order); actions are scaled to [-1, 1].
    """

    def __init__(self, transitions: Transitions, policy: AgentPolicy, device: torch.device) -> None:
        space = policy.observation_space
        self.observations = _tensor(flatten_observations(transitions.observations, space), device)
        self.next_observations = _tensor(flatten_observations(transitions.next_observations, space), device)
        actions = transitions.actions.reshape(len(transitions.actions), -1)
        self.actions = _tensor(policy.scale_action(actions), device)
        self.rewards = _tensor(transitions.rewards, device).unsqueeze(1)
        self.dones = _tensor(transitions.terminals, device).unsqueeze(
            1
        )  # timeouts are not terminal: bootstrap
        self.size = len(self.rewards)

    def sample(self, batch_size: int, generator: torch.Generator) -> ReplayBufferSamples:
        index = torch.randint(0, self.size, (batch_size,), generator=generator, device=generator.device)
        index = index.to(self.rewards.device)
        return ReplayBufferSamples(
            self.observations[index],
            self.actions[index],
            self.next_observations[index],
            self.dones[index],
            self.rewards[index],
        )

    def chunks(self) -> Iterator[Chunk]:
        """The whole dataset as one chunk."""
        yield self.observations, self.next_observations, self.rewards, self.dones


class MappedBatches:
    """A dataset's memory-mapped episodes (:func:`~diffgym.data.map_episodes`), sampled uniformly by
    transition index like :class:`OfflineBatches` (same generator draws, same rows): only each batch
    is read, flattened, scaled and copied to the device.
    """

    def __init__(self, arrays: EpisodeArrays, policy: AgentPolicy, device: torch.device) -> None:
        self.arrays, self.policy, self.device = arrays, policy, device
        self.step_offsets = arrays.step_offsets
        self.size = int(self.step_offsets[-1])
        advise_access(arrays, "random")  # batches read rows by index

    def sample(self, batch_size: int, generator: torch.Generator) -> ReplayBufferSamples:
        index = torch.randint(0, self.size, (batch_size,), generator=generator, device=generator.device)
        return self.take(index.cpu().numpy())

    def take(self, steps: np.ndarray) -> ReplayBufferSamples:
        """The transitions ``steps`` (read in sorted order, for locality, returned in the given order)."""
        order = np.argsort(steps, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        samples = self._read(steps[order])
        return ReplayBufferSamples(*(_tensor(array[inverse], self.device) for array in samples))

    def _read(self, steps: np.ndarray) -> tuple[np.ndarray, ...]:
        """(observations, actions, next_observations, dones (B, 1), rewards (B, 1)) of ``steps``."""
        arrays, space = self.arrays, self.policy.observation_space
        rows = steps + np.searchsorted(self.step_offsets, steps, side="right") - 1
        observations = flatten_observations(tree_map(lambda a: a[rows], arrays.observations), space)
        next_observations = flatten_observations(tree_map(lambda a: a[rows + 1], arrays.observations), space)
        actions = self.policy.scale_action(np.asarray(arrays.actions[steps]).reshape(len(steps), -1))
        dones = arrays.terminations[steps][:, None]  # timeouts are not terminal: bootstrap
        return observations, actions, next_observations, dones, arrays.rewards[steps][:, None]

    def chunks(self, chunk_rows: int | None = None) -> Iterator[Chunk]:
        """Consecutive transitions on the CPU, a chunk at a time (about :data:`CHUNK_BYTES` of
        observations each); each chunk's observations hold the next chunk's first one too."""
        if chunk_rows is None:
            width = flatten_observations(
                tree_map(lambda a: a[:1], self.arrays.observations), self.policy.observation_space
            )
            chunk_rows = max(1, CHUNK_BYTES // (4 * width.shape[1]))
        advise_access(self.arrays, "sequential")
        try:
            yield from self._chunks(chunk_rows)
        finally:
            advise_access(self.arrays, "random")

    def _chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        for start in range(0, self.size, chunk_rows):
            stop = min(start + chunk_rows, self.size)
            observations = self._observation_block(start, min(stop + 1, self.size), 0)
            next_observations = self._observation_block(start, stop, 1)
            rewards = np.array(self.arrays.rewards[start:stop], dtype=np.float32)[:, None]
            dones = np.array(self.arrays.terminations[start:stop], dtype=np.float32)[:, None]
            yield tuple(torch.from_numpy(a) for a in (observations, next_observations, rewards, dones))  # type: ignore[misc]
            del observations, next_observations, rewards, dones  # not alive while the next chunk is read

    def _observation_block(self, first: int, end: int, shift: int) -> np.ndarray:
        """Flat float32 observations (``shift=0``) or next observations (``shift=1``) of the steps
        ``first:end``, read as one slice of the memmaps less the rows between episodes: no per-row
        index array, one copy of the rows."""
        offsets = self.step_offsets
        first_episode = int(np.searchsorted(offsets, first, side="right")) - 1
        last_episode = int(np.searchsorted(offsets, end - 1, side="right")) - 1
        low = first + first_episode + shift
        high = end - 1 + last_episode + shift + 1
        # the last observation of each episode but the last (shift 0), the first of each but the first (1)
        episodes = np.arange(first_episode, last_episode)
        skipped = offsets[episodes + 1] + episodes + shift - low
        block = flatten_observations(
            tree_map(lambda a: a[low:high], self.arrays.observations), self.policy.observation_space
        )
        block = np.asarray(block)
        return np.delete(block, skipped, axis=0) if len(skipped) else np.array(block, dtype=np.float32)
