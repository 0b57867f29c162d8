"""Watching a zoo model act: episodes in its env, their returns and score, and optionally a video.

This is what ``diffgym enjoy NAME --episodes N --video out.mp4`` runs (rl-zoo3's ``enjoy.py`` and
``record_video.py`` in one). Single agents play in the Gymnasium env the registry names, seeded as
the card's final evaluation was (its first reset with the card's seed), so the first episodes
replay the card's own; teams play in their PettingZoo env through
:func:`~diffgym.wrappers.evaluate_team`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym import registry as agents
from diffgym.tasks.rendering import choose_headless_gl, rendering_error
from diffgym.zoo import find, load, locate, make_env, read_results

#: frames per second of written videos (MuJoCo locomotion runs at 125 steps/s; every frame is kept)
VIDEO_FPS = 30


@dataclass
class Episodes:
    """What :func:`enjoy` saw: each episode's return and length, the score, and the video written."""

    returns: list[float]
    lengths: list[int]
    score: float | None = None
    video: Path | None = None
    frames: int = 0
    card: dict[str, Any] = field(default_factory=dict)  # the card's final mean return and score


def enjoy(
    name: str,
    episodes: int = 5,
    video: str | os.PathLike | None = None,
    seed: int | None = None,
    deterministic: bool = True,
    registry: str | os.PathLike | None = None,
) -> Episodes:
    """Play ``episodes`` episodes of zoo model ``name``; with ``video``, write them as a video.

    Args:
        name: the zoo name.
        episodes: how many episodes.
        video: an ``.mp4`` (or ``.gif``) path; frames come from ``render_mode="rgb_array"`` (MuJoCo
            without a display: see :mod:`diffgym.tasks.rendering`).
        seed: the first reset's seed (default: the card's evaluation seed).
        deterministic: ``predict(..., deterministic=...)``.
        registry: the registry file.
    """
    if video is not None:
        choose_headless_gl()
    entry = find(name, registry)
    results = read_results(locate(entry))
    seed = _card_seed(results) if seed is None else seed
    model = load(name, registry=registry)
    env = make_env(name, registry, **({"render_mode": "rgb_array"} if video is not None else {}))
    frames: list[np.ndarray] = []
    grab = _grabber(env, frames) if video is not None else None
    if agents.get(entry.agent).team:
        from diffgym.wrappers import evaluate_team

        callback = None if grab is None else (lambda joint: grab())
        returns, lengths = evaluate_team(
            model, env, episodes, deterministic, seed=seed, callback=callback, return_episode_rewards=True
        )
    else:
        returns, lengths = _play_single(model, env, episodes, deterministic, seed, grab)
    played = Episodes([float(r) for r in returns], [int(n) for n in lengths], card=entry.summary)
    played.score = _score(results, float(np.mean(played.returns)))
    if video is not None:
        from diffgym.tasks.plotting import write_animation

        played.video = write_animation(Path(video), frames, VIDEO_FPS)
        played.frames = len(frames)
    return played


def _play_single(
    model: Any, env: Any, episodes: int, deterministic: bool, seed: int, grab: Callable[[], None] | None
) -> tuple[list[float], list[int]]:
    monitored = Monitor(env)
    monitored.reset(seed=seed)
    callback = None if grab is None else (lambda local, shared: grab())
    returns, lengths = evaluate_policy(
        model,
        monitored,
        n_eval_episodes=episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
        callback=callback,
    )
    return list(returns), list(lengths)  # type: ignore[arg-type]


def _grabber(env: Any, frames: list[np.ndarray]) -> Callable[[], None]:
    def grab() -> None:
        try:
            frame = env.render()
        except Exception as error:  # OpenGL and its backends raise many kinds
            raise rendering_error(error) from error
        frames.append(np.asarray(frame, dtype=np.uint8))

    return grab


def _card_seed(results: dict[str, Any]) -> int:
    from diffgym.zoo.benchmarks.harness import EVAL_SEED

    return EVAL_SEED + int(results.get("evaluation", {}).get("seed", 0))


def _score(results: dict[str, Any], mean_return: float) -> float | None:
    reference = results.get("reference")
    if not reference:
        return None
    return 100.0 * (mean_return - reference["random"]) / (reference["expert"] - reference["random"])
