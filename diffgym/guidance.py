"""Guidance: steering a diffusion model's samples at sampling time.

Three kinds, each acting at its own place in a reverse step (see ``GaussianDiffusion.sample``):

- :class:`ClassifierFreeGuidance` mixes the conditional and unconditional network outputs
  (Ho & Salimans 2022; Decision Diffuser's return conditioning).
- :class:`ClassifierGuidance` moves the noisy sample along the gradient of a differentiable value
  of it before the network sees it (Diffuser's return guidance).
- :class:`Inpainting` overwrites chosen entries with fixed values after every step and nudge (Diffuser's
  start-state and goal conditioning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ValueFn = Callable[[Tensor, Tensor], Tensor]  # (x_t: (B, ...), t: (B,) long) -> value (B,)
ProjectFn = Callable[[Tensor], Tensor]  # (B, ...) -> (B, ...), e.g. Inpainting.apply


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """``out = out_uncond + weight · (out_cond - out_uncond)`` from one doubled-batch forward.

    The model must have been trained with condition dropout (``loss(..., cond_drop_prob=p)``);
    ``weight=1`` is plain conditional sampling, Decision Diffuser uses 1.2.
    """

    weight: float  # guidance weight w; larger steers harder toward the condition

    def output(self, denoiser: nn.Module, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x: (B, ...), t: (B,), cond: (B, C) -> guided network output like x."""
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        both = denoiser(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, cond]), torch.cat([keep, ~keep])
        )
        conditional, unconditional = both.chunk(2)
        return unconditional + self.weight * (conditional - unconditional)


@dataclass(frozen=True)
class ClassifierGuidance:
    """Diffuser's value guidance: before the network sees ``x_t``, nudge it up the value's gradient,
    ``x_t <- project(x_t + scale · beta~_t · ∇_x J(x_t, t))``, ``n_guide_steps`` times.

    This is Diffuser's ``n_step_guided_p_sample`` (Janner et al. 2022, ``scale_grad_by_std=True``;
    locomotion: ``scale=0.1``, ``n_guide_steps=2``, ``t_stopgrad=2``): ``beta~_t`` is DDPM's
    posterior variance at the training step ``t`` (clipped at 1e-20, so t = 0 barely moves; see
    :func:`~diffgym.samplers.posterior_variance`), each nudge re-evaluates the gradient at the nudged
    sample and is followed by the inpainting, no nudge happens at ``t < stop_grad_below``, and the
    network then predicts at the nudged ``x_t``, from which the sampler also steps. The paper writes
    the guided DDPM mean as ``mu + scale · Sigma · ∇J``; its code (followed here) moves ``x_t``.

    The nudge depends only on ``t``, so it is the same for every sampler and prediction type. A
    few-step sampler (DDIM, DPM-Solver++) nudges at the training steps it visits by ``beta~_t`` of
    the full T-step schedule (Diffuser's formula at that t), so ``k`` of ``T`` steps apply ``k`` of
    Diffuser's ``T`` nudges: weaker guidance in total than DDPM's at the same ``scale``.

    ``scale`` is in the units of ``J`` (Diffuser's value regresses raw discounted returns). The
    score form of Dhariwal & Nichol (2021), ``eps - scale · sqrt(1 - ab_t) · ∇J``, is not the same
    guidance: it moves the x0 estimate by ``scale · (1 - ab_t) / sqrt(ab_t) · ∇J``, which explodes
    at the noisiest steps and is orders of magnitude weaker than Diffuser's at the others.
    """

    value_fn: ValueFn  # differentiable J(x_t, t) -> (B,), trained on noisy samples
    scale: float = 0.1  # step size of each nudge (Diffuser's ``scale``; 0.1 on locomotion)
    stop_grad_below: int = 0  # no guidance at steps t < stop_grad_below (Diffuser's t_stopgrad: 2)
    n_guide_steps: int = 2  # gradient steps per denoising step (Diffuser: 2)

    def nudge(self, x: Tensor, t: int, variance: float, project: ProjectFn | None = None) -> Tensor:
        """x: (B, ...) at training step t, variance: ``beta~_t`` -> the guided x_t (B, ...).

        ``project``: the inpainting, re-imposed after each nudge (None: none).
        """
        if t < self.stop_grad_below or self.scale == 0:
            return x
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        for _ in range(self.n_guide_steps):
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.value_fn(x_in, t_batch).sum(), x_in)
            x = x + (self.scale * variance) * grad
            if project is not None:
                x = project(x)
        return x


@dataclass(frozen=True)
class Inpainting:
    """Hard constraints: ``x[mask] = values[mask]`` on the initial noise, after every step and after
    every :class:`ClassifierGuidance` nudge.

    ``mask`` (bool) and ``values`` broadcast to the sample's shape. Example — fix the current
    state at the first step of a (B, H, obs_dim + act_dim) plan:

    >>> x = torch.zeros(2, 4, 3)
    >>> Inpainting.at(x.shape, (slice(None), 0, slice(0, 2)), torch.ones(2, 2)).apply(x)[:, 0]
    tensor([[1., 1., 0.],
            [1., 1., 0.]])
    """

    mask: Tensor  # True where the sample is fixed
    values: Tensor  # the fixed values (read only where mask is True)

    @classmethod
    def at(cls, shape: torch.Size | tuple[int, ...], index: tuple, values: Tensor) -> Inpainting:
        """Fix ``x[index] = values`` in samples of ``shape`` (index as for tensor indexing)."""
        mask = torch.zeros(shape, dtype=torch.bool, device=values.device)
        full = torch.zeros(shape, dtype=values.dtype, device=values.device)
        mask[index] = True
        full[index] = values
        return cls(mask, full)

    def apply(self, x: Tensor) -> Tensor:
        return torch.where(self.mask, self.values.to(x.dtype), x)
