"""Denoiser networks for the diffusion engine.

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
``make_ema`` wraps any of them in torch's ``AveragedModel`` for an exponential moving average.
"""

import math

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
    "TransformerDenoiser",
    "Upsample1d",
    "make_ema",
]


# ----------------------------------------------------------------------------- helpers


def _check_cond(cond: Tensor | None, cond_dim: int, name: str) -> None:
    """Refuse a cond the network was not built for, or a missing one it needs."""
    if cond_dim == 0 and cond is not None:
        raise ValueError(f"{name} was built with cond_dim=0 and takes no cond")
    if cond_dim > 0 and cond is None:
        raise ValueError(
            f"{name} was built with cond_dim={cond_dim}: pass cond of shape (B, {cond_dim}) "
            "(drop it per sample with cond_mask=False)"
        )


def _mask(v: Tensor, cond_mask: Tensor | None) -> Tensor:
    """Zero the rows of ``v`` (B, ...) whose ``cond_mask`` is False; no-op without a mask."""
    if cond_mask is None:
        return v
    return v * cond_mask.reshape(-1, *([1] * (v.dim() - 1))).to(v.dtype)


def _time_mlp(dim: int, hidden: int) -> nn.Sequential:
    """SinusoidalPosEmb(dim) -> Linear(dim, hidden) -> Mish -> Linear(hidden, dim) (Diffuser, DQL)."""
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, hidden), nn.Mish(), nn.Linear(hidden, dim))


def _cond_mlp(cond_dim: int, dim: int) -> nn.Sequential:
    """Decision Diffuser's return MLP, generalised to ``cond_dim`` inputs: cond -> dim -> 4 dim -> dim."""
    return nn.Sequential(
        nn.Linear(cond_dim, dim), nn.Mish(), nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim)
    )


# ----------------------------------------------------------------------------- time embeddings


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


