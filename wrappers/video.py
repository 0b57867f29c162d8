"""One call that records any agent's episodes as one video, streamed to disk frame by frame.

:func:`record_video` plays episodes of a model (anything with SB3's ``predict``) with SB3's
``evaluate_policy`` in an env rendering ``rgb_array`` frames, and writes every frame of every episode
(each reset's first frame included) to one MP4. Given an env id, it makes the env itself, after
picking a headless OpenGL backend for MuJoCo when there is no display
(:func:`~diffgym.tasks.rendering.choose_headless_gl`); a backend that cannot draw is found by one
probe ``render()`` before any episode, with an error that says what to install. ``diffgym enjoy
NAME --video out.mp4`` is this call on a zoo model.

Why not ``gymnasium.wrappers.RecordVideo``: it keeps every frame of a recording in memory until the
recording ends (5 Hopper episodes of 1000 steps at 480 x 480: 3.5 GB), and closes the env it wraps.
:class:`VideoRecorder` records the same frames (one at each reset and step; ``tests/wrappers/
test_video.py`` checks it against RecordVideo) but hands each one to imageio's ffmpeg writer at
once, so memory stays flat however long the video.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym.tasks.envs import make_env
from diffgym.tasks.rendering import choose_headless_gl, rendering_error

__all__ = ["VideoRecorder", "record_video"]

#: frames per second when the env's metadata names none
DEFAULT_FPS = 30


class VideoRecorder(gym.Wrapper):
    """Writes the wrapped env's ``render()`` after every reset and step to an open video writer.

    The frames go to ``writer`` (anything with ``append_data``) as they are drawn; nothing is kept.
    Closing the recorder does not close the env (the caller owns it) nor the writer.
    """

    def __init__(self, env: gym.Env, writer: Any) -> None:
        super().__init__(env)
        self.writer = writer
        self.frames = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        result = super().reset(**kwargs)
        self._write_frame()
        return result

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        result = super().step(action)
        self._write_frame()
        return result

    def close(self) -> None:
        """Leaves the env open: it belongs to the caller."""

    def _write_frame(self) -> None:
        try:
            frame = self.env.render()
        except Exception as error:  # OpenGL and its backends raise many kinds
            raise rendering_error(error) from error
        self.writer.append_data(np.asarray(frame, dtype=np.uint8))
        self.frames += 1


def record_video(
    model: Any,
    env: gym.Env | str,
    path: str | os.PathLike,
    episodes: int = 1,
    deterministic: bool = True,
    seed: int | None = None,
    fps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[list[float], list[int]]:
    """Play ``episodes`` episodes of ``model`` in ``env`` and write them to the MP4 ``path``.

    Args:
        model: an agent with SB3's ``predict``.
        env: a Gymnasium env made with ``render_mode="rgb_array"``, or an id (made here, with
            ``env_kwargs``; its family registered first, see :func:`~diffgym.tasks.envs.make_env`).
        path: the ``.mp4`` file (an existing one is replaced only once the new one is written).
        episodes: how many episodes.
        deterministic: ``predict(..., deterministic=...)``.
        seed: the first reset's seed (the episodes then follow as in ``evaluate_policy``).
        fps: frames per second (default: the env's ``render_fps``, else 30).
        env_kwargs: the env's arguments, when ``env`` is an id.

    Returns:
        ``(returns, lengths)`` of the episodes.

    Raises:
        ValueError: the path is not an ``.mp4``, or the env does not render ``rgb_array`` frames.
        RuntimeError: rendering failed (the message says which OpenGL backend was tried and what to
            install).
    """
    target = Path(path)
    if target.suffix.lower() != ".mp4":
        raise ValueError(f"record_video writes MP4 files: give a path ending in .mp4, not {target.name!r}")
    if isinstance(env, str):
        choose_headless_gl()
        env = make_env(env, env_kwargs, render_mode="rgb_array")
    if env.render_mode != "rgb_array":
        raise ValueError(
            f"record_video needs an env made with render_mode='rgb_array', not {env.render_mode!r} "
            "(or pass its id and diffgym makes it)"
        )
    fps = fps or env.metadata.get("render_fps") or DEFAULT_FPS
    monitored = Monitor(env)
    monitored.reset(seed=seed)
    _probe(env)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".mp4", dir=target.parent)
    os.close(handle)
    partial = Path(name)  # an existing video stays until the new one is complete
    try:
        writer = imageio.get_writer(partial, format="FFMPEG", fps=fps, macro_block_size=2)  # type: ignore[attr-defined]
        try:
            returns, lengths = evaluate_policy(
                model,
                VideoRecorder(monitored, writer),
                n_eval_episodes=episodes,
                deterministic=deterministic,
                return_episode_rewards=True,
            )
        finally:
            writer.close()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return [float(r) for r in returns], [int(n) for n in lengths]  # type: ignore[union-attr]


def _probe(env: gym.Env) -> None:
    """One ``render()`` before any episode, so a GL backend that cannot draw fails with a clear message."""
    try:
        env.unwrapped.render()
    except Exception as error:  # OpenGL and its backends raise many kinds
        raise rendering_error(error) from error
