"""MADiff's multi-agent U-Net (Zhu et al. 2023, "MADiff: Offline Multi-agent Learning with
Diffusion Models"): one shared temporal U-Net with attention across agents.

Shapes: ``x: (B, H, n, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, n, D)``.
"""

import math

import torch
from torch import Tensor, nn

from diffgym.activations import Mish
from diffgym.denoisers.temporal_unet import TemporalUnet

__all__ = ["AgentAttention", "MultiAgentTemporalUnet"]


class AgentAttention(nn.Module):
    """MADiff's attention across agents (Zhu et al. 2023, "MADiff: Offline Multi-agent Learning with
    Diffusion Models", ``diffuser/models/temporal.py::TemporalSelfAttention``): each agent's whole
    feature map ``(C, L)`` is one token; queries and keys are 1x1-convolved to
    ``heads x max(C // 16, 1)`` channels, values to ``C`` channels in ``heads`` groups; the softmax runs
    over agents.

    - **Time-conditioned** (``embed_dim`` given; MADiff's default ``use_temporal_attention=True``):
      each of q, k and v adds a per-channel bias ``Linear(Mish(emb))`` of the embedding the U-Net's
      blocks see (the diffusion step's, concatenated with the masked return condition's), constant
      over the horizon. ``embed_dim=None`` is MADiff's plain ``helpers.py::SelfAttention``.
    - **Residual with a zero gain** (MADiff's ``residual_attn=True``, set in every released config):
      the output is ``x + gain * attention(x)`` with a learned scalar ``gain`` initialised to 0, so the
      block is the identity at initialisation and agents start independent.

    Shapes: ``x: (B, n, C, L)``, ``emb: (B, n, E)`` (time-conditioned only) -> ``(B, n, C, L)``.

    Args:
        channels: C (divisible by ``heads``).
        heads: attention heads (4: MADiff).
        embed_dim: E, size of the blocks' embedding (None: attention not conditioned on it).
    """

    def __init__(self, channels: int, heads: int = 4, embed_dim: int | None = None) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"AgentAttention needs channels ({channels}) divisible by heads ({heads})")
        self.heads = heads
        widths = (heads * max(channels // 16, 1),) * 2 + (channels,)  # q, k, v
        self.query, self.key, self.value = (nn.Conv1d(channels, w, 1) for w in widths)
        self.embedding_biases = (
            None
            if embed_dim is None
            else nn.ModuleList(nn.Sequential(Mish(), nn.Linear(embed_dim, w)) for w in widths)
        )
        self.gain = nn.Parameter(torch.zeros(1))  # MADiff's ``gamma``

    @property
    def time_conditioned(self) -> bool:
        return self.embedding_biases is not None

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """``x: (B, n, C, L)``, ``emb: (B, n, E)`` -> ``(B, n, C, L)``."""
        if (emb is None) == self.time_conditioned:
            raise ValueError(
                "this AgentAttention is time-conditioned: pass emb (B, n, E)"
                if self.time_conditioned
                else "this AgentAttention was built without embed_dim and takes no emb"
            )
        b, n, c, length = x.shape
        flat = x.reshape(b * n, c, length)
        projections = (self.query, self.key, self.value)
        q, k, v = (self._tokens(p(flat), index, emb, b, n) for index, p in enumerate(projections))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, h, n, n)
        mixed = (weights @ v).transpose(1, 2).reshape(b, n, c, length)
        return x + self.gain * mixed

    def _tokens(self, h: Tensor, index: int, emb: Tensor | None, b: int, n: int) -> Tensor:
        """``(B n, w, L)`` projections (+ the embedding's bias) -> ``(B, heads, n, w / heads * L)``."""
        if self.embedding_biases is not None and emb is not None:
            h = h + self.embedding_biases[index](emb.reshape(b * n, -1)).unsqueeze(-1)
        return h.reshape(b, n, self.heads, -1).transpose(1, 2)


class MultiAgentTemporalUnet(TemporalUnet):
    """MADiff's denoiser: one :class:`TemporalUnet` shared by every agent, with
    :class:`AgentAttention` across agents on the middle features and on every skip connection
    before the decoder uses it (MADiff's ``SharedConvAttentionDeconv``), so agents coordinate.
    As MADiff's, the attention is time-conditioned by default and starts as the identity (zero gain).

    Shapes: ``x: (B, H, n, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, n, D)``;
    every agent gets the same time step and condition. Agents are exchangeable: the network has no
    agent index, so permuting the agents of ``x`` permutes the output.

    Deliberate differences from MADiff: no LayerNorm option (``use_layer_norm``, off in MADiff's
    configs), no env-time-step embedding (``env_ts_condition``, off in every MADiff config); the
    condition is the team's (one return for all); attention is always residual (MADiff's
    ``residual_attn=False`` replaces the features by the attention's output).

    Args:
        n_agents: n.
        agent_attention: attention across agents (False: independent agents with shared weights,
            the ablation).
        heads: attention heads (4: MADiff).
        temporal_attention: condition the attention on the blocks' embedding (MADiff's default
            ``use_temporal_attention=True``; False: plain attention).
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
        temporal_attention: bool = True,
    ) -> None:
        super().__init__(x_dim, cond_dim, dim, dim_mults, kernel_size)
        self.n_agents = n_agents
        widths = [dim * m for m in dim_mults]
        mixed_widths = [widths[-1], *widths[1:][::-1]]  # the middle, then the skips in decoder order
        embed_dim = self.embed_dim if temporal_attention else None
        self.agent_attention = (
            nn.ModuleList(AgentAttention(width, heads, embed_dim) for width in mixed_widths)
            if agent_attention
            else None
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

    def _mix(self, index: int, h: Tensor, emb: Tensor) -> Tensor:
        """``h: (B n, C, L)``, ``emb: (B n, E)`` -> ``(B n, C, L)`` mixed across each team's agents."""
        if self.agent_attention is None:
            return h
        attention = self.agent_attention[index]
        rows, c, length = h.shape
        teams = rows // self.n_agents
        team_emb = emb.reshape(teams, self.n_agents, -1) if attention.time_conditioned else None
        mixed = attention(h.reshape(teams, self.n_agents, c, length), team_emb)
        return mixed.reshape(rows, c, length)
