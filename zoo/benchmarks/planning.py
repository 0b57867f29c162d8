"""Planning benchmark: DiffuserPlanner (Diffuser and Decision-Diffuser modes) next to an IQL baseline.

Tasks: the maze2d evaluation tasks (goal fixed at one cell, planned to by inpainting; normalised
with the shared datasets' controller = 100 / random = 0) and hopper-medium (value-guided Diffuser
and return-conditioned Decision Diffuser; D4RL's references). Settings: ``zoo/hyperparams/``
(``diffuser.yml``, ``decision_diffuser.yml``, ``iql.yml``). The final model is evaluated with
``evaluate_policy``, which passes the plan state back, so ``n_action_steps`` of each plan are
executed. Specific to this suite, per planner run: planning time per decision for DDPM and for
DDIM / DPM-Solver++ at several step counts, against one U-Net forward at the same batch; and, for
Diffuser on a maze (seed 0), sampled plans (``<out>/<task>_plans.png``) and their denoising
(``<out>/<task>_denoising.gif``).

    diffgym benchmark planning --datasets maze2d-umaze --agents diffuser iql
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from diffgym.agents.diffuser import DiffuserPolicy, SingleAgentPlanner
from diffgym.planning import ReturnConditionedPlanner
from diffgym.samplers import make_sampler
from diffgym.tasks.mazes import MAZE_TASKS, make_maze_eval_env, maze_eval_env_spec
from diffgym.zoo.benchmarks.harness import Budget, Contender, Dataset, Report, Run, Suite, env_from_metadata
from diffgym.zoo.benchmarks.report import latency_ms, markdown_table

MAZE_PREFIX = "maze2d-"


def _maze(dataset: Dataset) -> str | None:
    """``"umaze"`` for ``maze2d-umaze``; None for a dataset that is not a maze task."""
    name = dataset.name.removeprefix(MAZE_PREFIX)
    return name if dataset.name.startswith(MAZE_PREFIX) and name in MAZE_TASKS else None


def make_env(dataset: Dataset) -> gym.Env:
    """The maze2d evaluation env of a maze task, else the env its data records."""
    maze = _maze(dataset)
    return env_from_metadata(dataset) if maze is None else make_maze_eval_env(maze)  # type: ignore[arg-type]


def zoo_env(dataset: Dataset) -> dict[str, Any]:
    """The maze2d evaluation env (:func:`make_maze_eval_env`) of a maze task as id and kwargs, else the
    env its data records."""
    maze = _maze(dataset)
    if maze is None:
        return {"id": dataset.info["env_id"], "kwargs": {}}
    env_id, kwargs = maze_eval_env_spec(maze)  # type: ignore[arg-type]
    return {"id": env_id, "kwargs": kwargs}


def reference(dataset: Dataset) -> str:
    """A maze task's own references (controller = 100, random = 0), else the dataset's (D4RL's)."""
    maze = _maze(dataset)
    return dataset.name if maze is None else MAZE_TASKS[maze].score_name


def planning_latency(model: Any, run: Run) -> dict[str, Any]:
    """Time of one decision (``policy.plan`` of one observation) per sampler, and one U-Net forward at
    the decision's batch (``n_plans`` rows, doubled by classifier-free guidance); {} for non-planners."""
    policy = model.policy
    if not isinstance(policy, SingleAgentPlanner):
        return {}
    policy.set_training_mode(False)
    observation, _ = run.make_env().reset(seed=0)
    features = policy.features(policy.obs_to_tensor(observation)[0])[:, None]
    forward = _unet_forward_ms(policy)
    T = policy.ema_model.num_timesteps
    configs = [{"name": "ddpm"}] + [
        {"name": name, "num_steps": k} for name in ("ddim", "dpm_solver") for k in (5, 10, 20) if k < T
    ]
    trained_with, rows = policy.sampler, []
    try:
        for config in configs:
            policy.sampler = make_sampler(config)
            with torch.no_grad():
                decision = latency_ms(lambda: policy.plan(features, None, deterministic=True))
            calls = policy.sampler.steps(T)
            rows.append({"sampler": config, "denoiser_calls": calls, "decision_ms": decision, "forward_ms": forward,
                         "decision_over_forward": decision / forward, "decision_over_calls": decision / (calls * forward)})  # fmt: skip
    finally:
        policy.sampler = trained_with
    return {"rows": rows}


def _unet_forward_ms(policy: SingleAgentPlanner) -> float:
    batch = policy.n_plans * (2 if isinstance(policy, ReturnConditionedPlanner) else 1)
    x = torch.zeros(batch, policy.segment_horizon, policy.x_dim)
    t = torch.zeros(batch, dtype=torch.long)
    unet = policy.ema_model.denoiser
    cond = torch.zeros(batch, unet.cond_dim) if unet.cond_dim else None  # DD's return, endpoint states
    with torch.no_grad():
        return latency_ms(lambda: unet(x, t, cond))


def maze_pictures(model: Any, run: Run) -> dict[str, Any]:
    """For Diffuser on a maze task (seed 0): 8 plans from one start (PNG) and their denoising (GIF)."""
    from diffgym.zoo.play import draw_maze_plans

    if _maze(run.dataset) is None or run.seed != 0 or not isinstance(model.policy, DiffuserPolicy):
        return {}
    out = run.session.out
    plans_path, chain_path = out / f"{run.dataset.name}_plans.png", out / f"{run.dataset.name}_denoising.gif"
    title = f"Diffuser: 8 plans on {run.dataset.name}"
    draw_maze_plans(model, run.make_env(), plans_path, denoising=chain_path, title=title)
    return {"plans": str(plans_path), "denoising": str(chain_path)}


def latency_section(report: Report) -> str:
    rows = [
        [r["config"]["dataset"], report.suite.label(r["config"]["agent"]), _sampler_name(row["sampler"]),
         row["denoiser_calls"], f"{row['decision_ms']:.1f}", f"{row['forward_ms']:.2f}",
         f"{row['decision_over_forward']:.1f}", f"{row['decision_over_calls']:.2f}"]
        for r in report.runs if r["config"]["seed"] == 0
        for row in r["extra"]["planning_latency"].get("rows", [])
    ]  # fmt: skip
    if not rows:
        return ""
    header = ["task", "agent", "sampler", "denoiser calls", "decision ms", "forward ms", "decision ÷ forward",
              "decision ÷ (calls × forward)"]  # fmt: skip
    return "\n\n".join(
        [
            "## Planning latency per decision",
            "One decision = planning from one observation (all of its plans in one batch, guidance and "
            "inpainting included), median by `torch.utils.benchmark`, the trained model of seed 0. *forward* = "
            "one bare U-Net forward at the decision's batch; the last column is the overhead per denoiser call "
            "(value gradients for Diffuser's guidance, the value ranking of plans, sampler arithmetic).",
            markdown_table(header, rows),
        ]
    )


def _sampler_name(config: dict[str, Any]) -> str:
    return config["name"] + (f" {config['num_steps']}" if "num_steps" in config else "")


SUITE = Suite(
    name="planning",
    title="Planning benchmark: DiffuserPlanner next to IQL",
    description=(
        "Normalised score, deterministic actions. Maze2d: the evaluation task of the shared datasets' README "
        "(goal fixed at one cell), normalised with the noise-free controller = 100 and uniform random = 0 on "
        "this env; hopper-medium: D4RL's references. Data: the shared D4RL-layout files (made on this machine)."
    ),
    datasets=("maze2d-umaze", "maze2d-medium", "hopper-medium"),
    agents=(
        Contender("diffuser", title="Diffuser"),
        Contender(
            "diffuser-unguided",
            agent="diffuser",
            overrides=("policy_kwargs.guide_scale=0.0",),
            datasets=("hopper-medium",),
            title="Diffuser (no value guidance)",
        ),
        Contender("decision_diffuser", datasets=("hopper-medium",), title="Decision Diffuser"),
        Contender("iql", title="IQL (baseline)"),
    ),
    budget=Budget(final_episodes=20),
    make_env=make_env,
    zoo_env=zoo_env,
    reference=reference,
    score_data=False,
    measures={"planning_latency": planning_latency, "pictures": maze_pictures},
    sections=(latency_section,),
)
