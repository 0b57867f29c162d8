"""The progress bar of offline learning (``learn(..., progress_bar=True)`` and ``diffgym train``):
gradient steps, in seconds per step below one step per second."""

from __future__ import annotations

from typing import TextIO

from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

__all__ = ["StepProgressBar"]


class StepProgressBar(BaseCallback):
    """A progress bar advanced once per callback step (a gradient step offline).

    tqdm's own rate reads ``24.8step/s``, and ``2.50s/step`` below one step per second, where SB3's
    rich bar (``progress_bar=True``) shows ``0 it/s``.

    Args:
        file: where to draw it (default: stderr).
    """

    def __init__(self, file: TextIO | None = None) -> None:
        super().__init__()
        self.file = file
        self.pbar: tqdm | None = None

    def _on_training_start(self) -> None:
        total = self.locals["total_timesteps"] - self.model.num_timesteps
        self.pbar = tqdm(total=total, unit="step", dynamic_ncols=True, file=self.file)

    def _on_step(self) -> bool:
        assert self.pbar is not None
        self.pbar.update(1)
        return True

    def _on_training_end(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
