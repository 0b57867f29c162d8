"""Planning benchmark: DiffuserPlanner (Diffuser and Decision-Diffuser modes) next to an IQL baseline.

Tasks: the maze2d evaluation tasks (goal fixed at one cell, planned to by inpainting; normalised
with the shared datasets' controller = 100 / random = 0) and hopper-medium (value-guided Diffuser
and return-conditioned Decision Diffuser; D4RL's references). Each run trains on the shared
D4RL-style file, evaluates the final model with ``evaluate_policy`` (which passes the plan state
back, so ``n_action_steps`` of each plan are executed), and writes a JSON under
``zoo/results/planning/``; ``--report`` merges them. ``--latency`` measures planning time per
decision for DDPM and for DDIM / DPM-Solver++ at several step counts, against one U-Net forward
at the same batch; ``--pictures`` draws sampled maze plans and a denoising animation.

    diffgym benchmark planning --tasks maze2d-umaze --agents diffuser iql --steps 6000
    diffgym benchmark planning --latency --pictures --report
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym.agents.diffuser import DiffuserPlanner, DiffuserPolicy
from diffgym.algorithm import OfflineAlgorithm
from diffgym.samplers import make_sampler
from diffgym.scores import get_reference
from diffgym.tasks.mazes import MAZE_TASKS, make_maze_eval_env
from diffgym.tasks.plotting import animate_denoising, plot_maze_plans
from diffgym.zoo.benchmarks.d4rl import DEFAULT_DATA_DIR, MODELS_DIR
from diffgym.agents.baselines import IQL
from diffgym.zoo.benchmarks.report import (
    RESULTS_DIR,
    hardware,
    hardware_line,
    markdown_table,
    median_ms,
    write_json,
    write_report,
)

RUNS_DIR = RESULTS_DIR / "planning"

#: Diffuser's maze2d settings (its config/maze2d.py: T 64, x0-prediction, limits normaliser with x0
#: clipping, action weight 1, no value: the goal is inpainted; one plan per episode followed by a PD
#: controller on the planned states, kp = kd = 1) sized for a CPU: U-Net multipliers (1, 2, 4) instead
#: of (1, 4, 8) (3x cheaper per step), a 2.5x larger learning rate for the short budget, DDIM 16 steps
#: instead of DDPM 64, and the start and goal also given to the U-Net as its condition vector
#: (``endpoint_condition``: at 1k steps it cut the x0 error next to the inpainted start at the noisiest
#: step from 0.59 to 0.19, where inpainting alone had not yet propagated; see the results README).
MAZE_PLANNER: dict[str, Any] = dict(
    learning_rate=5e-4,
    ema_start=500,
    policy_kwargs=dict(
        num_timesteps=64,  # Diffuser maze2d: 64 diffusion steps
        dim=32,
        dim_mults=(1, 2, 4),
        state_key="observation",
        goal_key="desired_goal",
        n_plans=1,  # one plan: no value to choose by
        guide_scale=0.0,
        action_weight=1.0,  # Diffuser maze2d
        normalizer="limits",  # Diffuser maze2d: LimitsNormalizer, clip_denoised=True
        tracking=(1.0, 1.0),  # Diffuser maze2d: a = (p* - p) + (v* - v) toward the next planned state
        endpoint_condition=True,
        sampler={"name": "ddim", "num_steps": 16},
    ),
)
#: Diffuser's locomotion settings (config/locomotion.py: H 32, T 20, dim 32, (1, 2, 4, 8), value-guided
#: with scale 0.1, t_stopgrad 2), with 16 plans per decision instead of 64 and DDIM 5 steps instead of
#: DDPM 20, so that a 1000-step episode plans in about a minute on one core.
HOPPER_DIFFUSER: dict[str, Any] = dict(
    policy_kwargs=dict(
        horizon=32, num_timesteps=20, n_plans=16, sampler={"name": "ddim", "num_steps": 5}, n_action_steps=1
    )
)
#: Decision Diffuser's settings (H 100, T 200, dim 128, (1, 4, 8), w 1.2, p_drop 0.25, x0 clipped to its
#: [-1, 1] normalisation) sized for a CPU: Diffuser's U-Net and horizon, T = 20 (DDPM through all of them),
#: one plan per step, the current state also given to the U-Net with the return (``endpoint_condition``)
#: and x0-prediction instead of ε. After 5k steps the planned s_1 of the ε-model was 0.36 RMS (in [-1, 1]
#: units) from the data's with inpainting alone and 0.24 with the condition, where a step moves the state
#: by 0.06; MADiff's ε-model had diverged at such budgets where x0-prediction did not.
HOPPER_DECISION_DIFFUSER: dict[str, Any] = dict(
    mode="decision_diffuser",
    gamma=0.99,  # DD's discount of the returns-to-go it conditions on
    policy_kwargs=dict(
        horizon=32, num_timesteps=20, n_action_steps=1, endpoint_condition=True, prediction="sample"
    ),
)


class Task(NamedTuple):
    """A benchmark task: its data file, evaluation env, score reference and per-agent settings."""

    file: str
    make_env: Callable[[], gym.Env]
    reference: str  # name for diffgym.scores.get_reference
    agents: dict[str, dict[str, Any]]  # agent -> constructor kwargs


def _maze_task(name: str, horizon: int) -> Task:
    episode_steps = MAZE_TASKS[name].max_episode_steps
    planner_kwargs = {"horizon": horizon, "n_action_steps": episode_steps}  # one plan per episode (Diffuser)
    planner = {**MAZE_PLANNER, "policy_kwargs": {**MAZE_PLANNER["policy_kwargs"], **planner_kwargs}}
    return Task(
        f"maze2d-{name}.hdf5",
        lambda: make_maze_eval_env(name),  # type: ignore[arg-type]
        MAZE_TASKS[name].score_name,
        {"diffuser": planner, "iql": {"expectile": 0.9, "beta": 10.0}},  # IQL's settings for sparse goals
    )


TASKS: dict[str, Task] = {
    "maze2d-umaze": _maze_task("umaze", horizon=128),  # Diffuser: H 128 (umaze), 256 (medium)
    "maze2d-medium": _maze_task("medium", horizon=256),
    "hopper-medium": Task(
        "hopper-medium.hdf5",
        lambda: gym.make("Hopper-v5"),
        "hopper",
        {"diffuser": HOPPER_DIFFUSER, "decision_diffuser": HOPPER_DECISION_DIFFUSER, "iql": {}},
    ),
}
LABELS = {"diffuser": "Diffuser", "decision_diffuser": "Decision Diffuser", "iql": "IQL (baseline)"}


def build(agent: str, task: Task, seed: int, data_dir: Path) -> OfflineAlgorithm:
    kwargs = dict(task.agents[agent])
    policy = (
        "MultiInputPolicy" if isinstance(task.make_env().observation_space, gym.spaces.Dict) else "MlpPolicy"
    )
    cls = IQL if agent == "iql" else DiffuserPlanner
    return cls(policy, task.make_env(), dataset=str(data_dir / task.file), seed=seed, **kwargs)


def run_one(agent: str, task_name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate and time one (agent, task, seed)."""
    task = TASKS[task_name]
    model = build(agent, task, seed, Path(args.data_dir))
    steps = args.baseline_steps if agent == "iql" else args.steps
    name = f"planning_{agent}_{task_name}_s{seed}"
    checkpoints = CheckpointCallback(max(steps // 4, 1), str(MODELS_DIR), name_prefix=name)
    started = time.perf_counter()
    model.learn(steps, callback=checkpoints)
    train_seconds = time.perf_counter() - started
    model.save(MODELS_DIR / name)
    timing = {"train_seconds": train_seconds, "gradient_steps_per_second": steps / train_seconds}
    return evaluate(model, agent, task_name, seed, args.episodes) | timing


def evaluate_checkpoint(agent: str, task_name: str, seed: int, episodes: int) -> dict[str, Any]:
    """Evaluate the latest checkpoint of a run that was stopped before its budget (time limits)."""
    saved = sorted(
        MODELS_DIR.glob(f"planning_{agent}_{task_name}_s{seed}_*_steps.zip"),
        key=lambda path: int(path.stem.split("_")[-2]),
    )
    if not saved:
        raise FileNotFoundError(f"no checkpoint of {agent} on {task_name} (seed {seed}) in {MODELS_DIR}")
    cls = IQL if agent == "iql" else DiffuserPlanner
    model = cls.load(saved[-1], env=TASKS[task_name].make_env())
    record = evaluate(model, agent, task_name, seed, episodes)
    return record | {"checkpoint": saved[-1].name, "train_seconds": None, "gradient_steps_per_second": None}


def evaluate(model: OfflineAlgorithm, agent: str, task_name: str, seed: int, episodes: int) -> dict[str, Any]:
    """Returns of ``episodes`` deterministic episodes, the normalised score and the time per env step."""
    task = TASKS[task_name]
    env = Monitor(task.make_env())
    env.reset(seed=10_000 + seed)
    started = time.perf_counter()
    returns, lengths = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True
    )
    eval_seconds = time.perf_counter() - started
    reference = get_reference(task.reference)
    mean_return = float(np.mean(returns))
    return {
        "agent": agent,
        "task": task_name,
        "seed": seed,
        "gradient_steps": model.num_timesteps,
        "settings": json.loads(json.dumps(task.agents[agent], default=str)),
        "returns": [float(r) for r in returns],  # type: ignore[union-attr]
        "score": 100 * (mean_return - reference.random) / (reference.expert - reference.random),
        "reference": {"random": reference.random, "expert": reference.expert, "source": reference.source},
        "decision_ms": 1e3 * eval_seconds / max(float(np.sum(lengths)), 1.0),  # type: ignore[arg-type]
        "torch_threads": torch.get_num_threads(),
        "hardware": hardware(),
    }


# ----------------------------------------------------------------------------- latency


def planning_latency(policy: DiffuserPolicy, env: gym.Env) -> list[dict[str, Any]]:
    """Time of one decision (``policy.plan`` of one observation) per sampler, and one U-Net forward
    at the decision's batch (``n_plans`` rows, doubled by classifier-free guidance)."""
    observation, _ = env.reset(seed=0)
    features = policy.features(policy.obs_to_tensor(observation)[0])[:, None]
    batch = policy.n_plans * (2 if policy.mode == "decision_diffuser" else 1)
    x = torch.zeros(batch, policy.segment_horizon, policy.x_dim)
    t = torch.zeros(batch, dtype=torch.long)
    unet = policy.ema_model.denoiser
    cond = torch.zeros(batch, unet.cond_dim) if unet.cond_dim else None  # DD's return, endpoint states
    with torch.no_grad():
        forward = median_ms(lambda: unet(x, t, cond), repeats=20)
    T = policy.ema_model.num_timesteps
    configs = [{"name": "ddpm"}] + [
        {"name": name, "num_steps": k} for name in ("ddim", "dpm_solver") for k in (5, 10, 20) if k < T
    ]
    rows = []
    for config in configs:
        policy.sampler = make_sampler(config)
        with torch.no_grad():
            decision = median_ms(lambda: policy.plan(features, None, deterministic=True), repeats=5)
        steps = policy.sampler.steps(T)
        rows.append(
            {"sampler": config, "denoiser_calls": steps, "decision_ms": decision, "forward_ms": forward,
             "decision_over_forward": decision / forward, "decision_over_calls": decision / (steps * forward)}
        )  # fmt: skip
    return rows


def measure_latency(args: argparse.Namespace) -> None:
    """Latency rows for every trained planner (or an untrained one: the time does not depend on weights)."""
    results = []
    for task_name, task in TASKS.items():
        for agent in (a for a in task.agents if a != "iql"):
            saved = MODELS_DIR / f"planning_{agent}_{task_name}_s0.zip"
            model = (
                DiffuserPlanner.load(saved) if saved.exists() else build(agent, task, 0, Path(args.data_dir))
            )
            model.policy.set_training_mode(False)
            rows = planning_latency(model.policy, task.make_env())
            results.append({"task": task_name, "agent": agent, "trained": saved.exists(), "rows": rows})
            print(task_name, agent, [f"{r['sampler']}: {r['decision_ms']:.1f} ms" for r in rows], flush=True)
    write_json(RUNS_DIR / "latency.json", results)


# ----------------------------------------------------------------------------- pictures


def draw_pictures() -> None:
    """For each trained maze planner: 8 plans from one start (PNG) and their denoising (GIF)."""
    for task_name in ("maze2d-umaze", "maze2d-medium"):
        saved = MODELS_DIR / f"planning_diffuser_{task_name}_s0.zip"
        if saved.exists():
            _maze_pictures(task_name, DiffuserPlanner.load(saved).policy)


def _maze_pictures(task_name: str, policy: DiffuserPolicy) -> None:
    env = TASKS[task_name].make_env()
    policy.set_training_mode(False)
    observation, _ = env.reset(seed=1)
    features = policy.features(policy.obs_to_tensor(observation)[0])
    chain: list[np.ndarray] = []

    def record(t: int, x: torch.Tensor) -> None:
        chain.append(policy.raw_states(x)[..., :2].numpy())

    with torch.no_grad():
        plans = policy.sample_plans(features, 8, torch.Generator().manual_seed(0), on_step=record)[0]
    start, goal = observation["observation"][:2], observation["desired_goal"]
    xy = policy.raw_states(plans)[..., :2].numpy()
    title = f"Diffuser: 8 plans on {task_name}"
    plot_maze_plans(env, xy, start=start, goal=goal, path=RESULTS_DIR / f"{task_name}_plans.png", title=title)
    animate_denoising(
        np.stack(chain), env, RESULTS_DIR / f"{task_name}_denoising.gif", start=start, goal=goal
    )


# ----------------------------------------------------------------------------- report


def report() -> Path:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS_DIR.glob("*_s*.json"))]
    latency_file = RUNS_DIR / "latency.json"
    latency = json.loads(latency_file.read_text()) if latency_file.exists() else []
    if not runs and not latency:
        raise FileNotFoundError(f"no runs in {RUNS_DIR}: run the benchmark first")
    return write_report("planning", {"runs": runs, "latency": latency}, _markdown(runs, latency))


