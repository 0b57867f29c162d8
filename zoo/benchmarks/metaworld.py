"""Meta-World imitation benchmark: Diffusion Policy against MLP behaviour cloning.

Both learn from the same scripted demonstrations (``<data dir>/metaworld-<task>.hdf5``, 50 episodes
per task), see the same observations (the last two) and are evaluated in the same run on the same
``--final-episodes`` episodes per task, with the scripted expert itself as a reference (a study):

- **Tasks**: the six of the shared data folder (reach, push, drawer-close, button-press-topdown,
  door-open, pick-place) and six harder ones (assembly, disassemble, peg-insert-side, hammer,
  basketball, shelf-place). A task whose file the data folder lacks gets the recipe's
  (``diffgym data make-metaworld``: the scripted expert, 50 episodes, seed 0), made once into
  ``<out>/metaworld/data/`` (its metadata records the expert's success rate).

- **Episodes**: ``Meta-World/MT1`` with Meta-World's own random reset switched on, so every
  episode draws fresh object and goal positions (MT1 alone cycles through 50 fixed ones, none of
  them in the demonstrations); episode ``i`` is seeded ``10_000 + seed + i``
  (``env.unwrapped.seed``: Meta-World ignores ``reset(seed=...)``). Up to 500 steps; a
  **success** if ``info["success"]`` is ever 1, and the episode ends at its first success (later
  steps cannot change the outcome). The metric is the success rate.
- **Demonstrations** are cut ``suite:keep_after_success`` steps after their first success (null:
  whole): the files run 500 steps of which 80–90 % come after success, where the evaluation never
  goes (Diffusion Policy's own datasets end at task completion). A demonstration that never succeeds
  is kept whole, and counted (the records' ``data.demos_without_success``); the mean first-success
  step is over the succeeding ones. Both agents train on the same cut data.
- **Budget and settings**: ``zoo/hyperparams/{diffusion_policy,bc}.yml``, key ``metaworld``.
- **Diffusion Policy** samples its chunks with fresh noise (``deterministic=False``, as DP
  evaluates); with ``suite:ensemble`` it is also evaluated with ACT's temporal ensembling (a chunk
  every step). BC's action is deterministic.
- **Latency**: ``predict`` time per env step at batch 1 with chunking (a chunk every
  ``n_action_steps`` = 8 steps) and without (a chunk every step), as multiples of one bare U-Net
  forward at batch 1, measured in the same run.

    diffgym benchmark metaworld --datasets metaworld-reach-v3 metaworld-push-v3
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import torch
from filelock import FileLock

from diffgym.agents.diffusion_policy import DiffusionPolicy
from diffgym.data import import_d4rl
from diffgym.tasks.metaworld import make_demonstrations, make_task_env, reset_episode, scripted_expert
from diffgym.zoo.benchmarks.harness import (
    EVAL_SEED,
    Budget,
    Contender,
    Dataset,
    Evaluation,
    Metric,
    Report,
    Run,
    Session,
    Suite,
)
from diffgym.zoo.benchmarks.report import latency_ms, log, markdown_table

PREFIX = "metaworld-"  # dataset name = PREFIX + Meta-World task
#: tasks of the shared data folder (``metaworld-<task>.hdf5``)
SHARED_TASKS = (
    "reach-v3",
    "push-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "door-open-v3",
    "pick-place-v3",
)
#: harder tasks, whose files the recipe makes where the data folder has none (see :func:`demonstrations_file`)
MADE_TASKS = (
    "assembly-v3",
    "disassemble-v3",
    "peg-insert-side-v3",
    "hammer-v3",
    "basketball-v3",
    "shelf-place-v3",
)
MAX_EPISODE_STEPS = 500
ENSEMBLE_COEFF = 0.01  # ACT's temporal-ensembling coefficient m
LATENCY_STEPS = 64  # env steps over which predict is timed per step

#: an agent as the evaluation sees it: (observations (n, 39), state, episode_start (n,)) -> (actions (n, 4), state)
Actor = Callable[[np.ndarray, Any, np.ndarray], tuple[np.ndarray, Any]]


def task_of(dataset: Dataset) -> str:
    return task_of_name(dataset.name)


# ----------------------------------------------------------------------------- environment


def make_env(dataset: Dataset) -> gym.Env:
    return make_task_env(task_of(dataset))


# ----------------------------------------------------------------------------- data


def first_success_steps(success: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The step of each demonstration's first success, -1 for one that never succeeds.

    Shapes: ``success`` (N,) bool per row; ``starts``, ``ends`` (E,) the first and last row of each
    demonstration -> (E,) int.

    >>> first_success_steps(np.array([0, 1, 1, 0, 0, 0], bool), np.array([0, 3]), np.array([2, 5])).tolist()
    [1, -1]
    """
    return np.array(
        [
            int(np.argmax(rows)) if (rows := success[s : e + 1]).any() else -1
            for s, e in zip(starts, ends, strict=True)
        ],
        dtype=np.int64,
    )


