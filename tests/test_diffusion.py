"""The diffusion engine learns and samples multimodal data; guidance steers it."""

import pytest
import torch

from diffgym.denoisers import MLPDenoiser
from diffgym.diffusion import GaussianDiffusion
from diffgym.guidance import ClassifierFreeGuidance, ClassifierGuidance, Inpainting
from diffgym.samplers import DDIMSampler, DDPMSampler, DPMSolverSampler
from diffgym.schedules import NoiseSchedule

MODES = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
MODE_STD = 0.2
NEAR = 0.6  # a sample within this distance of a mode counts as recovering it


def bimodal(n, generator):
    which = torch.randint(0, 2, (n,), generator=generator)
    return MODES[which] + MODE_STD * torch.randn(n, 2, generator=generator)


def train(model, make_batch, steps, generator):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        x0, cond = make_batch()
        loss = model.loss(x0, cond, cond_drop_prob=0.2 if cond is not None else 0.0, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    return model


@pytest.fixture(scope="module")
def bimodal_model():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # DDPM's linear schedule with T=100; each sampler below runs with its usual step count
    model = GaussianDiffusion(
        MLPDenoiser(x_dim=2, cond_dim=0, hidden_dim=128), NoiseSchedule.make("linear", 100)
    )
    return train(model, lambda: (bimodal(512, generator), None), 3000, generator)


def mode_fractions(samples):
    distances = torch.cdist(samples, MODES)  # (N, 2)
    return [(distances[:, k] < NEAR).float().mean().item() for k in range(len(MODES))]


@pytest.mark.parametrize(
    "sampler",
    [DDPMSampler(), DDIMSampler(num_steps=10), DPMSolverSampler(num_steps=10)],
    ids=lambda s: s.name,
)
def test_each_sampler_recovers_both_modes(bimodal_model, sampler):
    samples = bimodal_model.sample((2000, 2), sampler=sampler, generator=torch.Generator().manual_seed(1))
    left, right = mode_fractions(samples)
    assert left > 0.35 and right > 0.35, (left, right)
    assert left + right > 0.85, (left, right)


def test_a_fitted_gaussian_does_not_recover_the_modes():
    data = bimodal(20_000, torch.Generator().manual_seed(0))
    gaussian = torch.distributions.MultivariateNormal(data.mean(0), torch.cov(data.T))
    left, right = mode_fractions(gaussian.sample((2000,)))
    assert left + right < 0.5, (left, right)


@pytest.mark.parametrize(
    "sampler",
    [DDPMSampler(), DDIMSampler(num_steps=10, eta=0.5), DPMSolverSampler(num_steps=10)],
    ids=lambda s: s.name,
)
def test_inpainted_entries_equal_their_constraint(bimodal_model, sampler):
    fixed = torch.linspace(-3, 3, 64)
    constraint = Inpainting.at((64, 2), (slice(None), 1), fixed)
    samples = bimodal_model.sample((64, 2), sampler=sampler, inpainting=constraint)
    assert torch.equal(samples[:, 1], fixed)


@pytest.mark.parametrize("sampler", [DDPMSampler(), DDIMSampler(num_steps=10)], ids=lambda s: s.name)
def test_classifier_guidance_moves_samples_toward_high_value(bimodal_model, sampler):
    def value(x, t):  # rewards a large first coordinate
        return x[:, 0]

    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
    plain = bimodal_model.sample(x_T=noise, sampler=sampler, generator=torch.Generator().manual_seed(4))
    guided = bimodal_model.sample(
        x_T=noise,
        sampler=sampler,
        classifier=ClassifierGuidance(value, scale=0.2),
        generator=torch.Generator().manual_seed(4),
    )
    assert mode_fractions(guided)[1] > mode_fractions(plain)[1] + 0.15
    assert guided[:, 0].mean() > plain[:, 0].mean() + 0.5
    assert sum(mode_fractions(guided)) > 0.85  # still on the data, not pushed off it


def test_classifier_free_guidance_follows_the_condition():
    generator = torch.Generator().manual_seed(0)

    def batch():
        cond = torch.randint(0, 2, (512, 1), generator=generator).float() * 2 - 1  # -1 or +1
        return MODES[((cond[:, 0] + 1) / 2).long()] + MODE_STD * torch.randn(
            512, 2, generator=generator
        ), cond

    torch.manual_seed(0)
    model = GaussianDiffusion(
        MLPDenoiser(x_dim=2, cond_dim=1, hidden_dim=128), NoiseSchedule.make("linear", 100)
    )
    train(model, batch, 3000, generator)
    want_right = torch.ones(1000, 1)
    sampler = DDIMSampler(num_steps=10)
    unconditional = model.sample(
        (1000, 2), want_right, sampler=sampler, classifier_free=ClassifierFreeGuidance(weight=0.0)
    )
    conditional = model.sample(
        (1000, 2), want_right, sampler=sampler, classifier_free=ClassifierFreeGuidance(1.0)
    )
    guided = model.sample((1000, 2), want_right, sampler=sampler, classifier_free=ClassifierFreeGuidance(2.0))
    assert min(mode_fractions(unconditional)) > 0.25  # the dropped-condition model keeps both modes
    assert mode_fractions(conditional)[1] > 0.85
    assert mode_fractions(guided)[1] >= mode_fractions(conditional)[1] - 0.02


def test_loss_weights_and_prediction_targets():
    schedule = NoiseSchedule.make("linear", 10)
    model = GaussianDiffusion(MLPDenoiser(x_dim=2, cond_dim=0), schedule, prediction="sample")
    x0 = torch.randn(32, 2)
    zero_weight = model.loss(x0, weights=torch.zeros(2), generator=torch.Generator().manual_seed(0))
    assert zero_weight.item() == 0.0
    with pytest.raises(ValueError, match="prediction must be"):
        GaussianDiffusion(MLPDenoiser(x_dim=2, cond_dim=0), schedule, prediction="v")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "sampler", [DDPMSampler(), DDIMSampler(num_steps=10), DPMSolverSampler(num_steps=10)]
)
def test_partial_denoising_from_a_start_step(bimodal_model, sampler):
    """start_step=T-1 is the full chain; a start near 0 only touches up a slightly noised sample."""
    shape = (256, 2)
    full = bimodal_model.sample(shape, sampler=sampler, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    if isinstance(sampler, DDPMSampler):  # the same draws, whether the start is given or implied
        explicit = bimodal_model.sample(
            x_T=noise, start_step=99, sampler=sampler, generator=torch.Generator().manual_seed(2)
        )
        implicit = bimodal_model.sample(
            x_T=noise, sampler=sampler, generator=torch.Generator().manual_seed(2)
        )
        torch.testing.assert_close(explicit, implicit, rtol=0, atol=0)
    t = torch.full((256,), 5, dtype=torch.long)
    slightly_noised = bimodal_model.schedule.q_sample(full, t, noise)
    touched_up = bimodal_model.sample(
        x_T=slightly_noised, start_step=5, sampler=sampler, generator=torch.Generator().manual_seed(3)
    )
    same_mode = (touched_up[:, 0].sign() == full[:, 0].sign()).float().mean()
    assert same_mode > 0.95  # the modes are 4 apart: a touch-up never jumps between them
    fresh = bimodal_model.sample(shape, sampler=sampler, generator=torch.Generator().manual_seed(4))
    assert (touched_up - full).norm(dim=1).median() < 0.5 * (fresh - full).norm(dim=1).median()
    with pytest.raises(ValueError, match="start must be a training step"):
        bimodal_model.sample(x_T=noise, start_step=100, sampler=sampler)
