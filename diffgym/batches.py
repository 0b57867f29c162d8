"""A dataset's transitions on the training device, sampled as SB3 replay batches."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch import Tensor

from diffgym.data import Transitions, flatten_observations
from diffgym.policies import AgentPolicy


class OfflineBatches:
    """A dataset's transitions as tensors on the training device, sampled uniformly by index.

    Observations are flattened (Dict keys in the space's order); actions are scaled to [-1, 1].
    """

    def __init__(self, transitions: Transitions, policy: AgentPolicy, device: torch.device) -> None:
        space = policy.observation_space

        def tensor(array: np.ndarray) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

        self.observations = tensor(flatten_observations(transitions.observations, space))
        self.next_observations = tensor(flatten_observations(transitions.next_observations, space))
        self.actions = tensor(policy.scale_action(transitions.actions.reshape(len(transitions.actions), -1)))
        self.rewards = tensor(transitions.rewards).unsqueeze(1)
        self.dones = tensor(transitions.terminals).unsqueeze(1)  # timeouts are not terminal: bootstrap
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
