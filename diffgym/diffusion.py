"""Gaussian diffusion over tensors of any shape: training loss and guided sampling.

>>> from diffgym.denoisers import MLPDenoiser
>>> model = GaussianDiffusion(MLPDenoiser(x_dim=2, cond_dim=3), NoiseSchedule.make("vp", 5),
...                           clip_range=(-1.0, 1.0))
>>> loss = model.loss(torch.rand(8, 2) * 2 - 1, cond=torch.randn(8, 3))
>>> actions = model.sample((8, 2), cond=torch.randn(8, 3), sampler=DDPMSampler())
>>> actions.shape, bool(actions.abs().max() <= 1)
(torch.Size([8, 2]), True)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from diffgym.guidance import ClassifierFreeGuidance, ClassifierGuidance, Inpainting
from diffgym.samplers import (
    DDPMSampler,
    Prediction,
    Randomness,
    Sampler,
    StepCallback,
    draw_noise,
    gaussian_noise,
    posterior_variance,
)
from diffgym.schedules import NoiseSchedule

PredictionType = Literal["epsilon", "sample"]


class GaussianDiffusion(nn.Module):
    """A denoiser trained to reverse Gaussian noising, and the ways to sample from it.

    Args:
        denoiser: network ``(x_t, t, cond, cond_mask) -> output`` shaped like ``x_t``
            (see :mod:`diffgym.denoisers`).
        schedule: the noise schedule (its T is the number of training steps).
        prediction: what the network predicts: ``"epsilon"`` (the noise; DDPM, Diffusion-QL,
            Diffusion Policy) or ``"sample"`` (the clean x0; Diffuser's locomotion models).
        clip_range: bounds of the data (e.g. ``(-1, 1)`` for normalised actions); the x0
            estimate is clipped to them at every sampling step. None: no clipping.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: NoiseSchedule,
        prediction: PredictionType = "epsilon",
        clip_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        if prediction not in ("epsilon", "sample"):
            raise ValueError(f"prediction must be 'epsilon' or 'sample', got {prediction!r}")
        self.denoiser = denoiser
        self.schedule = schedule
        self.prediction = prediction
        self.clip_range = clip_range

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def loss(
        self,
        x0: Tensor,
        cond: Tensor | None = None,
        *,
        weights: Tensor | None = None,
        cond_drop_prob: float = 0.0,
        inpainting: Inpainting | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Denoising loss, averaged over the batch: a scalar.

        Args:
            x0: (B, ...) clean samples.
            cond: (B, C) conditioning, or None.
            weights: broadcastable to ``x0``'s shape; per-entry loss weights (Diffuser weights
                the first action of a plan by ``action_weight``).
            cond_drop_prob: probability of dropping each sample's condition, to train the
                unconditional model used by classifier-free guidance.
            inpainting: constraints imposed on the noisy input (and on an x0 output), as
                Diffuser trains with its start state fixed.
            generator: source of the step indices and noise.
        """
        batch = x0.shape[0]
        draw_on = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=draw_on).to(x0.device)
        noise = gaussian_noise(tuple(x0.shape), generator, x0.device, x0.dtype)
        x_t = self.schedule.q_sample(x0, t, noise)
        if inpainting is not None:
            x_t = inpainting.apply(x_t)
        cond_mask = None
        if cond_drop_prob > 0:
            draws = torch.rand(batch, generator=generator, device=draw_on)
            cond_mask = (draws >= cond_drop_prob).to(x0.device)
        output = self.denoiser(x_t, t, cond, cond_mask)
        if self.prediction == "sample" and inpainting is not None:
            output = inpainting.apply(output)
        target = noise if self.prediction == "epsilon" else x0
        error = (output - target) ** 2
        if weights is not None:
            error = error * weights
        return error.mean()

    def predict(
        self,
        x: Tensor,
        t: int,
        cond: Tensor | None = None,
        classifier_free: ClassifierFreeGuidance | None = None,
        classifier: ClassifierGuidance | None = None,
        inpainting: Inpainting | None = None,
    ) -> Prediction:
        """The (guided, clipped) clean-sample and noise estimates at step ``t`` and the ``x_t`` they
        are for: ``x`` (B, ...) itself or, with ``classifier`` guidance, ``x`` nudged up the value's
        gradient (``inpainting`` re-imposed after each nudge; see :class:`ClassifierGuidance`)."""
        if classifier is not None:
            project = inpainting.apply if inpainting is not None else None
            x = classifier.nudge(x, t, posterior_variance(self.schedule, t), project)
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        if classifier_free is not None:
            if cond is None:
                raise ValueError("classifier-free guidance needs a condition (cond=...)")
            output = classifier_free.output(self.denoiser, x, t_batch, cond)
        else:
            output = self.denoiser(x, t_batch, cond)
        alpha_bar = self.schedule.alpha_bar(t)
        a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        x0 = (x - s * output) / a if self.prediction == "epsilon" else output
        if self.clip_range is not None:
            x0 = x0.clamp(*self.clip_range)
        return Prediction(x0, (x - a * x0) / s, x)

    def sample(
        self,
        shape: tuple[int, ...] | None = None,
        cond: Tensor | None = None,
        *,
        sampler: Sampler | None = None,
        x_T: Tensor | None = None,
        start_step: int | None = None,
        classifier_free: ClassifierFreeGuidance | None = None,
        classifier: ClassifierGuidance | None = None,
        inpainting: Inpainting | None = None,
        generator: Randomness = None,
        differentiable: bool = False,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """Draw samples by running ``sampler`` from Gaussian noise.

        Args:
            shape: (B, ...) of the samples; or give the starting noise ``x_T`` instead.
            start_step: ``x_T`` is a sample noised only to this training step (e.g. with
                ``schedule.q_sample``); the chain runs from there (warm starts). None: from T - 1.
            cond: (B, C) conditioning, or None.
            sampler: DDPM (the default, all T steps), DDIM or DPM-Solver++; its ``temperature``
                scales the drawn ``x_T`` (not a given one) and the noise its steps inject.
            classifier_free, classifier, inpainting: guidance (see :mod:`diffgym.guidance`).
            generator: source of all noise, for reproducible samples: a ``torch.Generator`` or a
                noise function such as :class:`~diffgym.samplers.TiledNoise`.
            differentiable: keep the autograd graph through the chain (Diffusion-QL's policy
                loss); otherwise sample under ``torch.no_grad``.
            on_step: called with ``(t, x)`` after each step (to record the denoising chain).

        Returns:
            (B, ...) samples.
        """
        sampler = sampler or DDPMSampler()
        if x_T is None:
            if shape is None:
                raise ValueError("give the sample shape or the starting noise x_T")
            parameter = next(self.denoiser.parameters())
            x_T = sampler.temperature * draw_noise(generator, tuple(shape), parameter.device, parameter.dtype)
        project = inpainting.apply if inpainting is not None else None

        def predict(x: Tensor, t: int) -> Prediction:
            return self.predict(x, t, cond, classifier_free, classifier, inpainting)

        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            x = project(x_T) if project is not None else x_T
            return sampler.sample(predict, self.schedule, x, generator, project, on_step, start_step)
