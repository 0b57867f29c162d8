"""A toy agent that lives outside diffgym: what a contributor writes to add one (tests/test_registry.py).

As a pytest plugin (``-p toy_agent`` with this folder on ``PYTHONPATH``) it registers itself, so
a conformance run finds it through the registry like any shipped agent.
"""

from typing import Any, ClassVar

import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples, Schedule
from torch import Tensor, nn

from diffgym import registry
from diffgym.algorithm import OfflineAlgorithm
from diffgym.networks import make_adam
from diffgym.policies import CandidateSelectionPolicy
from diffgym.samplers import Randomness


class ToyPolicy(CandidateSelectionPolicy):
    """A tanh MLP acting deterministically: (B, obs_dim) -> (B, action_dim)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "num_candidates": 1})

    def _build(self, lr_schedule: Schedule, hidden_dim: int = 16) -> None:
        self.actor = nn.Sequential(
            nn.Linear(self.obs_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, self.action_dim), nn.Tanh()
        )
        self.optimizer = make_adam(self.actor.parameters(), lr=lr_schedule(1))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.optimizer}

    def sample_actions(self, features: Tensor, generator: Randomness) -> Tensor:
        return self.actor(features)

    def score_actions(self, features: Tensor, actions: Tensor) -> Tensor:
        return torch.zeros(features.shape[0], device=features.device)


class ToyAgent(OfflineAlgorithm):
    """Behaviour cloning by mean squared error, one gradient step per batch."""

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": ToyPolicy, "MultiInputPolicy": ToyPolicy}
    policy: ToyPolicy

    def train_step(self, batch: ReplayBufferSamples) -> dict[str, Tensor]:
        loss = ((self.policy.actor(batch.observations) - batch.actions) ** 2).mean()
        self.policy.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.policy.optimizer.step()
        return {"bc_loss": loss.detach()}


SPEC = registry.AgentSpec("toy", ToyAgent, tasks=("offline", "online"))


def pytest_configure(config: Any) -> None:
    """Register the toy agent before the conformance test collects the registry."""
    registry.register(SPEC, replace=True)
