"""Guidance: steering a diffusion model's samples at sampling time.

Three kinds, each acting at its own place in a reverse step (see ``GaussianDiffusion.sample``):

- :class:`ClassifierFreeGuidance` mixes the conditional and unconditional network outputs
  (Ho & Salimans 2022; Decision Diffuser's return conditioning).
- :class:`ClassifierGuidance` pushes the noise estimate along the gradient of a differentiable
  value of the noisy sample (Dhariwal & Nichol 2021; Diffuser's return guidance).
- :class:`Inpainting` overwrites chosen entries with fixed values after every step (Diffuser's
  start-state and goal conditioning).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ValueFn = Callable[[Tensor, Tensor], Tensor]  # (x_t: (B, ...), t: (B,) long) -> value (B,)


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
    """Shift the noise estimate by ``-scale · sqrt(1 - ab_t) · ∇_x J(x_t, t)``.

    This is the score form of classifier guidance (Dhariwal & Nichol 2021, eq. 14), which works
    with every sampler. Diffuser writes the DDPM mean shift ``mu + scale · Sigma · ∇J``; for
    DDPM the two differ only in the step-dependent factor absorbed by ``scale``.
    ``stop_grad_below`` turns guidance off for the last, nearly clean steps (Diffuser's
    ``t_stopgrad``), where the value's gradient is least reliable.
    """

    value_fn: ValueFn  # differentiable J(x_t, t) -> (B,), trained on noisy samples
    scale: float = 0.1  # guidance strength (Diffuser's ``scale``; 0.1 on locomotion)
    stop_grad_below: int = 0  # no guidance at steps t < stop_grad_below (Diffuser: 2)

    def adjust_eps(self, x: Tensor, t: int, eps: Tensor, alpha_bar: float) -> Tensor:
        """x, eps: (B, ...) at step t -> guided eps."""
        if t < self.stop_grad_below or self.scale == 0:
            return eps
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            (grad,) = torch.autograd.grad(self.value_fn(x_in, t_batch).sum(), x_in)
        return eps - (self.scale * math.sqrt(1 - alpha_bar)) * grad


@dataclass(frozen=True)
class Inpainting:
    """Hard constraints: ``x[mask] = values[mask]`` on the initial noise and after every step.

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
