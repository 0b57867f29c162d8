"""Stop offline learning once its loss has flattened: ``learn(max_steps, callback=StopTrainingOnLossPlateau())``.

SB3 stops on evaluations (``StopTrainingOnNoModelImprovement``); an imitation learner such as Diffusion
Policy is trained "until the loss flattens", which needs no environment.
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback

from diffgym.algorithm import OfflineAlgorithm

__all__ = ["StopTrainingOnLossPlateau", "windows_without_improvement"]


def windows_without_improvement(means: list[float], min_improvement: float) -> int:
    """How many of the last windows in a row did not bring the loss ``min_improvement`` (relative)
    below the best window before them.

    >>> windows_without_improvement([1.0, 0.5, 0.499, 0.498], 0.01)
    2
    >>> windows_without_improvement([1.0, 0.5, 0.499, 0.4], 0.01)
    0
    >>> windows_without_improvement([1.0], 0.01)  # the first window is progress
    0
    """
    best, stale = float("inf"), 0
    for mean in means:
        if best == float("inf") or mean < best - abs(best) * min_improvement:
            stale = 0
        else:
            stale += 1
        best = min(best, mean)
    return stale


class StopTrainingOnLossPlateau(BaseCallback):
    """Stops an offline ``learn`` when a training loss stops falling.

    The callback adds up ``loss`` at every gradient step (on the device: no sync) over windows of
    ``window`` steps of the model's own step count (``_n_updates``: window ``k`` ends at step
    ``k * window``, whatever the ``learn`` calls and checkpoints in between) and reads each window's
    mean once, when it closes. Once ``patience`` windows in a row have not brought that mean
    ``min_improvement`` below the best earlier window's, training stops at the step that closed the
    last one: ``stopped_at`` holds it, and a later ``learn`` with this callback is refused.

    Args:
        window: gradient steps per window.
        min_improvement: the relative fall of a window's mean loss that counts as progress (0.01: 1 %).
        patience: windows in a row without progress before training stops.
        loss: the statistic to watch (e.g. ``"diffusion_loss"``); None: the model's only statistic
            whose name ends in ``loss`` (an error names the choices where there are several).
        verbose: 1 prints when and why training stops.

    The state (window means so far, the open window, the last step seen, where it stopped) is
    :meth:`state_dict`, JSON, which :meth:`load_state_dict` restores to continue a run from a
    checkpoint with the result of an uninterrupted one.
    """

    def __init__(
        self,
        window: int = 2000,
        min_improvement: float = 0.01,
        patience: int = 2,
        loss: str | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if window < 1 or patience < 1:
            raise ValueError(f"window and patience must be at least 1, got {window} and {patience}")
        if not 0 <= min_improvement < 1:
            raise ValueError(f"min_improvement is a fraction in [0, 1), got {min_improvement}")
        self.window, self.min_improvement, self.patience, self.loss = window, min_improvement, patience, loss
        self.windows: list[float] = []  # the mean loss of each closed window
        self.stopped_at: int | None = None
        self.last_step: int | None = None  # the model's step count when the loss was last added
        self._sum = torch.zeros((), dtype=torch.float64)  # the open window's losses (moved to the device)
        self._count = 0  # steps in the open window
        self._names: set[str] = set()  # the statistics seen before the first window closed

    def _on_training_start(self) -> None:
        if not isinstance(self.model, OfflineAlgorithm):
            raise TypeError(
                f"StopTrainingOnLossPlateau watches a diffgym agent's loss, not a {type(self.model).__name__}'s"
            )
        if self.stopped_at is not None:
            raise RuntimeError(
                f"this StopTrainingOnLossPlateau stopped training at gradient step {self.stopped_at}; "
                "train on with a new one"
            )
        if self.last_step is not None and self.model._n_updates < self.last_step:
            raise RuntimeError(
                f"this StopTrainingOnLossPlateau has watched a model up to gradient step {self.last_step}, "
                f"and this one is at step {self.model._n_updates}: one callback per model"
            )
        self._agent = self.model
        self._sum = self._sum.to(self.model.device)

    def _on_step(self) -> bool:
        step, statistics = self._agent._n_updates, self._agent.step_statistics
        if step == self.last_step or not statistics:  # no gradient step since (online: env steps)
            return True
        if not self.windows:  # until the first window closes: which statistics there are
            self._names |= statistics.keys()
        name = self.loss or self._only_loss(self._names)
        if name in statistics:  # a statistic may skip steps (e.g. a delayed actor update)
            self._sum += statistics[name].detach().double()
            self._count += 1
        self.last_step = step
        if step % self.window == 0:
            self._check_name(name, step)
            self._close_window(step)
        return self.stopped_at is None

    def _only_loss(self, names: set[str]) -> str:
        losses = sorted(name for name in names if name.endswith("loss"))
        if len(losses) != 1:
            raise ValueError(
                f"{type(self._agent).__name__} records {sorted(names)}: name the loss to watch "
                "(StopTrainingOnLossPlateau(loss=...)); `diffgym benchmark --until-flat` needs agents with one loss"
            )
        return losses[0]

    def _check_name(self, name: str, step: int) -> None:
        """At a window's end: the loss was there, and (unnamed) it was the only one all window."""
        if not self._count:
            raise ValueError(
                f"no statistic {name!r} in the gradient steps up to {step}; the model records {sorted(self._names)}"
            )
        if self.loss is None:
            self.loss = self._only_loss(self._names)

    def _close_window(self, step: int) -> None:
        self.windows.append(float(self._sum) / self._count)  # the one sync per window
        self._sum.zero_()
        self._count = 0
        stale = windows_without_improvement(self.windows, self.min_improvement)
        if stale >= self.patience:
            self.stopped_at = step
            if self.verbose >= 1:
                print(
                    f"Stopping at gradient step {step}: the mean {self.loss} of {stale} windows of {self.window} "
                    f"steps in a row fell less than {self.min_improvement:.1%} below the best before them "
                    f"(last {self.windows[-1]:.4g}, best {min(self.windows):.4g})"
                )

    def state_dict(self) -> dict[str, Any]:
        return {"windows": list(self.windows), "open_sum": float(self._sum), "open_count": self._count,
                "last_step": self.last_step, "stopped_at": self.stopped_at, "loss": self.loss,
                "names": sorted(self._names)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows = [float(mean) for mean in state["windows"]]
        self._sum = torch.tensor(float(state["open_sum"]), dtype=torch.float64)
        self._count = int(state["open_count"])
        self.last_step, self.stopped_at, self.loss = state["last_step"], state["stopped_at"], state["loss"]
        self._names = set(state["names"])
