"""Learning-rate multipliers shared by every agent and SynthER: one cosine decay, one linear warm-up.

:class:`~diffgym.algorithm.OfflineAlgorithm` multiplies its base rate by these, both driven by the
gradient steps taken so far (never by the progress of one ``learn`` call), so that a run split into
several ``learn`` calls follows the same curve as one call.

>>> cosine_decay(1.0), cosine_decay(0.5), cosine_decay(0.0)
(1.0, 0.5, 0.0)
>>> [linear_warmup(updates, 4) for updates in range(5)]
[0.25, 0.5, 0.75, 1.0, 1.0]
"""

from __future__ import annotations

import math


def cosine_decay(progress_remaining: float) -> float:
    """``0.5 (1 + cos(π (1 - progress_remaining)))``: 1 at the start, 0 at the end (as PyTorch's
    ``CosineAnnealingLR`` with ``eta_min=0`` over the same span)."""
    return 0.5 * (1.0 + math.cos(math.pi * (1.0 - progress_remaining)))


def linear_warmup(updates: int, warmup_steps: int) -> float:
    """``(updates + 1) / warmup_steps`` up to 1 (the rate of update number ``updates + 1``); 1 when
    ``warmup_steps`` is 0."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (updates + 1) / warmup_steps)
