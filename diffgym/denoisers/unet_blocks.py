"""Building blocks of the temporal 1-D U-Nets (Janner et al. 2022, "Planning with Diffusion
for Flexible Behavior Synthesis", ``diffuser/models/helpers.py``; FiLM from Chi et al. 2023,
"Diffusion Policy").

All blocks run channels-first over the horizon: features ``(B, C, H)``, conditioning embedding
``emb: (B, embed_dim)``.
"""

import torch
from torch import Tensor, nn

from diffgym.activations import Mish

__all__ = [
    "Conv1dBlock",
    "Downsample1d",
    "LinearAttention1d",
    "ResidualTemporalBlock",
    "UnetLevel",
    "Upsample1d",
]


class Conv1dBlock(nn.Sequential):
    """Conv1d (same padding) -> GroupNorm(8) -> Mish, on ``(B, C, H)`` (Diffuser's ``Conv1dBlock``).

    Args:
        in_ch: input channels.
        out_ch: output channels; divisible by ``groups``.
        kernel_size: odd kernel size.
        groups: GroupNorm groups (8: Diffuser, Diffusion Policy).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int = 8) -> None:
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(groups, out_ch),
            Mish(),
        )


class ResidualTemporalBlock(nn.Module):
    """Two Conv1dBlocks with the conditioning embedding injected between them, plus a residual
    (1x1 conv when the width changes). ``x: (B, in_ch, H)``, ``emb: (B, embed_dim)`` -> ``(B, out_ch, H)``.

    ``film=False``: the embedding (Mish -> Linear) is added as a per-channel bias (Diffuser).
    ``film=True``: it gives per-channel ``scale, bias`` and the block computes ``scale * h + bias``
    (Diffusion Policy's ``ConditionalResidualBlock1D`` with ``cond_predict_scale=True``).

    Args:
        in_ch: input channels.
        out_ch: output channels (multiple of 8).
        embed_dim: size of the conditioning embedding.
        kernel_size: odd kernel size of both convolutions.
        film: FiLM (scale and bias) instead of bias only.
    """

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, kernel_size: int, film: bool) -> None:
        super().__init__()
        self.film = film
        self.block1 = Conv1dBlock(in_ch, out_ch, kernel_size)
        self.block2 = Conv1dBlock(out_ch, out_ch, kernel_size)
        self.emb_proj = nn.Sequential(Mish(), nn.Linear(embed_dim, out_ch * (2 if film else 1)))
        self.residual = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x: (B, in_ch, H)``, ``emb: (B, embed_dim)`` -> ``(B, out_ch, H)``."""
        h = self.block1(x)
        e = self.emb_proj(emb).unsqueeze(-1)
        if self.film:
            scale, bias = e.chunk(2, dim=1)
            h = scale * h + bias
        else:
            h = h + e
        return self.block2(h) + self.residual(x)


class Downsample1d(nn.Conv1d):
    """Halve the length: Conv1d(dim, dim, 3, stride 2, padding 1) (Diffuser).

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, 3, stride=2, padding=1)


class Upsample1d(nn.ConvTranspose1d):
    """Double the length: ConvTranspose1d(dim, dim, 4, stride 2, padding 1) (Diffuser).

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, 4, stride=2, padding=1)


class LinearAttention1d(nn.Module):
    """Diffuser's pre-norm residual linear attention over the time axis, on ``(B, C, H)``:
    ``x + Attn(LayerNorm_C(x))`` with keys softmaxed over time (Shen et al. 2021).

    Args:
        dim: channels.
        heads: attention heads (4: Diffuser).
        dim_head: channels per head (32: Diffuser).
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Conv1d(dim, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Conv1d(heads * dim_head, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H)`` -> ``(B, C, H)``."""
        b, _, n = x.shape
        h = self.norm(x.transpose(1, 2)).transpose(1, 2)
        q, k, v = self.to_qkv(h).reshape(b, 3, self.heads, -1, n).unbind(1)
        context = torch.einsum("bhdn,bhen->bhde", k.softmax(dim=-1), v)
        out = torch.einsum("bhde,bhdn->bhen", context, q * self.scale)
        return x + self.to_out(out.reshape(b, -1, n))


class UnetLevel(nn.Module):
    """One U-Net resolution: two :class:`ResidualTemporalBlock` blocks, then :class:`LinearAttention1d`
    (identity when off). ``x: (B, in_ch, H)``, ``emb: (B, embed_dim)`` -> ``(B, out_ch, H)``.

    Args:
        in_ch: input channels.
        out_ch: output channels (multiple of 8).
        embed_dim: size of the conditioning embedding.
        kernel_size: odd kernel size of the convolutions.
        film: FiLM blocks (Diffusion Policy) instead of additive bias (Diffuser).
        attention: linear attention after the blocks.
    """

    def __init__(
        self, in_ch: int, out_ch: int, embed_dim: int, kernel_size: int, film: bool, attention: bool
    ) -> None:
        super().__init__()
        self.block1 = ResidualTemporalBlock(in_ch, out_ch, embed_dim, kernel_size, film)
        self.block2 = ResidualTemporalBlock(out_ch, out_ch, embed_dim, kernel_size, film)
        self.attn = LinearAttention1d(out_ch) if attention else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``(B, in_ch, H)`` -> ``(B, out_ch, H)``."""
        return self.attn(self.block2(self.block1(x, emb), emb))
