"""A small encoder-only transformer denoiser, after Diffusion Policy's
``TransformerForDiffusion`` (Chi et al. 2023) with DiT's in-context conditioning (Peebles & Xie 2023).

Shapes: ``x: (B, H, D)`` with ``H <= horizon``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)``
-> ``(B, H, D)``.
"""

import torch
from torch import Tensor, nn

from diffgym.denoisers.embeddings import check_cond, make_cond_mlp, make_time_mlp, mask_cond

__all__ = ["TransformerDenoiser"]


class TransformerDenoiser(nn.Module):
    """A small encoder-only transformer over a sequence, after the encoder-only ("BERT-like",
    ``time_as_cond=False``) mode of Diffusion Policy's ``TransformerForDiffusion`` (Chi et al. 2023),
    with time and condition as prefix tokens (DiT's "in-context conditioning", Peebles & Xie 2023).

    Shapes: ``x: (B, H, D)`` with ``H <= horizon``, ``t: (B,)``, ``cond: (B, C)`` -> ``(B, H, D)``.

    Tokens: ``[time, cond?, x_1 .. x_H]``; x tokens are ``Linear(D, d_model)``; the time token is
    ``SinusoidalPosEmb(d_model) -> Linear(d_model, 4 d_model) -> Mish -> Linear(4 d_model, d_model)``;
    the cond token is Decision Diffuser's cond MLP, multiplied by ``cond_mask``; a learned
    positional embedding (init N(0, 0.02), as DP) is added to all tokens. Then
    ``nn.TransformerEncoder`` (pre-norm, GELU, feed-forward 4 d_model, no causal mask), a final
    LayerNorm and ``Linear(d_model, D)`` on the x tokens.

    Deliberate differences from DP: DP's main mode is an encoder-decoder with the observation as
    cross-attended memory and a causal mask; its encoder-only mode has no observation condition
    and a bare sinusoidal time token. Defaults are sized for CPU (DP: 8 layers, 4 heads, 256 wide,
    attention dropout 0.3).

    Args:
        x_dim: D, per-token size (action for Diffusion Policy, transition for planners).
        cond_dim: C, size of the condition vector; 0 for none (no cond token).
        horizon: maximum sequence length H (sets the positional table). Keyword-only.
        d_model: token width (128: small CPU default).
        num_layers: encoder layers (4: small CPU default).
        num_heads: attention heads (4: DP).
        dropout: dropout in attention and feed-forward (0.0: DP's embedding dropout).
    """

    def __init__(
        self,
        x_dim: int,
        cond_dim: int = 0,
        *,
        horizon: int,
        d_model: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.horizon = horizon
        self.num_prefix = 2 if cond_dim > 0 else 1
        self.x_emb = nn.Linear(x_dim, d_model)
        self.time_mlp = make_time_mlp(d_model, 4 * d_model)
        self.cond_mlp = make_cond_mlp(cond_dim, d_model) if cond_dim > 0 else None
        self.pos_emb = nn.Parameter(torch.randn(1, self.num_prefix + horizon, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=4 * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, x_dim)

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, H, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, D)``."""
        check_cond(cond, self.cond_dim, type(self).__name__)
        length = x.shape[1]
        if length > self.horizon:
            raise ValueError(f"TransformerDenoiser built with horizon={self.horizon} got H={length}")
        prefix = [self.time_mlp(t)]
        if self.cond_mlp is not None and cond is not None:
            prefix.append(mask_cond(self.cond_mlp(cond), cond_mask))
        tokens = torch.cat((torch.stack(prefix, dim=1), self.x_emb(x)), dim=1)
        h = self.encoder(tokens + self.pos_emb[:, : self.num_prefix + length])
        return self.head(h[:, self.num_prefix :])
