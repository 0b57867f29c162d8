"""Our samplers against diffusers' schedulers: same model, same noise, same steps.

Both run in float64 with the same schedule constants, so any difference is the algorithm's,
not float32 rounding accumulated over a hundred steps.
"""

import dataclasses
import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from diffgym.diffusion import GaussianDiffusion
from diffgym.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    make_sampler,
    sampler_config,
    timestep_sequence,
)
from diffgym.schedules import NoiseSchedule

T = 100
BATCH, DIM = 16, 3


class TinyNet(nn.Module):
    """A fixed random network of (x, t): enough to make every step's output matter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(DIM + 2, 64), nn.Tanh(), nn.Linear(64, DIM)).double()

    def forward(self, x, t, cond=None, cond_mask=None):
        phase = t.double()[:, None] / T * math.pi
        return self.net(torch.cat([x, phase.sin(), phase.cos()], dim=-1))


def ours(sampler, schedule, prediction, clip, x_T):
    model = GaussianDiffusion(TinyNet(), schedule, prediction, clip_range=(-1.0, 1.0) if clip else None)
    generator = torch.Generator().manual_seed(1)
    return model.sample(sampler=sampler, x_T=x_T.clone(), generator=generator)


def theirs(scheduler, num_steps, x_T, schedule, **step_kwargs):
    scheduler.alphas_cumprod = torch.from_numpy(schedule.alphas_cumprod_np)  # float64, as ours
    net = TinyNet()
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(1)
    x = x_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = net(x, t.expand(BATCH))
            x = scheduler.step(output, t, x, generator=generator, **step_kwargs).prev_sample
    return x


@pytest.fixture(params=["linear", "cosine"])
def schedule(request):
    return NoiseSchedule.make(request.param, T)


@pytest.fixture
def x_T():
    return torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def common(schedule, prediction):
    return dict(
        num_train_timesteps=T, trained_betas=schedule.betas_np.astype("float32"), prediction_type=prediction
    )


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_matches_diffusers(schedule, prediction, clip, x_T):
    scheduler = DDPMScheduler(**common(schedule, prediction), clip_sample=clip, variance_type="fixed_small")
    expected = theirs(scheduler, T, x_T, schedule)
    torch.testing.assert_close(
        ours(DDPMSampler(), schedule, prediction, clip, x_T), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(schedule, prediction, clip, spacing, eta, x_T):
    scheduler = DDIMScheduler(**common(schedule, prediction), clip_sample=clip, timestep_spacing=spacing)
    # with clipping, our eps is re-derived from the clipped x0 (GLIDE's choice, diffusers' option)
    expected = theirs(scheduler, 10, x_T, schedule, eta=eta, use_clipped_model_output=True)
    sampler = DDIMSampler(num_steps=10, eta=eta, spacing=spacing)
    torch.testing.assert_close(ours(sampler, schedule, prediction, clip, x_T), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("num_steps", [1, 2, 10, 25])
def test_dpm_solver_matches_diffusers(schedule, prediction, num_steps, x_T):
    scheduler = DPMSolverMultistepScheduler(
        **common(schedule, prediction), algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    expected = theirs(scheduler, num_steps, x_T, schedule)
    sampler = DPMSolverSampler(num_steps=num_steps)
    torch.testing.assert_close(
        ours(sampler, schedule, prediction, False, x_T), expected, atol=1e-5, rtol=1e-5
    )


def test_sampling_is_differentiable_only_when_asked(schedule, x_T):
    model = GaussianDiffusion(TinyNet(), schedule, clip_range=(-1.0, 1.0))
    kept = model.sample(x_T=x_T, sampler=DDIMSampler(num_steps=5), differentiable=True)
    kept.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    dropped = model.sample(x_T=x_T, sampler=DDIMSampler(num_steps=5))
    assert not dropped.requires_grad


def test_seeded_sampling_reproduces(schedule):
    model = GaussianDiffusion(TinyNet(), schedule)
    first = model.sample((4, DIM), generator=torch.Generator().manual_seed(7))
    again = model.sample((4, DIM), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, again, rtol=0, atol=0)


class ZeroX0(nn.Module):
    """An x0-predictor that always says 0: every sampler's chain is then linear in its noise."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # device and dtype of samples

    def forward(self, x, t, cond=None, cond_mask=None):
        return torch.zeros_like(x)


@pytest.mark.parametrize(
    "sampler",
    [
        DDPMSampler(),
        DDIMSampler(num_steps=5, eta=1.0),
        DDIMSampler(num_steps=5),
        DPMSolverSampler(num_steps=5),
    ],
    ids=["ddpm", "ddim-eta1", "ddim", "dpm_solver"],
)
def test_temperature_scales_the_initial_and_every_injected_noise(schedule, sampler):
    """With the chain linear in its noise, a sample at temperature tau is tau times the sample at 1
    from the same draws only if both x_T and each step's noise are scaled."""
    model = GaussianDiffusion(ZeroX0(), schedule, "sample")

    def draw(temperature):
        cold = dataclasses.replace(sampler, temperature=temperature)
        return model.sample((BATCH, DIM), sampler=cold, generator=torch.Generator().manual_seed(3))

    torch.testing.assert_close(draw(0.5), 0.5 * draw(1.0), rtol=1e-12, atol=1e-12)


def test_ddpm_at_temperature_half_is_decision_diffusers_p_sample_loop(schedule):
    """Decision Diffuser's ``p_sample_loop``: ``x = 0.5 randn``, each step ``mean + std · 0.5 randn``."""
    model = GaussianDiffusion(TinyNet(), schedule, "epsilon", clip_range=(-1.0, 1.0))
    generator = torch.Generator().manual_seed(4)
    x = 0.5 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
    for t in reversed(range(T)):
        ab, ab_prev, beta = schedule.alpha_bar(t), schedule.alpha_bar(t - 1), schedule.betas_np[t]
        eps = model.denoiser(x, torch.full((BATCH,), t))
        x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
        mean = beta * math.sqrt(ab_prev) / (1 - ab) * x0 + (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab) * x
        std = math.sqrt(max(beta * (1 - ab_prev) / (1 - ab), 1e-20))
        x = mean + (
            std * 0.5 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64) if t > 0 else 0
        )
    ours = model.sample(
        (BATCH, DIM), sampler=DDPMSampler(temperature=0.5), generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-10)


def test_sampler_config_round_trip():
    for sampler in (
        DDPMSampler(),
        DDIMSampler(num_steps=7, eta=0.3),
        DPMSolverSampler(num_steps=12),
        DDPMSampler(temperature=0.5),
    ):
        assert make_sampler(sampler_config(sampler)) == sampler
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_sampler("euler")


def test_timestep_sequences():
    assert timestep_sequence(100, 4, "trailing") == [99, 74, 49, 24]
    assert timestep_sequence(100, 4, "leading") == [75, 50, 25, 0]
    assert timestep_sequence(5, 5, "trailing") == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 5\]"):
        timestep_sequence(5, 6, "trailing")
