"""Training statistics kept on the device, checked for divergence and averaged every few steps."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class TrainingDivergedError(RuntimeError):
    """A training statistic became NaN, infinite or exploded."""


class TrainingMonitor:
    """Collects per-step statistics without syncing; checks and averages them every few steps.

    A statistic may be missing from some steps (e.g. a delayed actor update).
    """

    def __init__(self, check_every: int, explode_above: float) -> None:
        self.check_every = check_every
        self.explode_above = explode_above
        self._values: dict[str, list[Tensor]] = {}
        self._steps: dict[str, list[int]] = {}
        self._pending = 0
        self.means: dict[str, float] = {}

    def record(self, stats: dict[str, Tensor], step: int) -> None:
        for name, value in stats.items():
            self._values.setdefault(name, []).append(value.detach().float().reshape(()))
            self._steps.setdefault(name, []).append(step)
        self._pending += 1
        if self._pending >= self.check_every:
            self.flush()

    def flush(self) -> None:
        """One device sync: raise on divergence, then keep the means for the logger."""
        if not self._pending:
            return
        names = list(self._values)
        flat = torch.cat([torch.stack(self._values[name]) for name in names]).cpu().numpy()
        columns = np.split(flat, np.cumsum([len(self._values[name]) for name in names])[:-1])
        steps = [self._steps[name] for name in names]
        self._values, self._steps, self._pending = {}, {}, 0
        for name, values, at in zip(names, columns, steps, strict=True):
            bad = ~np.isfinite(values) | (np.abs(values) > self.explode_above)
            if bad.any():
                first = int(np.argmax(bad))
                raise TrainingDivergedError(
                    f"training diverged: {name} = {values[first]:.4g} at gradient step {at[first]} "
                    f"(limit |value| <= {self.explode_above:.3g}). Lower the learning rate, clip "
                    "gradients harder or scale the rewards down."
                )
        self.means = {name: float(values.mean()) for name, values in zip(names, columns, strict=True)}
