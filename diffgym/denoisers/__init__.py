"""Denoiser networks for the diffusion engine, one backbone per module.

Every denoiser is an ``nn.Module`` called as ``model(x, t, cond=None, cond_mask=None)``:

- ``x``: the noisy sample, ``(B, D)`` for the MLPs or ``(B, H, D)`` for the sequence models;
- ``t``: ``(B,)`` diffusion step indices in ``[0, T)``, long (float is accepted too);
- ``cond``: ``(B, C)`` conditioning vector (state, normalised return, observation features),
  required when the network was built with ``cond_dim > 0`` and refused when ``cond_dim == 0``;
- ``cond_mask``: optional ``(B,)`` bool; ``False`` drops the condition for that sample
  (classifier-free guidance). Networks that embed the condition multiply the embedding by the
  mask (as Decision Diffuser does); networks that concatenate the raw condition
  (``MLPDenoiser``, ``ResidualMLPDenoiser``) multiply the raw condition by the mask, so their
  null condition is the zero vector.

The output has the shape of ``x`` (an epsilon or x0 prediction, as the engine decides).
:class:`diffgym.ema.EMA` keeps an exponential moving average of any of them.

Modules: ``embeddings`` (time embeddings, condition helpers), ``mlp`` (Diffusion-QL),
``residual_mlp`` (IDQL, SynthER), ``unet_blocks`` and ``temporal_unet`` (Diffuser, Decision
Diffuser, Diffusion Policy), ``multiagent_unet`` (MADiff), ``value`` (Diffuser's value network),
``transformer`` (Diffusion Policy's encoder-only transformer).

>>> import torch
>>> from diffgym.denoisers import TemporalUnet
>>> net = TemporalUnet(x_dim=3, cond_dim=2, dim=8, dim_mults=(1, 2))
>>> x, t, cond = torch.randn(4, 8, 3), torch.randint(0, 100, (4,)), torch.randn(4, 2)
>>> net(x, t, cond, cond_mask=torch.tensor([True, True, False, True])).shape
torch.Size([4, 8, 3])
"""

from diffgym.denoisers.embeddings import GaussianFourierEmb, SinusoidalPosEmb
from diffgym.denoisers.mlp import MLPDenoiser
from diffgym.denoisers.multiagent_unet import AgentAttention, MultiAgentTemporalUnet
from diffgym.denoisers.residual_mlp import ResidualMLPDenoiser
from diffgym.denoisers.temporal_unet import TemporalUnet
from diffgym.denoisers.transformer import TransformerDenoiser
from diffgym.denoisers.unet_blocks import (
    Conv1dBlock,
    Downsample1d,
    LinearAttention1d,
    ResidualTemporalBlock,
    UnetLevel,
    Upsample1d,
)
from diffgym.denoisers.value import TemporalValueNet

__all__ = [
    "AgentAttention",
    "Conv1dBlock",
    "Downsample1d",
    "GaussianFourierEmb",
    "LinearAttention1d",
    "MLPDenoiser",
    "MultiAgentTemporalUnet",
    "ResidualMLPDenoiser",
    "ResidualTemporalBlock",
    "SinusoidalPosEmb",
    "TemporalUnet",
    "TemporalValueNet",
    "TransformerDenoiser",
    "UnetLevel",
    "Upsample1d",
]
