"""How close sampling comes to the network limit: time ÷ (steps × one bare denoiser forward).

A ratio of 1.0 means the sampler adds nothing to the network's own cost; the excess is the
per-step arithmetic and Python overhead of the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from diffgym.denoisers import MLPDenoiser, TemporalUnet
from diffgym.diffusion import GaussianDiffusion
from diffgym.samplers import DDIMSampler, DDPMSampler, DPMSolverSampler, Sampler
from diffgym.schedules import NoiseSchedule
from diffgym.zoo.benchmarks.report import latency_ms

NUM_TIMESTEPS = 100  # training steps T of the benchmarked models; DDPM walks all of them
SAMPLERS: list[Sampler] = [DDPMSampler(), DDIMSampler(num_steps=10), DPMSolverSampler(num_steps=10)]


def _models() -> dict[str, tuple[nn.Module, Callable[[int], tuple[int, ...]], int]]:
    """name -> (denoiser, batch -> sample shape, cond dim): a Diffusion-QL actor and a Diffuser U-Net."""
    return {
        "MLP (Diffusion-QL actor, hopper dims)": (MLPDenoiser(x_dim=3, cond_dim=11), lambda b: (b, 3), 11),
        "temporal U-Net (Diffuser, H=32, hopper dims)": (
            TemporalUnet(x_dim=14, dim=32, dim_mults=(1, 2, 4, 8)),
            lambda b: (b, 32, 14),
            0,
        ),
    }


def measure(batch_sizes: tuple[int, ...] = (1, 256)) -> list[dict[str, Any]]:
    """One row per (model, batch, sampler): time per sample batch and the ratio to the forward, medians
    by ``torch.utils.benchmark`` (:func:`~diffgym.zoo.benchmarks.report.latency_ms`)."""
    rows = []
    for model_name, (denoiser, shape_of, cond_dim) in _models().items():
        denoiser.eval()
        diffusion = GaussianDiffusion(
            denoiser, NoiseSchedule.make("linear", NUM_TIMESTEPS), clip_range=(-1, 1)
        )
        for batch in batch_sizes:
            x = torch.randn(shape_of(batch))
            cond: Tensor | None = torch.randn(batch, cond_dim) if cond_dim else None
            t = torch.full((batch,), NUM_TIMESTEPS // 2, dtype=torch.long)
            with torch.no_grad():
                forward = latency_ms(partial(denoiser, x, t, cond))
            for sampler in SAMPLERS:
                steps = sampler.steps(NUM_TIMESTEPS)
                sample = latency_ms(partial(diffusion.sample, shape_of(batch), cond, sampler=sampler))
                rows.append(
                    {
                        "model": model_name,
                        "batch": batch,
                        "sampler": sampler.name,
                        "steps": steps,
                        "forward_ms": forward,
                        "sample_ms": sample,
                        "ratio": sample / (steps * forward),
                    }
                )
    return rows
