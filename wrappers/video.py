"""One call that records any agent's episodes as one video: Gymnasium's ``RecordVideo`` underneath.

:func:`record_video` plays episodes of a model (anything with SB3's ``predict``) with SB3's
``evaluate_policy`` in an env rendering ``rgb_array`` frames, and writes every frame of every episode
(each reset's first frame included) to one MP4 through ``gymnasium.wrappers.RecordVideo``
(moviepy). Given an env id, it makes the env itself, after picking a headless OpenGL backend for
MuJoCo when there is no display (:func:`~diffgym.tasks.rendering.choose_headless_gl`); a backend
that cannot draw is found by one probe ``render()`` before any episode, with an error that says
what to install. ``diffgym enjoy NAME --video out.mp4`` is this call on a zoo model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.wrappers import RecordVideo
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym.tasks.envs import make_env
from diffgym.tasks.rendering import choose_headless_gl, rendering_error

__all__ = ["record_video"]

#: RecordVideo ends a recording at the next reset unless its length is finite: this keeps one
#: recording across every episode (far more frames than any call records)
_ONE_RECORDING = 10**12


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
        path: the video file (an existing one is replaced only once the new one is written).
        episodes: how many episodes.
        deterministic: ``predict(..., deterministic=...)``.
        seed: the first reset's seed (the episodes then follow as in ``evaluate_policy``).
        fps: frames per second (default: the env's ``render_fps``, else 30).
        env_kwargs: the env's arguments, when ``env`` is an id.

    Returns:
        ``(returns, lengths)`` of the episodes.

    Raises:
        ValueError: the env does not render ``rgb_array`` frames.
        RuntimeError: rendering failed (the message says which OpenGL backend was tried and what to
            install).
    """
    if isinstance(env, str):
        choose_headless_gl()
        env = make_env(env, env_kwargs, render_mode="rgb_array")
    if env.render_mode != "rgb_array":
        raise ValueError(
            f"record_video needs an env made with render_mode='rgb_array', not {env.render_mode!r} "
            "(or pass its id and diffgym makes it)"
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as folder:
        recorder = RecordVideo(
            env,
            str(Path(folder) / "recording"),  # a new folder: RecordVideo warns about existing ones
            episode_trigger=lambda episode: episode == 1,  # episode 0 is the seeding reset below
            video_length=_ONE_RECORDING,
            name_prefix="video",
            fps=fps,
        )
        monitored = Monitor(recorder)
        monitored.reset(seed=seed)
        _probe(recorder)
        returns, lengths = evaluate_policy(
            model,
            monitored,
            n_eval_episodes=episodes,
            deterministic=deterministic,
            return_episode_rewards=True,
        )
        recorder.close()  # writes the one recording
        (video,) = (Path(folder) / "recording").glob("*.mp4")
        shutil.move(video, target)
    return [float(r) for r in returns], [int(n) for n in lengths]  # type: ignore[union-attr]


def _probe(env: gym.Env) -> None:
    """One ``render()`` before any episode, so a GL backend that cannot draw fails with a clear message."""
    try:
        env.unwrapped.render()
    except Exception as error:  # OpenGL and its backends raise many kinds
        raise rendering_error(error) from error
