"""One exponential moving average of a network's weights for every model that keeps one.

Diffusion models act from an average of their recent weights rather than from the last ones:
Diffusion-QL and IDQL sample actions from an EMA actor, the planners (Diffuser, Decision Diffuser,
MADiff) plan from an EMA of their trajectory model, Diffusion Policy acts from an EMA with a warm-up
decay, and SynthER generates transitions from one. :class:`EMA` holds the average (``module``) and
how fast it follows (``decay``, an optional warm-up ``power``); :meth:`EMA.update` is the training
loop's per-step call, told when to average (``start``, ``every``) by the algorithm that owns the
step count.

>>> from torch import nn
>>> warm_up = EMA(nn.Linear(2, 1), decay=0.9999, power=0.75)  # Diffusion Policy's
>>> [round(warm_up.decay_at(step), 4) for step in (0, 1, 10, 1000)]
[0.0, 0.4054, 0.8344, 0.9944]
>>> calendar = EMA(nn.Linear(2, 1), decay=0.995)  # copy before step 10, then average every 5 steps
>>> [calendar.decay_at(step, start=10, every=5) for step in (3, 10, 13, 15)]
[0.0, 0.995, None, 0.995]
"""

from __future__ import annotations

import copy
from typing import Generic, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["EMA"]

M = TypeVar("M", bound=nn.Module)


class EMA(nn.Module, Generic[M]):
    """An exponential moving average of ``model``'s parameters; ``module`` is the averaged copy.

    Each training step calls :meth:`update` with the number of updates made before it
    (``step = 0, 1, ...``) and the algorithm's calendar:

    - while ``step < start`` the average copies the model (it does not average the untrained
      start; Diffusion-QL: 1000 steps, Diffuser: 2000);
    - from then on, at every ``every``-th step (``step % every == 0``; Diffuser: 10, Diffusion-QL:
      5), ``average <- decay · average + (1 - decay) · model``;
    - with a warm-up ``power`` (Diffusion Policy's, after ``diffusers.EMAModel``) the decay of the
      ``k``-th averaging step since ``start`` is ``min(decay, 1 - (1 + k)^-power)``: 0 (a copy) at
      ``k = 0``, so the average first spans a few steps and then more (power 0.75, cap 0.9999:
      ~6 steps at k = 10, ~180 at 1000, ~1000 at 10,000).

    Only parameters are averaged; buffers (the noise schedules' constants) stay as copied.
    The copy's parameters do not require grad; call ``module`` for sampling (in ``eval()``).

    Args:
        model: the network to average (copied now).
        decay: the decay, in [0, 1] (Diffuser, MADiff and Diffusion-QL: 0.995; IDQL: 0.999); with
            ``power``, its cap (Diffusion Policy: 0.9999).
        power: the warm-up's power (Diffusion Policy: 0.75); None: a constant ``decay``.
    """

    module: M

    def __init__(self, model: M, decay: float, power: float | None = None) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"the EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.power = decay, power

    def decay_at(self, step: int, start: int = 0, every: int = 1) -> float | None:
        """The decay :meth:`update` applies after ``step`` updates (0: copy), or None: no update then."""
        if step < start:
            return 0.0
        if step % every:
            return None
        if self.power is None:
            return self.decay
        k = (step - start) // every  # averaging steps since start
        return 0.0 if k == 0 else min(self.decay, 1.0 - (1.0 + k) ** -self.power)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, start: int = 0, every: int = 1) -> None:
        """Follow ``model`` after ``step`` updates of it (see the class doc for ``start`` and ``every``)."""
        decay = self.decay_at(step, start, every)
        if decay is None:
            return
        average: list[Tensor] = list(self.module.parameters())
        current: list[Tensor] = list(model.parameters())
        if decay == 0.0:
            torch._foreach_copy_(average, current)
        else:
            torch._foreach_lerp_(average, current, 1.0 - decay)
