"""Step embeddings and the conditioning helpers every denoiser of the package shares.

- :class:`SinusoidalPosEmb`: Vaswani et al. 2017, as Diffuser and Diffusion-QL use it;
  ``t: (B,)`` -> ``(B, dim)``.
- :class:`GaussianFourierEmb`: Tancik et al. 2020 / Song et al. 2021, learned as in IDQL;
  ``t: (B,)`` -> ``(B, dim)``.
- :func:`check_cond`, :func:`mask_cond`, :func:`make_time_mlp`, :func:`make_cond_mlp`: the
  condition check, the classifier-free mask, and the time and condition MLPs of Diffuser and
  Decision Diffuser.
"""

import math

import torch
from torch import Tensor, nn

from diffgym.activations import Mish

__all__ = [
    "GaussianFourierEmb",
    "SinusoidalPosEmb",
    "check_cond",
    "make_cond_mlp",
    "make_time_mlp",
    "mask_cond",
]


def check_cond(cond: Tensor | None, cond_dim: int, name: str) -> None:
    """Refuse a cond the network was not built for, or a missing one it needs.

    Args:
        cond: the ``(B, C)`` condition passed to the network, or None.
        cond_dim: C the network was built with (0: unconditional).
        name: the network's class name, for the message.
    """
    if cond_dim == 0 and cond is not None:
        raise ValueError(f"{name} was built with cond_dim=0 and takes no cond")
    if cond_dim > 0 and cond is None:
        raise ValueError(
            f"{name} was built with cond_dim={cond_dim}: pass cond of shape (B, {cond_dim}) "
            "(drop it per sample with cond_mask=False)"
        )


def mask_cond(v: Tensor, cond_mask: Tensor | None) -> Tensor:
    """Zero the rows of ``v`` (B, ...) whose ``cond_mask`` (B,) is False; no-op without a mask."""
    if cond_mask is None:
        return v
    return v * cond_mask.reshape(-1, *([1] * (v.dim() - 1))).to(v.dtype)


def make_time_mlp(dim: int, hidden: int) -> nn.Sequential:
    """SinusoidalPosEmb(dim) -> Linear(dim, hidden) -> Mish -> Linear(hidden, dim) (Diffuser, DQL).

    ``t: (B,)`` -> ``(B, dim)``.
    """
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, hidden), Mish(), nn.Linear(hidden, dim))


def make_cond_mlp(cond_dim: int, dim: int) -> nn.Sequential:
    """Decision Diffuser's return MLP, generalised to ``cond_dim`` inputs: cond -> dim -> 4 dim -> dim.

    ``cond: (B, cond_dim)`` -> ``(B, dim)``.
    """
    return nn.Sequential(
        nn.Linear(cond_dim, dim), Mish(), nn.Linear(dim, 4 * dim), Mish(), nn.Linear(4 * dim, dim)
    )


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of the step index, as in Diffuser and Diffusion-QL.

    ``t: (B,)`` -> ``(B, dim)``: ``[sin(t f_k), cos(t f_k)]`` with ``f_k = 10000^(-k / (dim/2 - 1))``
    (Vaswani et al. 2017; the exact form of Janner et al. 2022's and Wang et al. 2023's code).
    Works on raw integer indices for any T.

    Args:
        dim: embedding size; even and at least 4.
    """

    freqs: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"SinusoidalPosEmb needs an even dim >= 4, got {dim}")
        half = dim // 2
        freqs = torch.exp(torch.arange(half) * (-math.log(10000.0) / (half - 1)))
        # Constant, so not saved: rebuilt identically at construction.
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """``t: (B,)`` -> ``(B, dim)``."""
        args = t.to(self.freqs.dtype)[:, None] * self.freqs
        return torch.cat((args.sin(), args.cos()), dim=-1)


class GaussianFourierEmb(nn.Module):
    """Gaussian Fourier features of a scalar: ``[cos(2π t w), sin(2π t w)]``, ``w ~ N(0, scale²)``.

    ``t: (B,)`` -> ``(B, dim)``. Tancik et al. 2020 / Song et al. 2021 (score SDE, whose NCSN++
    uses ``scale=16`` on continuous ``t``; hence the default here).

    ``scale`` is in the units of ``t``: for raw integer step indices use a small scale, as
    IDQL does (``learnable=True``, ``scale=0.2``, its ``FourierFeatures``), otherwise neighbouring
    steps get unrelated features. SynthER uses fixed (random) features on EDM's continuous
    noise level; IDQL learns them. Both are available: fixed weights are a saved buffer (so a
    reloaded model gets the same features), learned ones a parameter.

    Args:
        dim: output size; even.
        scale: standard deviation of the frequencies (default 16: Song et al. 2021).
        learnable: train the frequencies (IDQL) instead of keeping them fixed (SynthER, Song et al.).
    """

    weight: Tensor

    def __init__(self, dim: int, scale: float = 16.0, learnable: bool = False) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"GaussianFourierEmb needs an even dim, got {dim}")
        weight = torch.randn(dim // 2) * scale
        if learnable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, t: Tensor) -> Tensor:
        """``t: (B,)`` -> ``(B, dim)``."""
        args = (2 * math.pi) * t.to(self.weight.dtype)[:, None] * self.weight
        return torch.cat((args.cos(), args.sin()), dim=-1)
