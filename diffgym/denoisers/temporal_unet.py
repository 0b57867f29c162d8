"""Diffuser's temporal U-Net (Janner et al. 2022, "Planning with Diffusion for Flexible
Behavior Synthesis"), with Decision Diffuser's condition MLP and Diffusion Policy's FiLM option.

Shapes: ``x: (B, H, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, D)``.
"""

import torch
from torch import Tensor, nn

from diffgym.denoisers.embeddings import check_cond, make_cond_mlp, make_time_mlp, mask_cond
from diffgym.denoisers.unet_blocks import (
    Conv1dBlock,
    Downsample1d,
    LinearAttention1d,
    ResidualTemporalBlock,
    UnetLevel,
    Upsample1d,
)

__all__ = ["TemporalUnet"]


class TemporalUnet(nn.Module):
    """Diffuser's temporal 1-D U-Net over trajectories (Janner et al. 2022, "Planning with Diffusion
    for Flexible Behavior Synthesis", ``diffuser/models/temporal.py::TemporalUnet``).

    Shapes: ``x: (B, H, D)``, ``t: (B,)``, ``cond: (B, C)`` -> ``(B, H, D)``; ``H`` must be a
    multiple of ``2 ** (len(dim_mults) - 1)`` (8 by default). Convolutions run channels-first
    over the horizon.

    Structure (as Diffuser): widths ``dim * m`` for ``m`` in ``dim_mults``; each down level is two
    ``ResidualTemporalBlock``s (+ attention) then ``Downsample1d`` (not on the last level); two
    middle blocks (+ attention between them); each up level concatenates the skip of the same
    resolution, two blocks (+ attention), then ``Upsample1d``; final Conv1dBlock + 1x1 conv to D.
    As in Diffuser, the full-resolution skip of the first level is not used by the decoder.

    Embedding: time ``SinusoidalPosEmb(dim) -> Linear(dim, 4 dim) -> Mish -> Linear(4 dim, dim)``;
    with ``cond_dim > 0`` a cond MLP ``C -> dim -> 4 dim -> dim`` (Decision Diffuser's return MLP,
    Ajay et al. 2023) is multiplied by ``cond_mask`` and concatenated, so blocks see 2 dim.

    Deliberate differences: the cond MLP takes a C-vector rather than DD's scalar return; the
    final Conv1dBlock has ``dim * dim_mults[0]`` channels (Diffuser assumes ``dim_mults[0] == 1``);
    ``film=True`` switches to Diffusion Policy's FiLM blocks (Chi et al. 2023) but keeps this
    embedding (DP concatenates the raw global condition to the time embedding, no cond MLP, and
    uses ``down_dims=(256, 512, 1024)`` and no attention); attention layers are Diffuser's
    linear attention, off by default as in Diffuser.

    Args:
        x_dim: D, per-step size (transition dim: obs + action for Diffuser, obs for DD).
        cond_dim: C, size of the condition vector (return, goal, obs features); 0 for none.
        dim: base width and time-embedding size (32: Diffuser's default; DD uses 128).
        dim_mults: width multipliers per resolution ((1, 2, 4, 8): Diffuser); every ``dim * m``
            must be divisible by 8 (GroupNorm(8)).
        kernel_size: odd convolution kernel size (5: Diffuser and Diffusion Policy).
        film: FiLM conditioning as Diffusion Policy (False: Diffuser's additive bias).
        attention: add Diffuser's linear attention after each level and in the middle (False: Diffuser).
    """

    def __init__(
        self,
        x_dim: int,
        cond_dim: int = 0,
        dim: int = 32,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        kernel_size: int = 5,
        film: bool = False,
        attention: bool = False,
    ) -> None:
        super().__init__()
        widths = [dim * m for m in dim_mults]
        if any(w % 8 for w in widths):
            raise ValueError(f"TemporalUnet widths {widths} (dim * dim_mults) must be divisible by 8")
        if kernel_size % 2 == 0:
            raise ValueError(f"TemporalUnet needs an odd kernel_size, got {kernel_size}")
        self.cond_dim = cond_dim
        self.horizon_multiple = 2 ** (len(widths) - 1)
        self.time_mlp = make_time_mlp(dim, 4 * dim)
        self.cond_mlp = make_cond_mlp(cond_dim, dim) if cond_dim > 0 else None
        self.embed_dim = embed_dim = 2 * dim if cond_dim > 0 else dim
        level_args = (embed_dim, kernel_size, film, attention)

        ins = [x_dim, *widths[:-1]]
        self.downs = nn.ModuleList(UnetLevel(i, o, *level_args) for i, o in zip(ins, widths, strict=True))
        self.downsamples = nn.ModuleList([*(Downsample1d(w) for w in widths[:-1]), nn.Identity()])
        mid = widths[-1]
        self.mid1 = ResidualTemporalBlock(mid, mid, embed_dim, kernel_size, film)
        self.mid_attn = LinearAttention1d(mid) if attention else nn.Identity()
        self.mid2 = ResidualTemporalBlock(mid, mid, embed_dim, kernel_size, film)
        up_pairs = list(zip(widths[1:], widths[:-1], strict=True))[::-1]  # (from, to) coarse -> fine
        self.ups = nn.ModuleList(UnetLevel(2 * i, o, *level_args) for i, o in up_pairs)
        self.upsamples = nn.ModuleList(Upsample1d(o) for _, o in up_pairs)
        self.final = nn.Sequential(
            Conv1dBlock(widths[0], widths[0], kernel_size), nn.Conv1d(widths[0], x_dim, 1)
        )

    def _embed(self, t: Tensor, cond: Tensor | None, cond_mask: Tensor | None) -> Tensor:
        emb = self.time_mlp(t)
        if self.cond_mlp is None or cond is None:
            return emb
        return torch.cat((emb, mask_cond(self.cond_mlp(cond), cond_mask)), dim=-1)

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, H, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, D)``."""
        check_cond(cond, self.cond_dim, type(self).__name__)
        horizon = x.shape[1]
        if horizon % self.horizon_multiple:
            raise ValueError(
                f"TemporalUnet got horizon H={horizon}; with {len(self.downs)} levels H must be a "
                f"multiple of {self.horizon_multiple}"
            )
        emb = self._embed(t, cond, cond_mask)
        h = x.transpose(1, 2)
        skips = []
        for level, down in zip(self.downs, self.downsamples, strict=True):
            h = level(h, emb)
            skips.append(h)
            h = down(h)
        h = self._mix(0, self.mid2(self.mid_attn(self.mid1(h, emb)), emb), emb)
        for index, (level, up) in enumerate(zip(self.ups, self.upsamples, strict=True), start=1):
            h = up(level(torch.cat((h, self._mix(index, skips.pop(), emb)), dim=1), emb))
        return self.final(h).transpose(1, 2)

    def _mix(self, index: int, h: Tensor, emb: Tensor) -> Tensor:
        """Where subclasses exchange information between samples: the middle features (index 0)
        and the skip the decoder's level ``index - 1`` consumes, ``(B, C, H')``, given the blocks'
        embedding ``emb: (B, embed_dim)``. Identity here."""
        return h
