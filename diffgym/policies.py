"""Policy bases: :class:`AgentPolicy` (what every diffgym policy shares) and
:class:`CandidateSelectionPolicy` (agents that act by sampling candidate actions).

Diffusion-QL and IDQL both act the same way: draw ``num_candidates`` actions from a diffusion
model for each observation (one batched call), score them with a critic, and keep one.
``deterministic=True`` draws the candidates from a fixed noise seed and keeps the best score, so
the same observation always gets the same action (the survey's "no deterministic diffusion
action" limitation); ``deterministic=False`` draws fresh noise and samples a candidate in
proportion to ``softmax(score)``.

Subclasses build their networks in ``_build`` and implement ``sample_actions`` and
``score_actions``; observations arrive flattened (Dict spaces concatenate their keys in the
space's order) and normalised by ``obs_normalizer``, whose statistics travel in the state dict.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import Tensor, nn

from diffgym.diffusion import GaussianDiffusion
from diffgym.ema import EMA
from diffgym.networks import StateActionCritic
from diffgym.normalizers import DEFAULT_EPS, GaussianNormalizer, Normalizer
from diffgym.rl import twin_critic
from diffgym.samplers import Randomness, Sampler, TiledNoise, make_sampler
from diffgym.schedules import NoiseSchedule


class AgentPolicy(BasePolicy):
    """What every diffgym policy shares: flattened, normalised observations, a seeded sampling
    generator, named optimizers, and actions in [-1, 1] inside the networks
    (``squash_output=True``: SB3 rescales them to the action space's bounds in ``predict``).

    Args:
        observation_space, action_space, lr_schedule: as for every SB3 policy.
        deterministic_seed: seed of the fixed noise used by ``deterministic=True``.
        normalize_observations: standardise observations with the dataset's mean and std.
        network_kwargs: passed to the subclass's ``_build``.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        deterministic_seed: int = 0,
        normalize_observations: bool = True,
        **network_kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        self._check_action_space(action_space)
        self.obs_dim = spaces.flatdim(observation_space)
        self.action_dim = spaces.flatdim(action_space)
        self.deterministic_seed = deterministic_seed
        self.normalize_observations = normalize_observations
        self.obs_normalizer: Normalizer = GaussianNormalizer(self.obs_dim)
        self.sampling_generator: torch.Generator | None = None  # seeded by the algorithm
        self._build(lr_schedule, **network_kwargs)

    def _check_action_space(self, action_space: spaces.Space) -> None:
        """Refuse action spaces the policy cannot produce (here: anything but a ``Box``)."""
        if not isinstance(action_space, spaces.Box):
            raise TypeError(f"diffusion policies need a continuous (Box) action space, got {action_space}")

    @abstractmethod
    def _build(self, lr_schedule: Schedule, *args: Any, **network_kwargs: Any) -> None:
        """Create the networks and their optimizers."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer, by name (saved and restored with the model)."""

    def fit_normalizer(self, flat_observations: Tensor, eps: float = DEFAULT_EPS) -> None:
        """Set the observation statistics from the dataset: (N, obs_dim); ``eps`` floors each
        feature's spread (standard deviation or half-range)."""
        if self.normalize_observations:
            fitted = type(self.obs_normalizer).fit(flat_observations, eps=eps)
            self.obs_normalizer.load_state_dict(fitted.state_dict())

    def features(self, observation: PyTorchObs) -> Tensor:
        """Flatten (Dict keys in order) and normalise: -> (B, obs_dim) float."""
        if isinstance(observation, dict):
            parts = [observation[key].float().flatten(1) for key in self.observation_space.spaces]  # type: ignore[attr-defined]
            flat = torch.cat(parts, dim=1)
        else:
            flat = observation.float().flatten(1)
        return self.obs_normalizer.normalize(flat)

    def _fixed_noise(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.deterministic_seed)


class CandidateSelectionPolicy(AgentPolicy):
    """Acts by sampling candidate actions from a diffusion model and choosing by value.

    Args:
        observation_space, action_space, lr_schedule, deterministic_seed, normalize_observations:
            see :class:`AgentPolicy`.
        num_candidates: actions sampled per observation when acting (Diffusion-QL: 50; IDQL's
            official code: 64).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        num_candidates: int = 50,
        deterministic_seed: int = 0,
        normalize_observations: bool = True,
        **network_kwargs: Any,
    ) -> None:
        self.num_candidates = num_candidates
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            deterministic_seed=deterministic_seed,
            normalize_observations=normalize_observations,
            **network_kwargs,
        )

    @abstractmethod
    def sample_actions(self, features: Tensor, generator: Randomness) -> Tensor:
        """Sample one action in [-1, 1] per row: features (B, obs_dim) -> (B, action_dim)."""

    @abstractmethod
    def score_actions(self, features: Tensor, actions: Tensor) -> Tensor:
        """Value of each (observation, action) row: (B, obs_dim), (B, action_dim) -> (B,)."""

    def select_actions(self, features: Tensor, deterministic: bool) -> Tensor:
        """Sample ``num_candidates`` actions per row and keep one: (B, obs_dim) -> (B, action_dim)."""
        batch, n = features.shape[0], self.num_candidates
        repeated = features.repeat_interleave(n, dim=0)
        if deterministic:
            candidates = self.sample_actions(repeated, TiledNoise(self._fixed_noise(), n))
            choice = self.score_actions(repeated, candidates).view(batch, n).argmax(dim=1)
        else:
            candidates = self.sample_actions(repeated, self.sampling_generator)
            scores = self.score_actions(repeated, candidates).view(batch, n)
            choice = torch.multinomial(
                torch.softmax(scores, dim=1), 1, generator=self.sampling_generator
            ).squeeze(1)
        return candidates.view(batch, n, -1)[torch.arange(batch, device=features.device), choice]

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        return self.select_actions(self.features(observation), deterministic)

    def forward(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        return self._predict(observation, deterministic)


class DiffusionActorPolicy(CandidateSelectionPolicy):
    """A candidate-selection policy whose actor is a diffusion model over actions in [-1, 1],
    with an EMA copy and twin critics with targets (what Diffusion-QL and IDQL share)."""

    actor: GaussianDiffusion
    ema_actor: EMA[GaussianDiffusion]
    sampler: Sampler
    critic: StateActionCritic
    critic_target: StateActionCritic

    def _build_actor(
        self,
        denoiser: nn.Module,
        num_timesteps: int,
        beta_schedule: str,
        sampler: str | dict[str, Any],
        ema_decay: float,
    ) -> None:
        """ε-prediction diffusion of actions given the state, x0 clipped to [-1, 1], and its EMA."""
        schedule = NoiseSchedule.make(beta_schedule, num_timesteps)
        self.actor = GaussianDiffusion(denoiser, schedule, prediction="epsilon", clip_range=(-1.0, 1.0))
        self.ema_actor = EMA(self.actor, ema_decay)
        self.sampler = make_sampler(sampler)

    def _build_twin_critic(self, **mlp_kwargs: Any) -> None:
        """Two Q networks in one ensemble, and a frozen target copy (:func:`~diffgym.rl.twin_critic`)."""
        self.critic, self.critic_target = twin_critic(self.obs_dim, self.action_dim, **mlp_kwargs)

    def sample_from(
        self,
        model: GaussianDiffusion,
        features: Tensor,
        generator: Randomness,
        differentiable: bool = False,
    ) -> Tensor:
        """One action per row from ``model`` (the actor or ``ema_actor.module``): (B, obs_dim) -> (B, A)."""
        shape = (features.shape[0], self.action_dim)
        return model.sample(
            shape, features, sampler=self.sampler, generator=generator, differentiable=differentiable
        )

    @property
    def ema_model(self) -> GaussianDiffusion:
        return self.ema_actor.module
