"""Diffusion-QL's noise-prediction MLP (Wang et al. 2023, "Diffusion Policies as an Expressive
Policy Class for Offline RL").

Shapes: ``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, D)``.
"""

import torch
from torch import Tensor, nn

from diffgym.activations import Mish
from diffgym.denoisers.embeddings import check_cond, make_time_mlp, mask_cond

__all__ = ["MLPDenoiser"]


class MLPDenoiser(nn.Module):
    """Diffusion-QL's noise-prediction MLP (Wang et al. 2023, "Diffusion Policies as an Expressive
    Policy Class for Offline RL", ``agents/model.py::MLP``).

    Shapes: ``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)`` -> ``(B, D)``.

    time: SinusoidalPosEmb(16) -> Linear(16, 32) -> Mish -> Linear(32, 16);
    body: concat(x, t_emb, cond) -> ``num_layers`` x [Linear(., 256), Mish] -> Linear(256, D).

    Differences from the paper's code: ``cond_dim=0`` gives an unconditional network (DQL always
    conditions on the state); ``cond_mask`` multiplies the raw cond, so the null condition of
    classifier-free guidance is the zero vector (DQL has no guidance).

    Args:
        x_dim: D, size of the diffused vector (the action for DQL).
        cond_dim: C, size of the raw condition concatenated to the input (the state for DQL); 0 for none.
        hidden_dim: width of the hidden layers (256: DQL).
        time_dim: size of the time embedding; its MLP is time_dim -> 2 time_dim -> time_dim (16: DQL).
        num_layers: number of hidden Linear+Mish layers (3: DQL).
    """

    def __init__(
        self, x_dim: int, cond_dim: int, hidden_dim: int = 256, time_dim: int = 16, num_layers: int = 3
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.time_mlp = make_time_mlp(time_dim, 2 * time_dim)
        layers: list[nn.Module] = []
        width = x_dim + time_dim + cond_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), Mish()]
            width = hidden_dim
        self.body = nn.Sequential(*layers, nn.Linear(width, x_dim))

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, D)``."""
        check_cond(cond, self.cond_dim, type(self).__name__)
        parts = [x, self.time_mlp(t)]
        if cond is not None:
            parts.append(mask_cond(cond, cond_mask))
        return self.body(torch.cat(parts, dim=-1))
