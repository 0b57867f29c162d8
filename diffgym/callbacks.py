"""Stop offline learning once its loss has flattened: ``learn(max_steps, callback=StopTrainingOnLossPlateau())``.

SB3 stops on evaluations (``StopTrainingOnNoModelImprovement``); an imitation learner such as Diffusion
Policy is trained "until the loss flattens", which needs no environment.
"""

from __future__ import annotations

from typing import Any

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

    The callback reads the model's ``training_means`` at each of its ``check_every`` checks (no extra
    device sync) and averages ``loss`` over windows of ``window`` gradient steps (the model's own step
    count, ``_n_updates``, so windows line up across ``learn`` calls and resumed runs). Once
    ``patience`` windows in a row have not brought that mean ``min_improvement`` below the best earlier
    window's, training stops at the check that closed the last one: ``stopped_at`` holds that step.
    A check that falls inside a window counts towards the window it ends in.

    Args:
        window: gradient steps per window; a multiple of the model's ``check_every``.
        min_improvement: the relative fall of a window's mean loss that counts as progress (0.01: 1 %).
        patience: windows in a row without progress before training stops.
        loss: the statistic to watch (e.g. ``"diffusion_loss"``); None: the model's only statistic
            whose name ends in ``loss`` (an error names the choices where there are several).
        verbose: 1 prints when and why training stops.

    The state (window means so far, the open window, where it stopped) is :meth:`state_dict`, JSON,
    which :meth:`load_state_dict` restores to continue a run from a checkpoint.
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
        self._open = [0.0, 0]  # the open window: sum of (block mean x block steps), steps
        self._seen = 0  # the step of the last check read
        self._agent: OfflineAlgorithm

    def _on_training_start(self) -> None:
        if not isinstance(self.model, OfflineAlgorithm):
            raise TypeError(
                f"StopTrainingOnLossPlateau watches a diffgym agent's loss, not a {type(self.model).__name__}'s"
            )
        self._agent = self.model
        if not self._seen:  # a fresh callback: its first block starts where this learn does
            self._seen = self.model._n_updates
        check_every = self.model.check_every
        if self.window % check_every:
            raise ValueError(
                f"window ({self.window}) must be a multiple of the model's check_every ({check_every}): "
                "the loss is read at its checks"
            )

    def _on_step(self) -> bool:
        step, means = self._agent.training_means
        if step <= self._seen or not means:
            return self.stopped_at is None
        block = step - self._seen
        self._open[0] += means[self._loss_name(means)] * block
        self._open[1] += block
        window_closed = step // self.window > self._seen // self.window
        self._seen = step
        if window_closed:
            self._close_window(step)
        return self.stopped_at is None

    def _loss_name(self, means: dict[str, float]) -> str:
        if self.loss is not None:
            if self.loss not in means:
                raise ValueError(f"the model records no statistic {self.loss!r}; it records {sorted(means)}")
            return self.loss
        losses = sorted(name for name in means if name.endswith("loss"))
        if len(losses) != 1:
            raise ValueError(
                f"{type(self._agent).__name__} records {sorted(means)}: name the loss to watch "
                "(StopTrainingOnLossPlateau(loss=...)); `diffgym benchmark --until-flat` needs agents with one loss"
            )
        return losses[0]

    def _close_window(self, step: int) -> None:
        total, steps = self._open
        self.windows.append(total / steps)
        self._open = [0.0, 0]
        stale = windows_without_improvement(self.windows, self.min_improvement)
        if stale >= self.patience:
            self.stopped_at = step
            if self.verbose >= 1:
                print(
                    f"Stopping at gradient step {step}: the mean loss of {stale} windows of {self.window} steps "
                    f"in a row fell less than {self.min_improvement:.1%} below the best before them "
                    f"(last {self.windows[-1]:.4g}, best {min(self.windows):.4g})"
                )

    def state_dict(self) -> dict[str, Any]:
        return {"windows": list(self.windows), "open": list(self._open), "seen": self._seen,
                "stopped_at": self.stopped_at}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows = [float(mean) for mean in state["windows"]]
        self._open = [float(state["open"][0]), int(state["open"][1])]
        self._seen = int(state["seen"])
        self.stopped_at = state["stopped_at"]
