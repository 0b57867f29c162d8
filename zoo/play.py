"""Watching a zoo model act: episodes in its env, their returns and score, and optionally a video.

This is what ``diffgym enjoy NAME --episodes N --video out.mp4`` runs (rl-zoo3's ``enjoy.py`` and
``record_video.py`` in one). Single agents play in the Gymnasium env the registry names, seeded as
the card's final evaluation was (its first reset with the card's seed), so the first episodes
replay the card's own; teams play in their PettingZoo env through
:func:`~diffgym.wrappers.evaluate_team`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym import registry as agents
from diffgym.tasks.rendering import choose_headless_gl, rendering_error
from diffgym.wrappers.video import record_video
from diffgym.zoo import find, load, locate, make_env, read_results

#: frames per second of team videos (MPE's render_fps; single agents use their env's)
TEAM_VIDEO_FPS = 10


@dataclass
class Episodes:
    """What :func:`enjoy` saw: each episode's return and length, the score, and the video written."""

    returns: list[float]
    lengths: list[int]
    score: float | None = None
    video: Path | None = None
    plans: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)  # the card's final mean return and score


def enjoy(
    name: str,
    episodes: int = 5,
    video: str | os.PathLike | None = None,
    seed: int | None = None,
    deterministic: bool = True,
    registry: str | os.PathLike | None = None,
    plans: str | os.PathLike | None = None,
) -> Episodes:
    """Play ``episodes`` episodes of zoo model ``name``; with ``video``, write them as a video.

    Args:
        name: the zoo name.
        episodes: how many episodes.
        video: an ``.mp4`` path (teams: also ``.gif``); single agents are recorded by
            :func:`~diffgym.wrappers.record_video` (MuJoCo without a display: see
            :mod:`diffgym.tasks.rendering`).
        seed: the first reset's seed (default: the card's evaluation seed).
        deterministic: ``predict(..., deterministic=...)``.
        registry: the registry file.
        plans: a Diffuser planner on a maze: draw its plans from a start (PNG, :func:`draw_maze_plans`).
    """
    if video is not None:
        choose_headless_gl()  # before any MuJoCo env exists
    entry = find(name, registry)
    if not entry.acts:
        raise ValueError(
            f"{name} is a transition {entry.kind}: it does not act. Make data with it: "
            f"diffgym.wrappers.synthesize_dataset(source, new_id, n, model=zoo.load({name!r}))"
        )
    results = read_results(locate(entry))
    seed = _card_seed(results) if seed is None else seed
    model = load(name, registry=registry)
    env = make_env(name, registry, **({"render_mode": "rgb_array"} if video is not None else {}))
    if agents.get(entry.agent).team:
        returns, lengths = _play_team(model, env, episodes, deterministic, seed, video)
    elif video is not None:
        returns, lengths = record_video(model, env, video, episodes, deterministic, seed)
    else:
        returns, lengths = _play_single(model, env, episodes, deterministic, seed)
    played = Episodes([float(r) for r in returns], [int(n) for n in lengths], card=entry.summary)
    played.score = _score(results, float(np.mean(played.returns)))
    played.video = None if video is None else Path(video)
    if plans is not None:
        played.plans = draw_maze_plans(model, make_env(name, registry), plans, title=f"{name}: 8 plans")
    return played


def _play_single(
    model: Any, env: Any, episodes: int, deterministic: bool, seed: int
) -> tuple[list[float], list[int]]:
    monitored = Monitor(env)
    monitored.reset(seed=seed)
    returns, lengths = evaluate_policy(
        model, monitored, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
    )
    return list(returns), list(lengths)  # type: ignore[arg-type]


def _play_team(
    model: Any, env: Any, episodes: int, deterministic: bool, seed: int, video: str | os.PathLike | None
) -> tuple[list[float], list[int]]:
    """A PettingZoo team through :func:`~diffgym.wrappers.evaluate_team`; frames are grabbed after each
    reset and step (MPE's are small: 700 x 700, 25 steps an episode) and written with imageio."""
    from diffgym.tasks.plotting import write_animation
    from diffgym.wrappers import evaluate_team

    frames: list[np.ndarray] = []

    def grab(joint: Any) -> None:
        try:
            frames.append(np.asarray(joint.render(), dtype=np.uint8))
        except Exception as error:  # OpenGL and its backends raise many kinds
            raise rendering_error(error) from error

    returns, lengths = evaluate_team(
        model,
        env,
        episodes,
        deterministic,
        seed=seed,
        callback=None if video is None else grab,
        return_episode_rewards=True,
    )
    if video is not None:
        write_animation(Path(video), frames, TEAM_VIDEO_FPS)
    return list(returns), list(lengths)  # type: ignore[arg-type]


def draw_maze_plans(
    model: Any,
    env: Any,
    path: str | os.PathLike,
    n_plans: int = 8,
    seed: int = 1,
    denoising: str | os.PathLike | None = None,
    title: str | None = None,
) -> Path:
    """Diffuser's plans on a maze: ``n_plans`` plans sampled from the first observation of ``env``
    (reset with ``seed``) drawn over the walls (PNG), and with ``denoising`` their denoising chain
    (GIF/MP4).

    Raises:
        ValueError: ``model`` is not a Diffuser planner, or ``env`` not a maze with goals.
    """
    import torch

    from diffgym.agents.diffuser import DiffuserPolicy
    from diffgym.tasks.plotting import animate_denoising, plot_maze_plans

    policy = model.policy
    if not isinstance(policy, DiffuserPolicy):
        raise ValueError(f"plans are drawn for Diffuser planners, not {type(model).__name__}")
    policy.set_training_mode(False)
    observation, _ = env.reset(seed=seed)
    if not isinstance(observation, dict) or "desired_goal" not in observation:
        raise ValueError("plans are drawn on maze envs with goals (Dict observations with 'desired_goal')")
    features = policy.features(policy.obs_to_tensor(observation)[0])
    chain: list[np.ndarray] = []

    def record(t: int, x: torch.Tensor) -> None:
        chain.append(policy.raw_states(x)[..., :2].numpy())

    with torch.no_grad():
        plans = policy.sample_plans(features, n_plans, torch.Generator().manual_seed(0), on_step=record)[0]
    start, goal = observation["observation"][:2], observation["desired_goal"]
    xy = policy.raw_states(plans)[..., :2].numpy()
    plot_maze_plans(env, xy, start=start, goal=goal, path=Path(path), title=title or f"{n_plans} plans")
    if denoising is not None:
        animate_denoising(np.stack(chain), env, Path(denoising), start=start, goal=goal)
    return Path(path)


def _card_seed(results: dict[str, Any]) -> int:
    from diffgym.zoo.benchmarks.harness import EVAL_SEED

    return EVAL_SEED + int(results.get("evaluation", {}).get("seed", 0))


def _score(results: dict[str, Any], mean_return: float) -> float | None:
    """The normalised score of ``mean_return``, when the card's metric is the normalised score."""
    reference = results.get("reference")
    if not reference or (results.get("metric") or {}).get("key", "score") != "score":
        return None
    return 100.0 * (mean_return - reference["random"]) / (reference["expert"] - reference["random"])
