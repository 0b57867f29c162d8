"""Noise schedules of discrete-time Gaussian diffusion.

A schedule is the sequence ``beta_t`` (t = 0 … T-1) of per-step noise variances. Everything a
sampler needs (``alpha_bar_t``, posterior coefficients) derives from it, so a model stores only
the schedule's name and T, never the arrays.

>>> schedule = NoiseSchedule.make("vp", 5)
>>> schedule.num_timesteps, round(float(schedule.alphas_cumprod[-1]), 4)
(5, 0.0064)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn


def linear_betas(
    num_timesteps: int, beta_start: float | None = None, beta_end: float | None = None
) -> np.ndarray:
    """DDPM's linear betas (Ho et al. 2020), 1e-4 → 0.02 at T = 1000.

    By default both ends scale by 1000 / T (Nichol & Dhariwal 2021's ``get_named_beta_schedule``)
    so that the chain ends in noise (``alpha_bar_T`` ≈ 4e-5) whatever T is. Diffusion-QL's own
    ``linear`` option keeps 1e-4 → 0.02 at T = 5 (``alpha_bar_T`` ≈ 0.95, far from noise): pass
    ``beta_start``/``beta_end`` explicitly to get that. Betas are capped at 0.999 (short chains).
    """
    scale = 1000 / num_timesteps
    start = scale * 1e-4 if beta_start is None else beta_start
    end = scale * 2e-2 if beta_end is None else beta_end
    return np.clip(np.linspace(start, end, num_timesteps, dtype=np.float64), 0.0, 0.999)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal (2021), used by Diffuser: ``alpha_bar(t) = cos²(…)``."""
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    alpha_bar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return np.clip(betas, 0.0, max_beta)


def vp_betas(num_timesteps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> np.ndarray:
    """Discretised variance-preserving SDE schedule (Song et al. 2021), Diffusion-QL's default.

    ``alpha_t = exp(-beta_min / T - (beta_max - beta_min) (2t - 1) / (2 T²))`` for t = 1 … T,
    which keeps a few-step chain (T = 5) well spread between data and noise.
    """
    t = np.arange(1, num_timesteps + 1, dtype=np.float64)
    total = num_timesteps
    alpha = np.exp(-beta_min / total - 0.5 * (beta_max - beta_min) * (2 * t - 1) / total**2)
    return 1.0 - alpha


SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "vp": vp_betas,
}


class NoiseSchedule(nn.Module):
    """The ``beta_t`` of a diffusion chain and the quantities derived from them.

    Tensors (buffers, so they follow ``.to(device)``; not persistent: they derive from the
    betas) serve per-sample gathers in training. Float64 NumPy copies serve samplers, whose
    coefficients are plain Python floats: the same for the whole batch, no gather, no sync.

    Args:
        betas: (T,) per-step noise variances in (0, 1).
        name: the schedule's name, recorded for saving (``"custom"`` for hand-made betas).
    """

    alphas_cumprod: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor

    def __init__(self, betas: np.ndarray | Tensor, name: str = "custom") -> None:
        super().__init__()
        betas64 = np.asarray(betas, dtype=np.float64)
        if betas64.ndim != 1 or not np.all((betas64 > 0) & (betas64 < 1)):
            raise ValueError(f"betas must be a 1-D array with values in (0, 1), got {betas64!r}")
        self.name = name
        self.betas_np = betas64
        self.alphas_cumprod_np = np.cumprod(1.0 - betas64)
        alpha_bar = torch.as_tensor(self.alphas_cumprod_np, dtype=torch.float32)
        self.register_buffer("alphas_cumprod", alpha_bar, persistent=False)
        self.register_buffer("sqrt_alphas_cumprod", alpha_bar.sqrt(), persistent=False)
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1 - alpha_bar).sqrt(), persistent=False)

    @classmethod
    def make(cls, name: str, num_timesteps: int) -> NoiseSchedule:
        """Build a named schedule (``linear``, ``cosine`` or ``vp``) with T steps."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}")
        return cls(SCHEDULES[name](num_timesteps), name=name)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas_np)

    def alpha_bar(self, t: int) -> float:
        """``alpha_bar_t`` as a float; ``t = -1`` means the clean data (``alpha_bar = 1``)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod_np[t])

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward noising ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``; t: (B,) long, x0: (B, ...)."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return (
            self.sqrt_alphas_cumprod[t].view(shape) * x0
            + self.sqrt_one_minus_alphas_cumprod[t].view(shape) * noise
        )