def _mean_std(values: list[float]) -> str:
    return f"{values[0]:.1f}" if len(values) == 1 else f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def _markdown(runs: list[dict[str, Any]], latency: list[dict[str, Any]]) -> str:
    rows = []
    for run in sorted(runs, key=lambda r: (list(TASKS).index(r["task"]), list(LABELS).index(r["agent"]))):
        rows.append(
            [run["task"], LABELS[run["agent"]], f"{run['score']:.1f}", f"{np.mean(run['returns']):.1f}",
             f"{len(run['returns'])}", f"{run['gradient_steps']:,}", _rate(run['gradient_steps_per_second']),
             f"{run['decision_ms']:.1f}"]
        )  # fmt: skip
    parts = [
        "# Planning benchmark: DiffuserPlanner next to IQL",
        "Normalised score of the final model, deterministic actions, 1 seed. Maze2d: the README's evaluation "
        "task (goal fixed at one cell), normalised with the noise-free controller = 100 and uniform random = 0 "
        "on this env; hopper-medium: D4RL's references. Data: `../shared/datasets/` (made on this machine).",
        markdown_table(
            [
                "task",
                "agent",
                "score",
                "mean return",
                "episodes",
                "gradient steps",
                "steps / s",
                "ms per env step",
            ],
            rows,
        ),
    ]
    if latency:
        latency_rows = [
            [entry["task"], LABELS[entry["agent"]], _sampler_name(row["sampler"]), row["denoiser_calls"],
             f"{row['decision_ms']:.1f}", f"{row['forward_ms']:.2f}", f"{row['decision_over_forward']:.1f}",
             f"{row['decision_over_calls']:.2f}"]
            for entry in latency for row in entry["rows"]
        ]  # fmt: skip
        parts += [
            "## Planning latency per decision",
            "One decision = planning from one observation (all of its plans in one batch, guidance and "
            "inpainting included), median of 5, 1 torch thread. *forward* = one bare U-Net forward at the "
            "decision's batch; the last column is the overhead per denoiser call (value gradients for "
            "Diffuser's guidance, the value ranking of plans, sampler arithmetic).",
            markdown_table(
                [
                    "task",
                    "agent",
                    "sampler",
                    "denoiser calls",
                    "decision ms",
                    "forward ms",
                    "decision ÷ forward",
                    "decision ÷ (calls × forward)",
                ],
                latency_rows,
            ),
        ]
    first = runs[0] if runs else None
    if first:
        parts.append(f"Hardware: {hardware_line(first['hardware'])}.")
    return "\n\n".join(parts)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sampler_name(config: dict[str, Any]) -> str:
    return config["name"] + (f" {config['num_steps']}" if "num_steps" in config else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffgym benchmark planning", description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--agents", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=6_000, help="gradient steps of each planner")
    parser.add_argument("--baseline-steps", type=int, default=30_000, help="gradient steps of IQL")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="folder of the D4RL-layout files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--latency", action="store_true", help="measure planning latency per sampler")
    parser.add_argument("--pictures", action="store_true", help="draw maze plans and a denoising animation")
    parser.add_argument("--report", action="store_true", help="merge the runs into the report")
    parser.add_argument(
        "--from-checkpoint", action="store_true", help="evaluate the latest checkpoints of stopped runs"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    if not (args.latency or args.pictures or args.report):
        for task in args.tasks:
            for agent in (a for a in args.agents if a in TASKS[task].agents):
                for seed in args.seeds:
                    if args.from_checkpoint:
                        record = evaluate_checkpoint(agent, task, seed, args.episodes)
                    else:
                        record = run_one(agent, task, seed, args)
                    write_json(RUNS_DIR / f"{agent}_{task}_s{seed}.json", record)
                    print(f"{agent} {task} seed {seed}: score {record['score']:.1f}", flush=True)
    if args.latency:
        measure_latency(args)
    if args.pictures:
        draw_pictures()
    print(report().read_text())
    return 0
