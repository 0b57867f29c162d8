"""Exponential moving averages of a network's weights (Diffuser, Diffusion-QL, IDQL).

:func:`make_ema` wraps any ``nn.Module`` (a denoiser, an actor) in torch's ``AveragedModel``;
:func:`update_ema` is the per-step update of a training loop, with warm-up and frequency.
"""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["make_ema", "update_ema"]


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
