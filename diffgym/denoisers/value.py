"""Diffuser's value function over noisy trajectories (Janner et al. 2022, "Planning with
Diffusion for Flexible Behavior Synthesis"), for classifier guidance.

Shapes: ``x: (B, H, D)``, ``t: (B,)`` -> ``(B,)``.
"""

import torch
from torch import Tensor, nn

from diffgym.activations import Mish
from diffgym.denoisers.embeddings import make_time_mlp
from diffgym.denoisers.unet_blocks import Downsample1d, UnetLevel
from diffgym.networks import exact_output

__all__ = ["TemporalValueNet"]


class TemporalValueNet(nn.Module):
    """Diffuser's value function over noisy trajectories (``diffuser/models/temporal.py::ValueFunction``):
    the temporal U-Net's encoder, then an MLP on the pooled features and the time embedding.

    Shapes: ``x: (B, H, D)``, ``t: (B,)`` -> ``(B,)``. Any ``H`` works (stride-2 convolutions pad).

    Deliberate difference: Diffuser flattens the last level's ``(channels, H / 2^L)`` features, which
    ties the network to one horizon; this one averages them over the horizon, so a value network
    also serves plans of another length.

    Args:
        x_dim: D, per-step size of the trajectory.
        dim: base width and time-embedding size (32: Diffuser).
        dim_mults: width multipliers per level ((1, 2, 4, 8): Diffuser); every ``dim * m`` divisible by 8.
        kernel_size: odd convolution kernel size (5: Diffuser).
    """

    def __init__(
        self, x_dim: int, dim: int = 32, dim_mults: tuple[int, ...] = (1, 2, 4, 8), kernel_size: int = 5
    ) -> None:
        super().__init__()
        widths = [dim * m for m in dim_mults]
        if any(w % 8 for w in widths):
            raise ValueError(f"TemporalValueNet widths {widths} (dim * dim_mults) must be divisible by 8")
        self.time_mlp = make_time_mlp(dim, 4 * dim)
        ins = [x_dim, *widths[:-1]]
        self.levels = nn.ModuleList(
            UnetLevel(i, o, dim, kernel_size, film=False, attention=False)
            for i, o in zip(ins, widths, strict=True)
        )
        self.downsamples = nn.ModuleList(Downsample1d(w) for w in widths)
        self.head = nn.Sequential(
            nn.Linear(widths[-1] + dim, widths[-1]), Mish(), nn.Linear(widths[-1], widths[-1] // 2),
            Mish(), nn.Linear(widths[-1] // 2, 1),
        )  # fmt: skip

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x: (B, H, D)``, ``t: (B,)`` -> ``(B,)``."""
        emb = self.time_mlp(t)
        h = x.transpose(1, 2)
        for level, down in zip(self.levels, self.downsamples, strict=True):
            h = down(level(h, emb))
        features = torch.cat((h.mean(dim=2), emb), dim=1)
        return exact_output(self.head, features).squeeze(1)  # returns of hundreds: float32 under bf16
