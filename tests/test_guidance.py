"""Classifier guidance is Diffuser's x_t nudge: its displacement from a known gradient at every step,
for every sampler and prediction type, and Diffuser's guided DDPM chain step for step."""

import math

import pytest
import torch
from torch import nn

from diffgym.diffusion import GaussianDiffusion
from diffgym.guidance import ClassifierGuidance, Inpainting
from diffgym.samplers import DDIMSampler, DDPMSampler, DPMSolverSampler, posterior_variance
from diffgym.schedules import NoiseSchedule

T, SHAPE = 10, (4, 5, 3)  # (B, H, D)


class RecordingNet(nn.Module):
    """A fixed random network of (x, t) that records the x it is given at each step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(SHAPE[-1] + 1, 32), nn.Tanh(), nn.Linear(32, SHAPE[-1])).double()
        self.seen: list[tuple[int, torch.Tensor]] = []

    def forward(self, x, t, cond=None, cond_mask=None):
        self.seen.append((int(t[0]), x.detach().clone()))
        phase = (t.double() / T).view(-1, 1, 1).expand(*x.shape[:-1], 1)
        return self.net(torch.cat([x, phase], dim=-1))


W = torch.randn(SHAPE[1:], generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def linear_value(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """J(x) = <w, x> per sample: its gradient is w everywhere."""
    return (x * W).flatten(1).sum(dim=1)


def start_inpainting() -> Inpainting:
    values = torch.randn(SHAPE[0], 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    return Inpainting.at(SHAPE, (slice(None), 0, slice(1, 3)), values)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize(
    "sampler",
    [
        DDPMSampler(),
        DDIMSampler(num_steps=4),
        DDIMSampler(num_steps=4, eta=1.0),
        DPMSolverSampler(num_steps=4),
    ],
    ids=["ddpm", "ddim", "ddim-eta1", "dpm_solver"],
)
def test_the_network_sees_x_t_moved_by_n_steps_of_scale_times_posterior_variance_times_grad(
    prediction, sampler
):
    schedule = NoiseSchedule.make("cosine", T)
    net = RecordingNet()
    model = GaussianDiffusion(net, schedule, prediction)
    inpainting = start_inpainting()
    guidance = ClassifierGuidance(linear_value, scale=0.3, stop_grad_below=2, n_guide_steps=2)
    before: list[torch.Tensor] = []  # x_t at each visited step, before guidance
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before.append(inpainting.apply(x_T))
    model.sample(
        x_T=x_T,
        sampler=sampler,
        classifier=guidance,
        inpainting=inpainting,
        generator=torch.Generator().manual_seed(2),
        on_step=lambda t, x: before.append(x.clone()),
    )
    assert len(net.seen) == sampler.steps(T)
    free = ~inpainting.mask
    for (t, seen), x in zip(net.seen, before, strict=False):
        expected = 2 * 0.3 * posterior_variance(schedule, t) * W if t >= 2 else torch.zeros_like(W)
        torch.testing.assert_close((seen - x)[free], expected.expand(SHAPE)[free], rtol=1e-9, atol=1e-12)
        assert torch.equal(seen[inpainting.mask], inpainting.values[inpainting.mask])  # still inpainted
    assert any(t >= 2 for t, _ in net.seen)  # some steps were guided


def test_the_nudge_is_not_the_score_form_epsilon_shift():
    """At T's noisiest step the old ``eps - scale sqrt(1 - ab) grad`` form moved x0 by
    ``scale (1 - ab) / sqrt(ab) grad``; Diffuser's nudge moves x_t by ``2 scale beta~ grad``."""
    schedule = NoiseSchedule.make("cosine", 20)
    t = 19
    ab = schedule.alpha_bar(t)
    old_x0_shift = 0.1 * (1 - ab) / math.sqrt(ab)
    assert old_x0_shift > 12  # a unit gradient at scale 0.1 moved x0 by > 12 per entry
    x = torch.zeros(2, 3, dtype=torch.float64)
    nudged = ClassifierGuidance(lambda x, t: x.sum(dim=1), scale=0.1).nudge(
        x, t, posterior_variance(schedule, t)
    )
    torch.testing.assert_close(nudged, torch.full_like(x, 2 * 0.1 * posterior_variance(schedule, t)))
    assert posterior_variance(schedule, t) < 1


def diffusers_guided_ddpm(model_fn, value, x, inpaint, schedule, scale, t_stopgrad, n_guide_steps, generator):
    """Diffuser's ``p_sample_loop`` with ``n_step_guided_p_sample`` (scale_grad_by_std=True), transcribed."""
    betas = torch.from_numpy(schedule.betas_np)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_var = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
    log_var = torch.log(torch.clamp(posterior_var, min=1e-20))
    coef1 = betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod)
    coef2 = (1 - alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - alphas_cumprod)
    x = inpaint(x)
    for t in reversed(range(schedule.num_timesteps)):
        model_var, model_std = log_var[t].exp(), (0.5 * log_var[t]).exp()
        for _ in range(n_guide_steps):
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(value(x_in, None).sum(), x_in)
            grad = model_var * grad
            if t < t_stopgrad:
                grad = torch.zeros_like(grad)
            x = inpaint(x + scale * grad)
        mean = coef1[t] * model_fn(x, t) + coef2[t] * x
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) if t > 0 else 0
        x = inpaint(mean + model_std * noise)
    return x


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_guided_ddpm_is_diffusers_n_step_guided_p_sample(prediction):
    schedule = NoiseSchedule.make("cosine", T)
    model = GaussianDiffusion(RecordingNet(), schedule, prediction)
    inpainting = start_inpainting()

    def value(x, t):  # a nonlinear value: its gradient changes between the two nudges
        return (torch.tanh(x) * W).flatten(1).sum(dim=1)

    def x0_of(x, t):
        output = model.denoiser(x, torch.full((x.shape[0],), t))
        if prediction == "sample":
            return output
        ab = schedule.alpha_bar(t)
        return (x - math.sqrt(1 - ab) * output) / math.sqrt(ab)

    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = diffusers_guided_ddpm(
        x0_of, value, x_T, inpainting.apply, schedule, 0.5, 2, 2, torch.Generator().manual_seed(3)
    )
    ours = model.sample(
        x_T=x_T,
        classifier=ClassifierGuidance(value, scale=0.5, stop_grad_below=2, n_guide_steps=2),
        inpainting=inpainting,
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-10)
    unguided = model.sample(x_T=x_T, inpainting=inpainting, generator=torch.Generator().manual_seed(3))
    assert (ours - unguided).abs().max() > 1e-3  # the guidance mattered
