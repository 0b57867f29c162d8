"""IDQL's residual LayerNorm MLP denoiser (Hansen-Estruch et al. 2023, "IDQL: Implicit
Q-Learning as an Actor-Critic Method with Diffusion Policies"), also SynthER's (Lu et al. 2023).

Shapes: ``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, D)``.
"""

import torch
from torch import Tensor, nn

from diffgym.activations import Mish
from diffgym.denoisers.embeddings import GaussianFourierEmb, check_cond, mask_cond

__all__ = ["ResidualMLPDenoiser"]


class _LNResBlock(nn.Module):
    """IDQL's ``MLPResNetBlock``: x + Linear(act(Linear_4x(LayerNorm(Dropout(x)))))."""

    def __init__(self, dim: int, expansion: int, dropout: float, activation: type[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.LayerNorm(dim),
            nn.Linear(dim, expansion * dim),
            activation(),
            nn.Linear(expansion * dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim)`` -> ``(B, dim)``."""
        return x + self.net(x)


class ResidualMLPDenoiser(nn.Module):
    """IDQL's LN-ResNet denoiser (Hansen-Estruch et al. 2023, "IDQL: Implicit Q-Learning as an
    Actor-Critic Method with Diffusion Policies", ``jaxrl5/networks/resnet.py::MLPResNet`` with
    ``use_layer_norm=True``, ``dropout_rate=0.1``, ``num_blocks=3``), also the residual-MLP
    denoiser of SynthER (Lu et al. 2023) when built wide and deep.

    Shapes: ``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)`` -> ``(B, D)``.

    time: GaussianFourierEmb(time_dim, learnable, scale=0.2) -> Linear(., 2 time_dim) -> act
    -> Linear(2 time_dim, 2 time_dim) (IDQL's final ``ddpm_iql_simple``: ``FourierFeatures(128,
    learnable=True)`` then ``MLP((256, 256), swish)``; its paper-era learner: 64 and Mish);
    body: concat(x, cond, t_emb) -> Linear(., hidden) -> ``num_blocks`` x [x + Linear(act(
    Linear_{expansion*hidden}(LayerNorm(Dropout(x)))))] -> act -> Linear(hidden, D).

    Deliberate differences:
    - torch's default initialisation (IDQL uses Xavier-uniform for the input and output layers);
    - ``cond_mask`` multiplies the raw cond (null condition = zero vector; IDQL has no guidance);
    - SynthER's own block is x + Linear(ReLU(x)) (one square Linear, no LayerNorm in its
      shipped config, width 2048 x 6 blocks, no dropout) and it embeds EDM's continuous noise level
      with fixed random Fourier features added after a projection. Here SynthER-style models reuse
      IDQL's block: build with ``hidden_dim`` = the width, ``num_blocks=6``, ``dropout=0`` and
      ``expansion=1`` (two square Linears per block, so about twice SynthER's parameters per
      block; ``expansion=4`` at width 2048 would be ~200M parameters). Time embedding as IDQL.

    Args:
        x_dim: D, size of the diffused vector (action for IDQL, transition for SynthER).
        cond_dim: C, size of the raw condition concatenated to the input (state for IDQL); 0 for none.
        hidden_dim: residual stream width (256: IDQL; SynthER 2048 on GPU).
        num_blocks: number of residual blocks (3: IDQL; SynthER 6).
        time_dim: size of the Fourier time features; the time MLP outputs 2 time_dim (IDQL's final
            code: 128; its paper-era learner: 64).
        dropout: dropout at each block's input, active in train mode only (0.1: IDQL; SynthER 0).
        expansion: inner width multiple of each block (4: IDQL).
        fourier_scale: std of the learned Fourier frequencies' initialisation, in units of step
            index (0.2: IDQL's ``normal(0.2)`` initialiser on raw integer steps).
        activation: the nonlinearity everywhere (IDQL's final code: swish = ``nn.SiLU``; its
            paper-era learner and SynthER-style models here: ``Mish``).
    """

    def __init__(
        self,
        x_dim: int,
        cond_dim: int = 0,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        time_dim: int = 64,
        dropout: float = 0.1,
        expansion: int = 4,
        fourier_scale: float = 0.2,
        activation: type[nn.Module] = Mish,
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        time_out = 2 * time_dim
        self.time_mlp = nn.Sequential(
            GaussianFourierEmb(time_dim, scale=fourier_scale, learnable=True),
            nn.Linear(time_dim, time_out),
            activation(),
            nn.Linear(time_out, time_out),
        )
        self.body = nn.Sequential(
            nn.Linear(x_dim + cond_dim + time_out, hidden_dim),
            *(_LNResBlock(hidden_dim, expansion, dropout, activation) for _ in range(num_blocks)),
            activation(),
            nn.Linear(hidden_dim, x_dim),
        )

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, D)``."""
        check_cond(cond, self.cond_dim, type(self).__name__)
        parts = [x]
        if cond is not None:
            parts.append(mask_cond(cond, cond_mask))
        parts.append(self.time_mlp(t))
        return self.body(torch.cat(parts, dim=-1))
