"""Behaviour cloning with an observation history: the plain-regression baseline of the imitation
benchmarks (Meta-World).

An MLP maps the last ``n_obs_steps`` standardised observations to the current action (tanh, in
[-1, 1]) and is trained by mean squared error on the demonstrations: the same windows and
observations as :class:`~diffgym.agents.diffusion_policy.DiffusionPolicy` sees, one action
predicted and executed per step. Built on the same trajectory base, so it loads data, normalises
and acts (``predict`` with the history in its state) exactly as the diffusion agent does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch import Tensor, nn

from diffgym.data import DatasetLike
from diffgym.networks import make_adam
from diffgym.policies import NetArchPart
from diffgym.trajectory import RecedingHorizonPolicy, SegmentSamples, SequenceAlgorithm


class HistoryBCPolicy(RecedingHorizonPolicy):
    """``tanh(MLP([o_{t-n+1}, …, o_t]))`` -> ``a_t``; a "plan" is that one action, (b, 1, A).

    Args (``policy_kwargs``):
        n_obs_steps: observations the action is computed from (2: as Diffusion Policy).
        hidden_dim, num_layers: ReLU hidden layers (256 × 3).
        obs_std_floor: floor of the observations' std when standardising (0.01: as Diffusion Policy here).

    SB3's ``net_arch`` (a list, or ``dict(pi=[...])``): its equal widths set ``hidden_dim`` and its
    length ``num_layers``.
    """

    net_arch_parts: ClassVar[dict[str, NetArchPart]] = {"pi": NetArchPart("hidden_dim", "num_layers")}

    def _build(
        self,
        lr_schedule: Schedule,
        n_obs_steps: int = 2,
        hidden_dim: int = 256,
        num_layers: int = 3,
        obs_std_floor: float = 1e-2,
    ) -> None:
        self.n_obs_steps, self.n_action_steps = n_obs_steps, 1
        self.segment_horizon, self.pad_before = n_obs_steps, n_obs_steps - 1
        self.obs_std_floor = obs_std_floor
        layers: list[nn.Module] = []
        width = n_obs_steps * self.obs_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        self.net = nn.Sequential(*layers, nn.Linear(width, self.action_dim), nn.Tanh())
        self.optimizer = make_adam(self.net.parameters(), lr=lr_schedule(1))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.optimizer}

    def act(self, history: Tensor) -> Tensor:
        """(b, n_obs_steps, obs_dim) normalised -> (b, A) in [-1, 1]."""
        return self.net(history[:, : self.n_obs_steps].flatten(1))

    def plan(self, history: Tensor, previous: Tensor | None, deterministic: bool) -> Tensor:
        return self.act(history).unsqueeze(1)

    def plan_actions(self, plans: Tensor) -> Tensor:
        return plans


class HistoryBC(SequenceAlgorithm):
    """MSE behaviour cloning of ``a_t`` from the last ``n_obs_steps`` observations (Adam, lr 1e-3,
    batch 256; ``lr_decay_steps`` anneals along a cosine over that many gradient steps, None: a
    constant rate, the default). The window whose current step is past an
    episode's end (its action is padding) is masked out of the loss."""

    policy_aliases: ClassVar[dict[str, type]] = {
        "MlpPolicy": HistoryBCPolicy,
        "MultiInputPolicy": HistoryBCPolicy,
    }
    policy: HistoryBCPolicy

    def __init__(
        self,
        policy: str | type[HistoryBCPolicy],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        learning_rate: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, dataset, learning_rate=learning_rate, **kwargs)

    def train_step(self, batch: SegmentSamples) -> dict[str, Tensor]:
        current = self.policy.n_obs_steps - 1
        error = ((self.policy.act(batch.observations) - batch.actions[:, current]) ** 2).mean(dim=1)
        real = batch.mask[:, current].to(error.dtype)
        loss = (error * real).sum() / real.sum().clamp_min(1.0)
        self.policy.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.policy.optimizer.step()
        return {"bc_loss": loss}