# ----------------------------------------------------------------------------- MLP denoisers


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
        self.time_mlp = _time_mlp(time_dim, 2 * time_dim)
        layers: list[nn.Module] = []
        width = x_dim + time_dim + cond_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.Mish()]
            width = hidden_dim
        self.body = nn.Sequential(*layers, nn.Linear(width, x_dim))

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, D)``."""
        _check_cond(cond, self.cond_dim, type(self).__name__)
        parts = [x, self.time_mlp(t)]
        if cond is not None:
            parts.append(_mask(cond, cond_mask))
        return self.body(torch.cat(parts, dim=-1))


class _LNResBlock(nn.Module):
    """IDQL's ``MLPResNetBlock``: x + Linear(act(Linear_4x(LayerNorm(Dropout(x)))))."""

    def __init__(self, dim: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.LayerNorm(dim),
            nn.Linear(dim, expansion * dim),
            nn.Mish(),
            nn.Linear(expansion * dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim)`` -> ``(B, dim)``."""
        return x + self.net(x)


class ResidualMLPDenoiser(nn.Module):
    """IDQL's LN-ResNet denoiser (Hansen-Estruch et al. 2023, "IDQL: Implicit Q-Learning as an
    Actor-Critic Method with Diffusion Policies", ``jaxrl5/networks/resnet.py::MLPResNet`` with
    ``use_layer_norm=True``, ``dropout_rate=0.1``, ``num_blocks=3``, Mish), also the residual-MLP
    denoiser of SynthER (Lu et al. 2023) when built wide and deep.

    Shapes: ``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)`` -> ``(B, D)``.

    time: GaussianFourierEmb(time_dim, learnable, scale=0.2) -> Linear(., 2 time_dim) -> Mish
    -> Linear(2 time_dim, 2 time_dim) (IDQL: ``FourierFeatures(64, learnable=True)`` then
    ``MLP((128, 128), mish)``);
    body: concat(x, cond, t_emb) -> Linear(., hidden) -> ``num_blocks`` x [x + Linear(Mish(
    Linear_{expansion*hidden}(LayerNorm(Dropout(x)))))] -> Mish -> Linear(hidden, D).

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
        time_dim: size of the Fourier time features; the time MLP outputs 2 time_dim (64: IDQL).
        dropout: dropout at each block's input, active in train mode only (0.1: IDQL; SynthER 0).
        expansion: inner width multiple of each block (4: IDQL).
        fourier_scale: std of the learned Fourier frequencies' initialisation, in units of step
            index (0.2: IDQL's ``normal(0.2)`` initialiser on raw integer steps).
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
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        time_out = 2 * time_dim
        self.time_mlp = nn.Sequential(
            GaussianFourierEmb(time_dim, scale=fourier_scale, learnable=True),
            nn.Linear(time_dim, time_out),
            nn.Mish(),
            nn.Linear(time_out, time_out),
        )
        self.body = nn.Sequential(
            nn.Linear(x_dim + cond_dim + time_out, hidden_dim),
            *(_LNResBlock(hidden_dim, expansion, dropout) for _ in range(num_blocks)),
            nn.Mish(),
            nn.Linear(hidden_dim, x_dim),
        )

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, D)``."""
        _check_cond(cond, self.cond_dim, type(self).__name__)
        parts = [x]
        if cond is not None:
            parts.append(_mask(cond, cond_mask))
        parts.append(self.time_mlp(t))
        return self.body(torch.cat(parts, dim=-1))


# ----------------------------------------------------------------------------- temporal U-Net


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
            nn.Mish(),
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
        self.emb_proj = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, out_ch * (2 if film else 1)))
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


class _UnetLevel(nn.Module):
    """One U-Net resolution: two residual blocks, then attention (identity when off)."""

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
        self.time_mlp = _time_mlp(dim, 4 * dim)
        self.cond_mlp = _cond_mlp(cond_dim, dim) if cond_dim > 0 else None
        embed_dim = 2 * dim if cond_dim > 0 else dim
        level_args = (embed_dim, kernel_size, film, attention)

        ins = [x_dim, *widths[:-1]]
        self.downs = nn.ModuleList(_UnetLevel(i, o, *level_args) for i, o in zip(ins, widths, strict=True))
        self.downsamples = nn.ModuleList([*(Downsample1d(w) for w in widths[:-1]), nn.Identity()])
        mid = widths[-1]
        self.mid1 = ResidualTemporalBlock(mid, mid, embed_dim, kernel_size, film)
        self.mid_attn = LinearAttention1d(mid) if attention else nn.Identity()
        self.mid2 = ResidualTemporalBlock(mid, mid, embed_dim, kernel_size, film)
        up_pairs = list(zip(widths[1:], widths[:-1], strict=True))[::-1]  # (from, to) coarse -> fine
        self.ups = nn.ModuleList(_UnetLevel(2 * i, o, *level_args) for i, o in up_pairs)
        self.upsamples = nn.ModuleList(Upsample1d(o) for _, o in up_pairs)
        self.final = nn.Sequential(
            Conv1dBlock(widths[0], widths[0], kernel_size), nn.Conv1d(widths[0], x_dim, 1)
        )

    def _embed(self, t: Tensor, cond: Tensor | None, cond_mask: Tensor | None) -> Tensor:
        emb = self.time_mlp(t)
        if self.cond_mlp is None or cond is None:
            return emb
        return torch.cat((emb, _mask(self.cond_mlp(cond), cond_mask)), dim=-1)

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, cond_mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, H, D)``, ``t: (B,)``, ``cond: (B, C)``, ``cond_mask: (B,)`` -> ``(B, H, D)``."""
        _check_cond(cond, self.cond_dim, type(self).__name__)
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
        h = self._mix(0, self.mid2(self.mid_attn(self.mid1(h, emb)), emb))
        for index, (level, up) in enumerate(zip(self.ups, self.upsamples, strict=True), start=1):
            h = up(level(torch.cat((h, self._mix(index, skips.pop())), dim=1), emb))
        return self.final(h).transpose(1, 2)

    def _mix(self, index: int, h: Tensor) -> Tensor:
        """Where subclasses exchange information between samples: the middle features (index 0)
        and the skip the decoder's level ``index - 1`` consumes, ``(B, C, H')``. Identity here."""
        return h


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
        self.time_mlp = _time_mlp(dim, 4 * dim)
        ins = [x_dim, *widths[:-1]]
        self.levels = nn.ModuleList(
            _UnetLevel(i, o, dim, kernel_size, film=False, attention=False)
            for i, o in zip(ins, widths, strict=True)
        )
        self.downsamples = nn.ModuleList(Downsample1d(w) for w in widths)
        self.head = nn.Sequential(
            nn.Linear(widths[-1] + dim, widths[-1]), nn.Mish(), nn.Linear(widths[-1], widths[-1] // 2),
            nn.Mish(), nn.Linear(widths[-1] // 2, 1),
        )  # fmt: skip

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x: (B, H, D)``, ``t: (B,)`` -> ``(B,)``."""
        emb = self.time_mlp(t)
        h = x.transpose(1, 2)
        for level, down in zip(self.levels, self.downsamples, strict=True):
            h = down(level(h, emb))
        return self.head(torch.cat((h.mean(dim=2), emb), dim=1)).squeeze(1)


# ----------------------------------------------------------------------------- transformer


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
        self.time_mlp = _time_mlp(d_model, 4 * d_model)
        self.cond_mlp = _cond_mlp(cond_dim, d_model) if cond_dim > 0 else None
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
        _check_cond(cond, self.cond_dim, type(self).__name__)
        length = x.shape[1]
        if length > self.horizon:
            raise ValueError(f"TransformerDenoiser built with horizon={self.horizon} got H={length}")
        prefix = [self.time_mlp(t)]
        if self.cond_mlp is not None and cond is not None:
            prefix.append(_mask(self.cond_mlp(cond), cond_mask))
        tokens = torch.cat((torch.stack(prefix, dim=1), self.x_emb(x)), dim=1)
        h = self.encoder(tokens + self.pos_emb[:, : self.num_prefix + length])
        return self.head(h[:, self.num_prefix :])


# ----------------------------------------------------------------------------- EMA


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters and buffers.

    Torch's ``AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` and ``use_buffers=True``.
    The copy is primed (``update_parameters`` is called once, which copies the weights), so
    every later ``ema.update_parameters(model)`` computes ``decay * ema + (1 - decay) * model``.
    Its parameters do not require grad. Call it as the model (``ema(x, t, cond)``; the wrapped
    network is ``ema.module``) and put it in ``eval()`` for sampling. Warm-up and update
    frequency (Diffuser: start after 2000 steps, every 10) are the caller's business.

    Args:
        model: the network to track.
        decay: EMA decay in [0, 1] (Diffuser and DQL use 0.995).
    """
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.update_parameters(model)
    ema.requires_grad_(False)
    return ema


def update_ema(ema: AveragedModel, model: nn.Module, step: int, start: int, every: int = 1) -> None:
    """One EMA step of a training loop: copy ``model`` while ``step < start``, then average every
    ``every`` steps (Diffusion-QL: start 1000, every 5; IDQL: every step)."""
    if step < start:
        torch._foreach_copy_(list(ema.module.parameters()), list(model.parameters()))
    elif step % every == 0:
        ema.update_parameters(model)
