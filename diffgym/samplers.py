"""Samplers: ways to run a trained diffusion model's reverse chain.

Each sampler is a small frozen dataclass behind one protocol, :class:`Sampler`. It receives a
``predict(x_t, t) -> Prediction`` function (the model's clean-sample and noise estimates at step
``t``, already guided and clipped by :class:`~diffgym.diffusion.GaussianDiffusion`, and the
``x_t`` they are for: classifier guidance moves ``x_t`` before the network sees it) and knows only
how to move from that ``x_t`` to the next, less noisy, sample. Its ``temperature`` scales the
noise it injects (and the initial noise, which ``GaussianDiffusion.sample`` draws). Coefficients
are Python floats computed from the schedule's float64 arrays: the whole batch shares one step, so
there is no gather and no device sync in the loop. Sampling is differentiable whenever the caller keeps
autograd on (Diffusion-QL backpropagates through the chain).

Hand-written rather than taken from ``diffusers`` because the chain must be differentiable,
cheap per step for few-step policies, and able to take guidance and inpainting at each step;
``tests/test_samplers.py`` checks every sampler against diffusers' scheduler of the same name on
the same model, noise and steps.

>>> make_sampler({"name": "ddim", "num_steps": 10}) == DDIMSampler(num_steps=10)
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from diffgym.schedules import NoiseSchedule


class Prediction(NamedTuple):
    """A denoiser's estimates at one step and the sample they are for, all of shape ``x_t.shape``."""

    x0: Tensor  # the clean sample, clipped to the data bounds when the model has them
    eps: Tensor  # the noise, consistent with ``x0``: x_t = sqrt(ab) x0 + sqrt(1 - ab) eps
    x_t: Tensor  # the noisy sample the estimates are for (moved by classifier guidance); steps start here


PredictFn = Callable[[Tensor, int], Prediction]
NoiseFn = Callable[[tuple[int, ...], torch.device, torch.dtype], Tensor]  # (shape, device, dtype) -> N(0, I)
Randomness = torch.Generator | NoiseFn | None  # where a sampler's noise comes from
ProjectFn = Callable[[Tensor], Tensor]
StepCallback = Callable[[int, Tensor], None]


def gaussian_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str, dtype: torch.dtype
) -> Tensor:
    """Standard normal noise drawn from ``generator`` (on its own device), then moved to ``device``."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def draw_noise(
    randomness: Randomness, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Noise from a generator (or torch's global one), or from a :data:`NoiseFn`."""
    if callable(randomness):
        return randomness(shape, device, dtype)
    return gaussian_noise(shape, randomness, device, dtype)