def cut_after_success(
    starts: np.ndarray, ends: np.ndarray, first_success: np.ndarray, keep: int | None
) -> np.ndarray:
    """The last row kept of each demonstration: ``keep`` steps after its first success (None: its last
    row); a demonstration that never succeeds (``first_success`` -1) is kept whole."""
    if keep is None:
        return ends.copy()
    succeeded = first_success >= 0
    return np.where(succeeded, np.minimum(ends, starts + first_success + keep), ends)


def demonstrations_file(name: str, session: Session) -> Path:
    """``<data dir>/<name>.hdf5``; where the data folder has none, the recipe's file
    (:func:`~diffgym.tasks.metaworld.make_demonstrations`: 50 episodes, seed 0, as ``diffgym data
    make-metaworld``), made once into ``<out>/metaworld/data/`` and reused."""
    given = session.data_dir / f"{name}.hdf5"
    if given.exists():
        return given
    made = session.folder / "data" / f"{name}.hdf5"
    with FileLock(made.with_suffix(".lock")):  # runs side by side make it once
        if not made.exists():
            log(f"{given} not found: making {made} with the scripted expert (diffgym data make-metaworld)")
            make_demonstrations(task_of_name(name), made)
    return made


def task_of_name(name: str) -> str:
    return name.removeprefix(PREFIX)


