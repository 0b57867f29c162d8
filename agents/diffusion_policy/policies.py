"""Diffusion Policy's network and how it acts: a conditional U-Net over action chunks, executed in
order or blended by temporal ensembling."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor

from diffgym.denoisers import TemporalUnet
from diffgym.diffusion import GaussianDiffusion
from diffgym.ema import EMA
from diffgym.normalizers import NormalizerKind, make_normalizer
from diffgym.policies import check_finite_observation
from diffgym.samplers import Sampler, make_sampler
from diffgym.schedules import NoiseSchedule
from diffgym.trajectory import RecedingHorizonPolicy


class DiffusionPolicyNet(RecedingHorizonPolicy):
    """Denoises a chunk of ``horizon`` actions conditioned on the last ``n_obs_steps`` observations.

    The chunk covers the steps from ``n_obs_steps - 1`` before the current one to ``horizon -
    n_obs_steps`` after it; the actions from the current step on, ``plan[:, n_obs_steps - 1 :
    n_obs_steps - 1 + n_action_steps]``, are executable.

    Plans, as kept in :class:`~diffgym.trajectory.RecedingHorizonPolicy`'s state:

    - **chunking** (``temporal_ensemble_coeff=None``, the default): a plan is the sampled chunk,
      ``(b, horizon, A)``; ``predict`` returns its executable actions one per call and samples a
      new chunk every ``n_action_steps`` calls.
    - **temporal ensembling** (ACT, Zhao et al. 2023): a chunk is sampled at every step and the
      plan holds the last ``k = n_action_steps`` executable slices, newest first, with a validity
      channel: ``(b, k, k, A + 1)``, ``plan[:, j, i, :A]`` = the action the chunk sampled ``j``
      steps ago gives for its ``i``-th executable step, ``plan[:, j, :, A]`` = 1 if that chunk
      exists (0 for slots before the episode's start). The current step's action averages
      ``plan[:, j, j, :A]`` over existing chunks with ACT's weights ``w_i = exp(-coeff · i)``,
      ``i = 0`` for the oldest, i.e. ``∝ exp(coeff · j)``.

    Args (``policy_kwargs``):
        n_obs_steps: T_o, observations the chunk is conditioned on (DP: 2).
        horizon: T_p, actions per chunk (DP: 16); a multiple of ``2 ** (len(dim_mults) - 1)``.
        n_action_steps: T_a, actions executed per chunk (DP: 8), at most ``horizon - n_obs_steps + 1``.
        num_timesteps: diffusion steps in training (DP: 100).
        dim, dim_mults: U-Net widths ``dim * m`` (DP: ``down_dims=(256, 512, 1024)``, i.e. 256 and
            (1, 2, 4); 64 here: 1/16 of the convolutions' work, for CPU).
        kernel_size: U-Net convolution kernel (DP: 5).
        sampler: how chunks are sampled (DP: 100-step DDPM in simulation, DDIM with 16 steps on its
            real robots; here DDIM with 10 steps, for CPU latency).
        temporal_ensemble_coeff: ACT's ``m`` to blend overlapping chunks (ACT: 0.01); None (default)
            executes chunks as they are, as DP does.
        normalizer: how observations are normalised (see
            :func:`~diffgym.normalizers.make_normalizer`): ``"gaussian"`` (default) standardises each
            feature by the data's mean and std; ``"limits"`` maps its data range to [-1, 1], as DP
            does; ``"cdf"`` maps it through its empirical CDF.
        obs_std_floor: floor of each observation feature's spread (std, or half-range with
            ``"limits"``): near-constant features (Meta-World's object quaternions vary by 1e-5 in
            the demonstrations) would otherwise be scaled by up to 1e6 and explode as soon as a
            rollout leaves the data.
        weight_decay, adam_betas: AdamW's (DP: 1e-6, (0.95, 0.999)).
        ema_power, ema_max_decay: the EMA's warm-up schedule, updated every step (DP: 0.75, 0.9999;
            see :class:`~diffgym.ema.EMA`).
        deterministic_seed, normalize_observations: see :class:`~diffgym.policies.AgentPolicy`.
    """

    derived_state: ClassVar[dict[str, str]] = {"model.": "ema.module."}  # the EMA model acts

    model: GaussianDiffusion
    ema: EMA[GaussianDiffusion]
    sampler: Sampler

    def _build(
        self,
        lr_schedule: Schedule,
        n_obs_steps: int = 2,
        horizon: int = 16,
        n_action_steps: int = 8,
        num_timesteps: int = 100,
        dim: int = 64,
        dim_mults: tuple[int, ...] = (1, 2, 4),
        kernel_size: int = 5,
        sampler: str | dict[str, Any] | None = None,
        temporal_ensemble_coeff: float | None = None,
        normalizer: NormalizerKind = "gaussian",
        obs_std_floor: float = 1e-2,
        weight_decay: float = 1e-6,
        adam_betas: tuple[float, float] = (0.95, 0.999),
        ema_power: float = 0.75,
        ema_max_decay: float = 0.9999,
    ) -> None:
        _check_horizons(n_obs_steps, horizon, n_action_steps, 2 ** (len(dim_mults) - 1))
        self.n_obs_steps, self.segment_horizon, self.pad_before = n_obs_steps, horizon, n_obs_steps - 1
        self.chunk_steps = n_action_steps  # executable actions per chunk
        self.temporal_ensemble_coeff = temporal_ensemble_coeff
        self.n_action_steps = 1 if temporal_ensemble_coeff is not None else n_action_steps
        self.obs_std_floor = obs_std_floor
        self.obs_normalizer = make_normalizer(normalizer, self.obs_dim)[0]  # observations are not clipped
        denoiser = TemporalUnet(
            self.action_dim,
            cond_dim=n_obs_steps * self.obs_dim,
            dim=dim,
            dim_mults=tuple(dim_mults),
            kernel_size=kernel_size,
            film=True,
        )
        schedule = NoiseSchedule.make("cosine", num_timesteps)  # DP's squaredcos_cap_v2
        self.model = GaussianDiffusion(denoiser, schedule, prediction="epsilon", clip_range=(-1.0, 1.0))
        self.ema = EMA(self.model, ema_max_decay, power=ema_power)
        self.sampler = make_sampler(sampler or {"name": "ddim", "num_steps": 10})
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=lr_schedule(1),
            betas=(float(adam_betas[0]), float(adam_betas[1])),
            weight_decay=weight_decay,
            fused=True,  # one vectorised update (see diffgym.networks.make_adam)
        )

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.optimizer}

    @property
    def ema_model(self) -> GaussianDiffusion:
        """The averaged model that acts."""
        return self.ema.module

    # ------------------------------------------------------------------ training

    def condition(self, observations: Tensor) -> Tensor:
        """The global condition: (B, >= n_obs_steps, obs_dim) normalised -> (B, n_obs_steps * obs_dim)."""
        return observations[:, : self.n_obs_steps].flatten(1)

    # ------------------------------------------------------------------ acting

    def sample_chunks(self, history: Tensor, deterministic: bool) -> Tensor:
        """Chunks from the EMA model: (b, n_obs_steps, obs_dim) normalised -> (b, horizon, A) in [-1, 1]."""
        shape = (history.shape[0], self.segment_horizon, self.action_dim)
        return self.ema_model.sample(
            shape, self.condition(history), sampler=self.sampler, generator=self.plan_noise(deterministic)
        )

    def executable(self, chunks: Tensor) -> Tensor:
        """(b, horizon, A) -> (b, chunk_steps, A): the actions from the current step on."""
        start = self.n_obs_steps - 1
        return chunks[:, start : start + self.chunk_steps]

    def plan(self, history: Tensor, previous: Tensor | None, deterministic: bool) -> Tensor:
        """(b, n_obs_steps, obs_dim) -> a chunk (b, horizon, A), or with temporal ensembling the
        chunk history (b, k, k, A + 1) with the new chunk first (see the class doc)."""
        chunks = self.sample_chunks(history, deterministic)
        if self.temporal_ensemble_coeff is None:
            return chunks
        newest = self.executable(chunks)
        newest = torch.cat([newest, newest.new_ones(*newest.shape[:2], 1)], dim=-1).unsqueeze(1)
        if previous is None:
            older = newest.new_zeros(newest.shape[0], self.chunk_steps - 1, *newest.shape[2:])
        else:
            older = previous[:, :-1].to(newest.dtype)
        return torch.cat([newest, older], dim=1)

    def act_in_chunks(self, observations: np.ndarray, deterministic: bool) -> np.ndarray:
        """Whole chunks for an action-chunk env (see :class:`~diffgym.agents.diffusion_policy.DiffusionPolicy`):
        a fresh chunk per call from the histories the env shows, no state.

        Shapes: ``observations`` (n, n_obs_steps, *obs_shape), or (n, *obs_shape) when ``n_obs_steps`` is
        1 -> (n, chunk_steps, *action_shape), rescaled to the action space's bounds.

        Raises:
            ValueError: NaN or inf in the observations.
        """
        self._before_acting(deterministic)
        self.set_training_mode(False)
        tensor = torch.as_tensor(observations, device=self.device)
        check_finite_observation(tensor, vectorized=True)
        n = tensor.shape[0]
        with torch.no_grad():
            history = self.features(tensor.reshape(n * self.n_obs_steps, -1)).view(n, self.n_obs_steps, -1)
            actions = self.executable(self.sample_chunks(history, deterministic)).clamp(-1.0, 1.0)
        box: spaces.Box = self.action_space  # type: ignore[assignment]
        return self.unscale_action(actions.cpu().numpy().reshape(n, self.chunk_steps, *box.shape))

    def plan_actions(self, plans: Tensor) -> Tensor:
        """Chunking: (b, horizon, A) -> (b, n_action_steps, A); temporal ensembling:
        (b, k, k, A + 1) -> (b, 1, A), the weighted mean of the chunks' actions for this step."""
        if self.temporal_ensemble_coeff is None:
            return self.executable(plans).clamp(-1.0, 1.0)
        k = self.chunk_steps
        age = torch.arange(k, device=plans.device)
        current = plans[:, age, age]  # (b, k, A + 1): each chunk's action for the current step
        weights = current[..., -1] * torch.exp(self.temporal_ensemble_coeff * age.to(plans.dtype))
        mean = (weights[..., None] * current[..., :-1]).sum(dim=1) / weights.sum(dim=1, keepdim=True)
        return mean.clamp(-1.0, 1.0).unsqueeze(1)


def _check_horizons(n_obs_steps: int, horizon: int, n_action_steps: int, multiple: int) -> None:
    if n_obs_steps < 1:
        raise ValueError(f"n_obs_steps must be at least 1, got {n_obs_steps}")
    if horizon % multiple or horizon < n_obs_steps:
        raise ValueError(
            f"horizon must be a multiple of {multiple} (the U-Net's levels) and >= n_obs_steps, got {horizon}"
        )
    if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
        raise ValueError(
            f"n_action_steps must be in [1, horizon - n_obs_steps + 1 = {horizon - n_obs_steps + 1}], "
            f"got {n_action_steps}"
        )
