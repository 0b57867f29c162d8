"""MADiff's multi-agent U-Net (Zhu et al. 2023, "MADiff: Offline Multi-agent Learning with
Diffusion Models"): one shared temporal U-Net with attention across agents.

Shapes: ``x: (B, H, n, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, n, D)``.
"""

import math

import torch
from torch import Tensor, nn

from diffgym.denoisers.temporal_unet import TemporalUnet

__all__ = ["AgentAttention", "MultiAgentTemporalUnet"]


class AgentAttention(nn.Module):
    """MADiff's attention across agents (Zhu et al. 2023, "MADiff: Offline Multi-agent Learning with
    Diffusion Models"): each agent's whole feature map ``(C, L)`` is one token; queries and keys are
    1x1-convolved to ``heads x max(C // 16, 1)`` channels, values to ``C`` channels in ``heads`` groups;
    the softmax runs over agents; the result is added back (residual).

    Shapes: ``x: (B, n, C, L)`` -> ``(B, n, C, L)``.

    Args:
        channels: C (divisible by ``heads``).
        heads: attention heads (4: MADiff).
    """

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"AgentAttention needs channels ({channels}) divisible by heads ({heads})")
        self.heads = heads
        key_channels = max(channels // 16, 1)
        self.query = nn.Conv1d(channels, heads * key_channels, 1)
        self.key = nn.Conv1d(channels, heads * key_channels, 1)
        self.value = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, n, C, L)`` -> ``(B, n, C, L)``."""
        b, n, c, length = x.shape
        flat = x.reshape(b * n, c, length)

        def tokens(projection: nn.Conv1d) -> Tensor:  # (B, heads, n, channels per head * L)
            return projection(flat).reshape(b, n, self.heads, -1).transpose(1, 2)

        q, k, v = tokens(self.query), tokens(self.key), tokens(self.value)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, h, n, n)
        mixed = (weights @ v).transpose(1, 2).reshape(b, n, c, length)
        return x + mixed


class MultiAgentTemporalUnet(TemporalUnet):
    """MADiff's denoiser: one :class:`TemporalUnet` shared by every agent, with
    :class:`AgentAttention` across agents on the middle features and on every skip connection
    before the decoder uses it (MADiff's ``SharedConvAttentionDeconv``), so agents coordinate.

    Shapes: ``x: (B, H, n, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, n, D)``;
    every agent gets the same time step and condition. Agents are exchangeable: the network has no
    agent index, so permuting the agents of ``x`` permutes the output.

    Deliberate differences from MADiff: attention is plain (not MADiff's optional temporal attention
    that also embeds time), no LayerNorm option; the condition is the team's (one return for all).

    Args:
        n_agents: n.
        agent_attention: attention across agents (False: independent agents with shared weights,
            the ablation).
        heads: attention heads (4: MADiff).
        x_dim, cond_dim, dim, dim_mults, kernel_size: as :class:`TemporalUnet`.
    """

    def __init__(
        self,
        n_agents: int,
        x_dim: int,
        cond_dim: int = 0,
        dim: int = 32,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        kernel_size: int = 5,
        agent_attention: bool = True,
        heads: int = 4,
    ) -> None:
        super().__init__(x_dim, cond_dim, dim, dim_mults, kernel_size)
        self.n_agents = n_agents
        widths = [dim * m for m in dim_mults]
        mixed_widths = [widths[-1], *widths[1:][::-1]]  # the middle, then the skips in decoder order
        self.agent_attention = nn.ModuleList(
            AgentAttention(width, heads) if agent_attention else nn.Identity() for width in mixed_widths
        )

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, H, n, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, n, D)``."""
        b, horizon, n, d = x.shape
        if n != self.n_agents:
            raise ValueError(
                f"MultiAgentTemporalUnet was built for {self.n_agents} agents, got x {tuple(x.shape)}"
            )

        def per_agent(v: Tensor | None) -> Tensor | None:
            return None if v is None else v.repeat_interleave(n, dim=0)

        rows = x.transpose(1, 2).reshape(b * n, horizon, d)
        out = super().forward(rows, per_agent(t), per_agent(cond), per_agent(cond_mask))  # type: ignore[arg-type]
        return out.reshape(b, n, horizon, d).transpose(1, 2)

    def _mix(self, index: int, h: Tensor) -> Tensor:
        rows, c, length = h.shape
        mixed = self.agent_attention[index](h.reshape(rows // self.n_agents, self.n_agents, c, length))
        return mixed.reshape(rows, c, length)