def demonstrations(name: str, session: Session) -> Dataset:
    """The task's demonstrations (:func:`demonstrations_file`), each cut ``keep_after_success`` steps
    after its first success (None: whole; one that never succeeds is kept whole), imported into the
    session's Minari store with the env's spaces."""
    keep = session.params["keep_after_success"]
    source = demonstrations_file(name, session)
    with h5py.File(source, "r") as file:
        arrays = {key: file[key][()] for key in ("observations", "actions", "rewards", "next_observations")}
        ends = np.flatnonzero(file["terminals"][()] | file["timeouts"][()])
        success = file["infos/success"][()].astype(bool)
        metadata = json.loads(file.attrs["metadata"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    first_success = first_success_steps(success, starts, ends)
    stops = cut_after_success(starts, ends, first_success, keep)
    rows = np.concatenate([np.arange(s, e + 1) for s, e in zip(starts, stops, strict=True)])
    timeouts = np.zeros(len(rows), dtype=bool)
    timeouts[np.cumsum(stops - starts + 1) - 1] = True
    path = session.workdir / f"{name}-cut.hdf5"
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value[rows]
        file["terminals"], file["timeouts"] = np.zeros(len(rows), dtype=bool), timeouts
        file["infos/success"] = success[rows]
        file.attrs["metadata"] = json.dumps({**metadata, "kept_after_first_success": keep})
    task = task_of_name(name)
    dataset = import_d4rl(
        path, f"diffgym-bench/{name}-v0", env_id="Meta-World/MT1", env_kwargs={"env_name": task}
    )
    info = {
        "file": str(source),
        "episodes": len(starts),
        "transitions_in_file": int(ends[-1] + 1),
        "transitions": len(rows),
        "first_success_step_mean": (
            float(first_success[first_success >= 0].mean()) if (first_success >= 0).any() else None
        ),  # over the demonstrations that succeed
        "demos_without_success": int((first_success < 0).sum()),
        "kept_after_first_success": keep,
    }
    return Dataset(name, dataset, info)


# ----------------------------------------------------------------------------- evaluation


def model_actor(model: Any, deterministic: bool) -> Actor:
    def act(observations: np.ndarray, state: Any, episode_start: np.ndarray) -> tuple[np.ndarray, Any]:
        return model.predict(observations, state, episode_start, deterministic)  # type: ignore[no-any-return]

    return act


def expert_actor(task: str) -> Actor:
    """The scripted policy that made the demonstrations (actions clipped to [-1, 1], as there)."""
    expert = scripted_expert(task)

    def act(observations: np.ndarray, state: Any, episode_start: np.ndarray) -> tuple[np.ndarray, Any]:
        return np.stack([expert(o) for o in observations]), None

    return act


def evaluate_actor(act: Actor, task: str, episodes: int, seed: int) -> Evaluation:
    """Run ``episodes`` episodes side by side (one batched ``predict`` per step), episode ``i`` reset
    with ``seed + i``, each until its first success or 500 steps; the state of finished episodes is
    dropped from the batch."""
    envs = [make_task_env(task) for _ in range(episodes)]
    observations = np.stack([reset_episode(env, seed + i) for i, env in enumerate(envs)])
    success_step = np.zeros(episodes, dtype=int)  # 0: never succeeded
    returns, steps = np.zeros(episodes), 0
    active, state, episode_start = np.arange(episodes), None, np.ones(episodes, dtype=bool)
    for step in range(1, MAX_EPISODE_STEPS + 1):
        actions, state = act(observations[active], state, episode_start)
        episode_start = np.zeros(len(active), dtype=bool)
        done = np.zeros(len(active), dtype=bool)
        for row, index in enumerate(active):
            observations[index], reward, terminated, truncated, info = envs[index].step(actions[row])
            returns[index] += float(reward)
            if info["success"]:
                success_step[index] = step
            done[row] = bool(info["success"]) or terminated or truncated
        steps += len(active)
        if done.any():
            active, episode_start = active[~done], episode_start[~done]
            state = None if state is None else tuple(part[~done] for part in state)
        if not len(active):
            break
    for env in envs:
        env.close()
    succeeded = success_step > 0
    metrics = {
        "successes": int(succeeded.sum()),
        "success_rate": float(succeeded.mean()),
        "mean_success_step": float(success_step[succeeded].mean()) if succeeded.any() else None,
    }
    return Evaluation(returns.tolist(), steps, metrics)


def evaluate(model: Any, run: Run, episodes: int) -> Evaluation:
    actor = model_actor(model, run.contender.deterministic)
    return evaluate_actor(actor, task_of(run.dataset), episodes, EVAL_SEED + run.seed)


def expert_study(session: Session, dataset: Dataset) -> dict[str, Any]:
    """The scripted expert on the episodes of seed 0's evaluation of the dataset's task."""
    task = task_of(dataset)
    return _point(evaluate_actor(expert_actor(task), task, session.budget.final_episodes, EVAL_SEED))


def _point(evaluation: Evaluation) -> dict[str, Any]:
    """An evaluation as the records keep it (as a run's final point, without timings)."""
    return {"returns": evaluation.returns, **evaluation.metrics}


# ----------------------------------------------------------------------------- Diffusion Policy only


def temporal_ensembling(model: Any, run: Run) -> dict[str, Any]:
    """Diffusion Policy evaluated again with ACT's temporal ensembling (a chunk every step)."""
    if not isinstance(model, DiffusionPolicy) or not run.session.params["ensemble"]:
        return {}
    path = run.session.workdir / f"{run.name}.zip"
    model.save(path)
    ensemble = DiffusionPolicy.load(
        path, policy_kwargs={**model.policy_kwargs, "temporal_ensemble_coeff": ENSEMBLE_COEFF}
    )
    return _point(evaluate(ensemble, run, run.session.budget.final_episodes))


def chunking_latency(model: Any, run: Run) -> dict[str, float]:
    """Mean ``predict`` time per env step at batch 1, chunked and a chunk every step, and one bare
    U-Net forward at batch 1 (median)."""
    if not isinstance(model, DiffusionPolicy):
        return {}
    policy, task = model.policy, task_of(run.dataset)
    chunked = _predict_ms_per_step(model, task)
    saved = policy.n_action_steps, policy.chunk_steps
    policy.n_action_steps = policy.chunk_steps = 1
    try:
        every_step = _predict_ms_per_step(model, task)
    finally:
        policy.n_action_steps, policy.chunk_steps = saved
    x = torch.zeros(1, policy.segment_horizon, policy.action_dim)
    t = torch.zeros(1, dtype=torch.long)
    cond = torch.zeros(1, policy.n_obs_steps * policy.obs_dim)
    with torch.no_grad():
        forward = latency_ms(lambda: policy.ema_model.denoiser(x, t, cond))
    return {
        "unet_forward_ms": forward,
        "sampler_steps": policy.sampler.steps(policy.ema_model.num_timesteps),
        "predict_ms_chunked": chunked,
        "predict_ms_every_step": every_step,
        "chunked_over_forward": chunked / forward,
        "every_step_over_forward": every_step / forward,
        "n_action_steps": saved[0],
    }


def _predict_ms_per_step(model: Any, task: str) -> float:
    """Mean ``predict`` time over :data:`LATENCY_STEPS` steps of one episode (state passed back), after a
    warm-up."""
    env = make_task_env(task)
    observation = reset_episode(env, 0)
    model.predict(observation, deterministic=False)
    state, elapsed = None, 0.0
    for _ in range(LATENCY_STEPS):
        started = time.perf_counter()
        action, state = model.predict(observation, state, None, deterministic=False)
        elapsed += time.perf_counter() - started
        observation, *_ = env.step(action)
    env.close()
    return 1e3 * elapsed / LATENCY_STEPS


# ----------------------------------------------------------------------------- report


def success_section(report: Report) -> str:
    """Per task: the demonstrations used, and the success of the expert, BC, DP and DP with ensembling."""
    experts = report.study("expert") or {}
    rows = []
    for dataset in dict.fromkeys(r["config"]["dataset"] for r in report.runs):
        bc, dp = report.runs_of("bc", dataset), report.runs_of("diffusion_policy", dataset)
        data = (bc or dp)[0]["data"]
        ensemble = [r["extra"]["ensemble"] for r in dp if r["extra"].get("ensemble")]
        rows.append(
            [
                dataset,
                f"{data['transitions']:,} of {data['transitions_in_file']:,}" + _failed_demos(data),
                _rate([experts[dataset]] if dataset in experts else []),
                _rate([r["final"] for r in bc]),
                _rate([r["final"] for r in dp]),
                _rate(ensemble),
            ]
        )
    header = ["task", "demo steps used", "scripted expert", "BC (MLP, 2 obs)", "Diffusion Policy",
              "DP + temporal ensembling"]  # fmt: skip
    return "\n\n".join(["## Success per task", markdown_table(header, rows)])


def _failed_demos(data: dict[str, Any]) -> str:
    """``", 2 demos never succeed"`` when some do not (records older than the count say nothing)."""
    failed = data.get("demos_without_success")
    return f", {failed} demos never succeed" if failed else ""


def _rate(points: list[dict[str, Any]]) -> str:
    """``"98 % (49/50), step 60"`` over the given evaluations (seeds pooled)."""
    if not points:
        return "-"
    successes, episodes = sum(p["successes"] for p in points), sum(len(p["returns"]) for p in points)
    steps = [p["mean_success_step"] for p in points if p["mean_success_step"] is not None]
    return f"{100 * successes / episodes:.0f} % ({successes}/{episodes})" + (
        f", step {np.mean(steps):.0f}" if steps else ""
    )


def chunking_section(report: Report) -> str:
    """Diffusion Policy's latency per env step with and without chunking, against one U-Net forward."""
    rows = [
        [r["config"]["dataset"], f"{lat['unet_forward_ms']:.2f}",
         f"{lat['predict_ms_chunked']:.2f}; {lat['chunked_over_forward']:.1f}×",
         f"{lat['predict_ms_every_step']:.2f}; {lat['every_step_over_forward']:.1f}×"]
        for r in report.runs_of("diffusion_policy")
        if (lat := r["extra"].get("chunking"))
    ]  # fmt: skip
    if not rows:
        return ""
    header = ["task", "U-Net forward (ms, batch 1)", "predict / step, chunked (ms; ÷ forward)",
              "predict / step, chunk every step (ms; ÷ forward)"]  # fmt: skip
    return "\n\n".join(
        [
            "## Chunking",
            f"Mean `predict` time per env step at batch 1 over {LATENCY_STEPS} steps of one episode (chunked = a "
            "chunk every `n_action_steps` steps), and as a multiple of one bare U-Net forward at batch 1 measured "
            "in the same run.",
            markdown_table(header, rows),
        ]
    )


SUITE = Suite(
    name="metaworld",
    title="Meta-World imitation benchmark (scripted demonstrations made on this machine)",
    description=(
        'Success rate per task (success: `info["success"]` ever 1; an episode ends at its first success or '
        "after 500 steps). Every episode draws fresh object and goal positions (Meta-World's random reset); all "
        "agents of a seed meet the same episodes. Data: the 50 scripted demonstrations of "
        "`metaworld-<task>.hdf5`, cut after their first success (see the records' `data`); the same cut data "
        "train both agents. Diffusion Policy samples chunks with fresh noise; BC is deterministic."
    ),
    datasets=tuple(PREFIX + task for task in SHARED_TASKS + MADE_TASKS),
    agents=(Contender("bc", title="BC (MLP, 2 obs)"), Contender("diffusion_policy", deterministic=False)),
    budget=Budget(final_episodes=50),
    params={
        "keep_after_success": 20,  # demonstration steps kept after the first success (null: all)
        "ensemble": True,  # also evaluate Diffusion Policy with temporal ensembling
    },
    prepare=demonstrations,
    make_env=make_env,
    zoo_env=lambda dataset: {"id": "Meta-World/MT1", "kwargs": {"env_name": task_of(dataset)}},
    evaluate=evaluate,
    reference=lambda dataset: None,
    metric=Metric("success_rate", "success rate (%)", 100.0),
    score_data=False,
    measures={"ensemble": temporal_ensembling, "chunking": chunking_latency},
    dataset_studies={"expert": expert_study},
    sections=(success_section, chunking_section),
)