class TiledNoise:
    """Noise whose rows repeat every ``period`` rows: row r gets the draw of row ``r % period``.

    Acting samples ``period`` candidates per observation in rows ``[obs0 × period, obs1 × period,
    …]``; with tiled noise, candidate k of every observation sees the same noise, so an
    observation's deterministic action does not depend on which others share its batch.

    >>> noise = TiledNoise(torch.Generator().manual_seed(0), period=2)((6, 3), torch.device("cpu"), torch.float32)
    >>> torch.equal(noise[0], noise[2]) and torch.equal(noise[1], noise[5]) and not torch.equal(noise[0], noise[1])
    True
    """

    def __init__(self, generator: torch.Generator, period: int) -> None:
        self.generator = generator
        self.period = period

    def __call__(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
        if shape[0] % self.period:
            raise ValueError(f"{shape[0]} rows are not a whole number of periods of {self.period}")
        block = gaussian_noise((self.period, *shape[1:]), self.generator, device, dtype)
        return block.repeat(shape[0] // self.period, *(1,) * (len(shape) - 1))


def timestep_sequence(num_timesteps: int, num_steps: int, spacing: str) -> list[int]:
    """Descending training steps visited by a sampler with ``num_steps`` steps.

    Spacings follow Lin et al. (2024, Table 2) and diffusers: ``trailing`` starts at T-1
    (best for few steps), ``leading`` is DDIM's original, ``linspace`` is DPM-Solver's
    ``round(linspace(0, T-1, n+1))[::-1][:-1]``.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}] (the model's T), got {num_steps}")
    if spacing == "trailing":
        steps = np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)) - 1
    elif spacing == "leading":
        steps = (np.arange(num_steps) * (num_timesteps // num_steps))[::-1]
    elif spacing == "linspace":
        steps = np.linspace(0, num_timesteps - 1, num_steps + 1).round()[::-1][:-1]
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; use 'trailing', 'leading' or 'linspace'")
    sequence = [int(t) for t in steps]
    if len(set(sequence)) != len(sequence):
        raise ValueError(f"{num_steps} steps with {spacing!r} spacing repeat a timestep of T={num_timesteps}")
    return sequence


class Sampler(Protocol):
    """Runs the reverse chain from ``x`` (pure noise, already inpainted) to a clean sample.

    ``temperature`` scales the sampler's noise: the initial ``x_T = temperature · N(0, I)`` (drawn
    by ``GaussianDiffusion.sample``) and the noise each stochastic step injects (Decision
    Diffuser samples at 0.5). 1 is the model's distribution; a deterministic sampler (DDIM with
    ``eta=0``, DPM-Solver++) only starts from the scaled noise.
    """

    name: ClassVar[str]

    @property
    def temperature(self) -> float:
        """The noise scale (1: the model's distribution)."""
        ...

    def sample(
        self,
        predict: PredictFn,
        schedule: NoiseSchedule,
        x: Tensor,
        generator: Randomness = None,
        project: ProjectFn | None = None,
        on_step: StepCallback | None = None,
        start: int | None = None,
    ) -> Tensor:
        """``start``: ``x`` is a sample noised to training step ``start`` (SDEdit-style partial
        denoising, e.g. a planner's warm start); only the steps ``t <= start`` run. None: T - 1."""
        ...

    def steps(self, num_timesteps: int) -> int:
        """How many denoiser calls one sample costs."""
        ...


def _last_step(schedule: NoiseSchedule, start: int | None) -> int:
    if start is None:
        return schedule.num_timesteps - 1
    if not 0 <= start < schedule.num_timesteps:
        raise ValueError(f"start must be a training step in [0, {schedule.num_timesteps - 1}], got {start}")
    return start


def _from_start(sequence: list[int], start: int | None) -> list[int]:
    """The visited steps below ``start`` (all when None), preceded by ``start`` itself."""
    if start is None:
        return sequence
    if not 0 <= start <= sequence[0]:
        raise ValueError(f"start must be a training step in [0, {sequence[0]}], got {start}")
    return [start, *(t for t in sequence if t < start)]


def posterior_variance(schedule: NoiseSchedule, t: int) -> float:
    """DDPM's posterior variance ``beta~_t = beta_t (1 - ab_{t-1}) / (1 - ab_t)`` of the training step
    ``t`` (0 at t = 0), clipped below at 1e-20 as ``posterior_log_variance_clipped`` (Ho et al.,
    Diffuser) and diffusers' ``fixed_small`` variance."""
    ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(t - 1)
    return max(schedule.betas_np[t] * (1 - ab_prev) / (1 - ab), 1e-20)


def _finish_step(x: Tensor, t: int, project: ProjectFn | None, on_step: StepCallback | None) -> Tensor:
    if project is not None:
        x = project(x)
    if on_step is not None:
        on_step(t, x)
    return x


@dataclass(frozen=True)
class DDPMSampler:
    """Ancestral sampling (Ho et al. 2020) through all T steps, posterior variance ``beta~_t``.

    Matches diffusers' ``DDPMScheduler(variance_type="fixed_small")`` and Diffusion-QL's
    ``p_sample`` (which clips x0 to the action bounds, as ``clip_range`` does here).
    """

    name: ClassVar[str] = "ddpm"
    temperature: float = 1.0  # scale of the initial and injected noise (Decision Diffuser: 0.5)

    def steps(self, num_timesteps: int) -> int:
        return num_timesteps

    def sample(
        self,
        predict: PredictFn,
        schedule: NoiseSchedule,
        x: Tensor,
        generator: Randomness = None,
        project: ProjectFn | None = None,
        on_step: StepCallback | None = None,
        start: int | None = None,
    ) -> Tensor:
        for t in reversed(range(_last_step(schedule, start) + 1)):
            x0, _, x = predict(x, t)
            ab, ab_prev, beta = schedule.alpha_bar(t), schedule.alpha_bar(t - 1), schedule.betas_np[t]
            x = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (
                math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
            ) * x
            if t > 0:
                std = self.temperature * math.sqrt(posterior_variance(schedule, t))
                x = x + std * draw_noise(generator, x.shape, x.device, x.dtype)
            x = _finish_step(x, t, project, on_step)
        return x


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM (Song et al. 2021) on a subsequence of steps; ``eta=0`` is deterministic.

    Matches diffusers' ``DDIMScheduler`` (``set_alpha_to_one=True``; with clipping,
    ``use_clipped_model_output=True``: the noise estimate is re-derived from the clipped x0)
    when T is a multiple of ``num_steps``; otherwise this one steps to the next visited
    timestep, which is exact, where diffusers steps by ``T // num_steps``.

    With ε-prediction, a schedule whose last step keeps almost no signal (cosine: ``alpha_bar``
    ≈ 1e-6 at T-1) makes the first x0 estimate explode; give the model a ``clip_range`` (data
    bounds) or use ``"leading"`` spacing. The same holds for DPM-Solver.
    """

    name: ClassVar[str] = "ddim"
    num_steps: int = 10  # denoiser calls per sample
    eta: float = 0.0  # 0: deterministic DDIM; 1: DDPM-like stochasticity
    spacing: str = "trailing"  # which training steps are visited (see timestep_sequence)
    temperature: float = 1.0  # scale of the initial noise and, with eta > 0, of the injected noise

    def steps(self, num_timesteps: int) -> int:
        return self.num_steps

    def sample(
        self,
        predict: PredictFn,
        schedule: NoiseSchedule,
        x: Tensor,
        generator: Randomness = None,
        project: ProjectFn | None = None,
        on_step: StepCallback | None = None,
        start: int | None = None,
    ) -> Tensor:
        sequence = _from_start(timestep_sequence(schedule.num_timesteps, self.num_steps, self.spacing), start)
        for t, t_prev in zip(sequence, [*sequence[1:], -1], strict=True):
            x0, eps, _ = predict(x, t)  # eps is that of the guided x_t
            ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
            sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
            if self.eta > 0:
                x = x + (self.temperature * sigma) * draw_noise(generator, x.shape, x.device, x.dtype)
            x = _finish_step(x, t, project, on_step)
        return x


@dataclass(frozen=True)
class DPMSolverSampler:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep on the data prediction.

    The first step is first order (no history yet) and so is the last, which lands on
    sigma = 0 (returns the final x0 estimate): diffusers' ``DPMSolverMultistepScheduler`` with
    ``algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"``.
    """

    name: ClassVar[str] = "dpm_solver"
    num_steps: int = 10  # denoiser calls per sample
    spacing: str = "linspace"  # diffusers' default for DPM-Solver; starts at T-1
    temperature: float = 1.0  # scale of the initial noise (the solver injects none)

    def steps(self, num_timesteps: int) -> int:
        return self.num_steps

    def sample(
        self,
        predict: PredictFn,
        schedule: NoiseSchedule,
        x: Tensor,
        generator: Randomness = None,
        project: ProjectFn | None = None,
        on_step: StepCallback | None = None,
        start: int | None = None,
    ) -> Tensor:
        sequence = _from_start(timestep_sequence(schedule.num_timesteps, self.num_steps, self.spacing), start)
        previous_x0: Tensor | None = None
        previous_h = 0.0
        for t, t_next in zip(sequence, [*sequence[1:], -1], strict=True):
            x0, _, x = predict(x, t)
            if t_next < 0:  # sigma_next = 0: the first-order update is exactly x0
                x = _finish_step(x0, t, project, on_step)
                break
            alpha_s, sigma_s = _alpha_sigma(schedule, t)
            alpha_t, sigma_t = _alpha_sigma(schedule, t_next)
            h = math.log(alpha_t / sigma_t) - math.log(alpha_s / sigma_s)
            phi = -math.expm1(-h)  # 1 - exp(-h)
            data_term = x0
            if previous_x0 is not None:  # second-order midpoint correction from the last x0
                data_term = x0 + (0.5 * h / previous_h) * (x0 - previous_x0)
            x = (sigma_t / sigma_s) * x + (alpha_t * phi) * data_term
            previous_x0, previous_h = x0, h
            x = _finish_step(x, t, project, on_step)
        return x


def _alpha_sigma(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    ab = schedule.alpha_bar(t)
    return math.sqrt(ab), math.sqrt(1 - ab)


SAMPLERS: dict[str, type] = {cls.name: cls for cls in (DDPMSampler, DDIMSampler, DPMSolverSampler)}


def sampler_config(sampler: Sampler) -> dict[str, Any]:
    """A JSON-able description of a sampler, e.g. ``{"name": "ddim", "num_steps": 10, ...}``."""
    return {"name": sampler.name, **dataclasses.asdict(sampler)}  # type: ignore[call-overload]


def make_sampler(config: dict[str, Any] | str) -> Sampler:
    """Rebuild a sampler from :func:`sampler_config`'s output (or just its name)."""
    config = {"name": config} if isinstance(config, str) else dict(config)
    name = config.pop("name")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](**config)
