"""Meta-World imitation benchmark: Diffusion Policy against MLP behaviour cloning.

Both learn from the same scripted demonstrations (``../shared/datasets/metaworld-<task>.hdf5``,
50 episodes per task), see the same observations (the last two) and are evaluated in the same run
on the same ``--episodes`` episodes per task, with the scripted expert itself as a reference:

- **Episodes**: ``Meta-World/MT1`` with Meta-World's own random reset switched on, so every
  episode draws fresh object and goal positions (MT1 alone cycles through 50 fixed ones, none of
  them in the demonstrations); episode ``i`` is seeded ``10_000 + i`` (``env.unwrapped.seed``:
  Meta-World ignores ``reset(seed=...)``). Up to 500 steps; a **success** if ``info["success"]``
  is ever 1, and the episode ends at its first success (later steps cannot change the outcome).
- **Demonstrations** are cut ``--keep-after-success`` steps after their first success: the files
  run 500 steps of which 80–90 % come after success, where the evaluation never goes (Diffusion
  Policy's own datasets end at task completion). Both agents train on the same cut data.
- **Budget**: sized for a shared 2-core CPU: a U-Net of widths 32·(1, 2, 4), a few thousand
  gradient steps, and a peak learning rate of 5e-4 (DP: 1e-4 over hundreds of thousands of
  steps; in a pilot on reach-v3, 1,500 steps reached 1/20 successes at 1e-4 and 18/20 at 5e-4).
- **Diffusion Policy** samples its chunks with fresh noise (``deterministic=False``, as DP
  evaluates); with ``--ensemble`` it is also evaluated with ACT's temporal ensembling (a chunk
  every step). BC's action is deterministic.
- **Latency**: ``predict`` time per env step at batch 1 with chunking (a chunk every
  ``n_action_steps`` = 8 steps) and without (a chunk every step), as multiples of one bare U-Net
  forward at batch 1, measured in the same run.

Each task writes ``zoo/results/metaworld/<task>_s<seed>.json`` as soon as it is done (models and
training checkpoints go to ``zoo/runs/``, not committed); ``--report`` merges them into
``zoo/results/metaworld.{json,md}``.

    diffgym benchmark metaworld --tasks reach-v3 push-v3 --steps 3000
    diffgym benchmark metaworld --report
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import minari
import numpy as np
import torch
from minari import MinariDataset
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

from diffgym.agents.diffusion_policy import DiffusionPolicy
from diffgym.algorithm import OfflineAlgorithm
from diffgym.data import import_d4rl
from diffgym.agents.baselines import HistoryBC
from diffgym.zoo.benchmarks.d4rl import DEFAULT_DATA_DIR, MODELS_DIR
from diffgym.zoo.benchmarks.report import (
    RESULTS_DIR,
    hardware,
    hardware_line,
    markdown_table,
    median_ms,
    write_json,
    write_report,
)

TASKS = ("reach-v3", "push-v3", "drawer-close-v3", "button-press-topdown-v3")
RUNS_DIR = RESULTS_DIR / "metaworld"
EVAL_SEED = 10_000
MAX_EPISODE_STEPS = 500

#: an agent as the evaluation sees it: (observations (n, 39), state, episode_start (n,)) -> (actions (n, 4), state)
Actor = Callable[[np.ndarray, Any, np.ndarray], tuple[np.ndarray, Any]]


# ----------------------------------------------------------------------------- environment


def make_env(task: str) -> gym.Env:
    """``Meta-World/MT1`` for ``task`` with Meta-World's random reset on (see the module doc)."""
    import metaworld  # noqa: F401  (registers the Meta-World envs)

    env = gym.make("Meta-World/MT1", env_name=task, disable_env_checker=True)
    env.reset()  # MT1 sets one of its fixed tasks here; then switch to fresh random positions
    env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
    env.unwrapped._freeze_rand_vec = False  # type: ignore[attr-defined]
    env.unwrapped.seeded_rand_vec = True  # type: ignore[attr-defined]
    return env


def reset_episode(env: gym.Env, seed: int) -> np.ndarray:
    """Seed Meta-World's reset RNG (its ``reset`` ignores ``seed=``) and reset: -> (39,) observation."""
    env.unwrapped.seed(seed)  # type: ignore[attr-defined]
    observation, _ = env.reset()
    return observation


# ----------------------------------------------------------------------------- data


def demonstrations(task: str, data_dir: Path, keep_after_success: int | None) -> tuple[MinariDataset, dict]:
    """The task's demonstrations, each cut ``keep_after_success`` steps after its first success
    (None: whole), imported into Minari with the env's spaces; and a description of them."""
    with h5py.File(data_dir / f"metaworld-{task}.hdf5", "r") as file:
        arrays = {key: file[key][()] for key in ("observations", "actions", "rewards", "next_observations")}
        ends = np.flatnonzero(file["terminals"][()] | file["timeouts"][()])
        success = file["infos/success"][()].astype(bool)
        metadata = json.loads(file.attrs["metadata"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    first_success = np.array([np.argmax(success[s : e + 1]) for s, e in zip(starts, ends, strict=True)])
    stops = (
        ends if keep_after_success is None else np.minimum(ends, starts + first_success + keep_after_success)
    )
    rows = np.concatenate([np.arange(s, e + 1) for s, e in zip(starts, stops, strict=True)])
    timeouts = np.zeros(len(rows), dtype=bool)
    timeouts[np.cumsum(stops - starts + 1) - 1] = True
    cut = "all" if keep_after_success is None else f"cut{keep_after_success}"
    path = MODELS_DIR / f"metaworld-{task}-{cut}.hdf5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value[rows]
        file["terminals"], file["timeouts"] = np.zeros(len(rows), dtype=bool), timeouts
        file["infos/success"] = success[rows]
        file.attrs["metadata"] = json.dumps({**metadata, "kept_after_first_success": keep_after_success})
    dataset_id = f"diffgym-bench/metaworld-{task}-{cut}-v0"
    if dataset_id in minari.list_local_datasets():
        minari.delete_dataset(dataset_id)
    dataset = import_d4rl(path, dataset_id, env_id="Meta-World/MT1", env_kwargs={"env_name": task})
    info = {
        "file": f"metaworld-{task}.hdf5",
        "episodes": len(starts),
        "transitions_in_file": int(ends[-1] + 1),
        "transitions_used": len(rows),
        "first_success_step_mean": float(first_success.mean()),
        "kept_after_first_success": keep_after_success,
    }
    return dataset, info


# ----------------------------------------------------------------------------- evaluation


def model_actor(model: OfflineAlgorithm, deterministic: bool) -> Actor:
    def act(observations: np.ndarray, state: Any, episode_start: np.ndarray) -> tuple[np.ndarray, Any]:
        return model.predict(observations, state, episode_start, deterministic)  # type: ignore[return-value]

    return act


def expert_actor(task: str) -> Actor:
    """The scripted policy that made the demonstrations (actions clipped to [-1, 1], as there)."""
    from metaworld.policies import ENV_POLICY_MAP

    policy = ENV_POLICY_MAP[task]()  # type: ignore[abstract]

    def act(observations: np.ndarray, state: Any, episode_start: np.ndarray) -> tuple[np.ndarray, Any]:
        return np.stack([np.clip(policy.get_action(o), -1.0, 1.0) for o in observations]), None

    return act


def evaluate(act: Actor, task: str, episodes: int) -> dict[str, Any]:
    """Run ``episodes`` episodes side by side (one batched ``predict`` per step), each until its
    first success or 500 steps; the state of finished episodes is dropped from the batch."""
    envs = [make_env(task) for _ in range(episodes)]
    observations = np.stack([reset_episode(env, EVAL_SEED + i) for i, env in enumerate(envs)])
    success_step = np.zeros(episodes, dtype=int)  # 0: never succeeded
    active, state, started = np.arange(episodes), None, time.perf_counter()
    episode_start = np.ones(episodes, dtype=bool)
    for step in range(1, MAX_EPISODE_STEPS + 1):
        actions, state = act(observations[active], state, episode_start)
        episode_start = np.zeros(len(active), dtype=bool)
        done = np.zeros(len(active), dtype=bool)
        for row, index in enumerate(active):
            observations[index], _, terminated, truncated, info = envs[index].step(actions[row])
            if info["success"]:
                success_step[index] = step
            done[row] = bool(info["success"]) or terminated or truncated
        if done.any():
            active, episode_start = active[~done], episode_start[~done]
            state = None if state is None else tuple(part[~done] for part in state)
        if not len(active):
            break
    for env in envs:
        env.close()
    succeeded = success_step > 0
    return {
        "episodes": episodes,
        "successes": int(succeeded.sum()),
        "success_rate": float(succeeded.mean()),
        "mean_success_step": float(success_step[succeeded].mean()) if succeeded.any() else None,
        "seconds": time.perf_counter() - started,
    }


# ----------------------------------------------------------------------------- latency


def chunking_latency(model: DiffusionPolicy, task: str, steps: int = 64) -> dict[str, float]:
    """Mean ``predict`` time per env step at batch 1, chunked and a chunk every step, and one bare
    U-Net forward at batch 1 (median)."""
    policy = model.policy
    chunked = _predict_ms_per_step(model, task, steps)
    saved = policy.n_action_steps, policy.chunk_steps
    policy.n_action_steps = policy.chunk_steps = 1
    try:
        every_step = _predict_ms_per_step(model, task, steps)
    finally:
        policy.n_action_steps, policy.chunk_steps = saved
    x = torch.zeros(1, policy.segment_horizon, policy.action_dim)
    t = torch.zeros(1, dtype=torch.long)
    cond = torch.zeros(1, policy.n_obs_steps * policy.obs_dim)
    with torch.no_grad():
        forward = median_ms(lambda: policy.ema.denoiser(x, t, cond), repeats=100)
    return {
        "unet_forward_ms": forward,
        "sampler_steps": policy.sampler.steps(policy.ema.num_timesteps),
        "predict_ms_chunked": chunked,
        "predict_ms_every_step": every_step,
        "chunked_over_forward": chunked / forward,
        "every_step_over_forward": every_step / forward,
        "n_action_steps": saved[0],
    }


def _predict_ms_per_step(model: OfflineAlgorithm, task: str, steps: int) -> float:
    """Mean ``predict`` time over ``steps`` steps of one episode (state passed back), after a warm-up."""
    env = make_env(task)
    observation = reset_episode(env, 0)
    model.predict(observation, deterministic=False)
    state, elapsed = None, 0.0
    for _ in range(steps):
        started = time.perf_counter()
        action, state = model.predict(observation, state, None, deterministic=False)  # type: ignore[arg-type]
        elapsed += time.perf_counter() - started
        observation, *_ = env.step(action)
    env.close()
    return 1e3 * elapsed / steps


# ----------------------------------------------------------------------------- training


class _Progress(BaseCallback):
    """Print the loss and speed every ``every`` gradient steps (the benchmark runs in the background)."""

    def __init__(self, label: str, every: int) -> None:
        super().__init__()
        self.label, self.every, self.started = label, every, time.perf_counter()

    def _on_step(self) -> bool:
        if self.n_calls % self.every == 0:
            losses = ", ".join(f"{k} {v:.4f}" for k, v in self.model._monitor.means.items())  # type: ignore[attr-defined]
            rate = self.n_calls / (time.perf_counter() - self.started)
            print(f"  {self.label} step {self.n_calls}: {losses}, {rate:.2f} steps/s", flush=True)
        return True


def train(
    cls: type[OfflineAlgorithm],
    name: str,
    task: str,
    dataset: MinariDataset,
    steps: int,
    args: argparse.Namespace,
    **kwargs: Any,
) -> tuple[OfflineAlgorithm, dict[str, Any]]:
    """Train (or load, if its final file exists) one agent; returns it and its training record."""
    path = MODELS_DIR / f"metaworld_{name}_{task}_s{args.seed}"
    env = make_env(task)
    if path.with_suffix(".zip").exists() and not args.retrain:
        print(f"  {name}: loading {path}.zip", flush=True)
        model = cls.load(path, env=env)
        return model, json.loads(path.with_suffix(".json").read_text())
    model = cls("MlpPolicy", env, dataset=dataset, seed=args.seed, **kwargs)
    callbacks = [
        CheckpointCallback(args.checkpoint_every, str(path), name_prefix=name),
        _Progress(f"{task} {name}", args.print_every),
    ]
    started = time.perf_counter()
    model.learn(steps, callback=callbacks)
    seconds = time.perf_counter() - started
    model.save(path)
    record = {
        "gradient_steps": steps,
        "batch_size": model.batch_size,
        "train_seconds": seconds,
        "gradient_steps_per_second": steps / seconds,
        "final_losses": model._monitor.means,
        "hyperparameters": {"learning_rate": model.learning_rate, **kwargs},
    }
    write_json(path.with_suffix(".json"), record)
    return model, record


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train both agents on one task, evaluate them and the expert, time acting; -> the task's record."""
    dataset, data_info = demonstrations(task, Path(args.data_dir), args.keep_after_success)
    print(f"{task}: {data_info['transitions_used']} demonstration steps", flush=True)
    dp_kwargs = {
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "policy_kwargs": {"dim": args.dim, "sampler": {"name": "ddim", "num_steps": args.ddim_steps}},
    }
    dp, dp_record = train(DiffusionPolicy, "dp", task, dataset, args.steps, args, **dp_kwargs)
    bc, bc_record = train(HistoryBC, "bc", task, dataset, args.bc_steps, args)
    results: dict[str, Any] = {"expert": evaluate(expert_actor(task), task, args.episodes)}
    results["bc"] = evaluate(model_actor(bc, deterministic=True), task, args.episodes)
    results["dp"] = evaluate(model_actor(dp, deterministic=False), task, args.episodes)
    if args.ensemble:
        ensemble = DiffusionPolicy.load(
            MODELS_DIR / f"metaworld_dp_{task}_s{args.seed}",
            policy_kwargs={**dp.policy_kwargs, "temporal_ensemble_coeff": 0.01},
        )
        results["dp_ensemble"] = evaluate(model_actor(ensemble, deterministic=False), task, args.episodes)
    print(
        f"{task}: " + ", ".join(f"{k} {v['successes']}/{v['episodes']}" for k, v in results.items()),
        flush=True,
    )
    assert isinstance(dp, DiffusionPolicy)
    return {
        "task": task,
        "seed": args.seed,
        "data": data_info,
        "training": {"dp": dp_record, "bc": bc_record},
        "evaluation": results,
        "latency": {
            "dp": chunking_latency(dp, task),
            "bc_predict_ms": _predict_ms_per_step(bc, task, 64),
        },
        "torch_threads": torch.get_num_threads(),
        "hardware": hardware(),
    }


# ----------------------------------------------------------------------------- report


def report() -> Path:
    """Merge every task's record under zoo/results/metaworld/ into zoo/results/metaworld.{json,md}."""
    runs = [json.loads(p.read_text()) for p in RUNS_DIR.glob("*.json")]
    order = {task: i for i, task in enumerate(TASKS)}
    runs.sort(key=lambda r: (order.get(r["task"], len(order)), r["task"], r["seed"]))
    if not runs:
        raise FileNotFoundError(f"no runs in {RUNS_DIR}: run the benchmark first")
    return write_report("metaworld", {"runs": runs}, _markdown(runs))


def _rate(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    steps = result["mean_success_step"]
    return f"{100 * result['success_rate']:.0f} % ({result['successes']}/{result['episodes']})" + (
        f", step {steps:.0f}" if steps is not None else ""
    )


def _markdown(runs: list[dict[str, Any]]) -> str:
    scores = markdown_table(
        [
            "task",
            "demo steps used",
            "scripted expert",
            "BC (MLP, 2 obs)",
            "Diffusion Policy",
            "DP + temporal ensembling",
        ],
        [
            [
                r["task"],
                f"{r['data']['transitions_used']:,} of {r['data']['transitions_in_file']:,}",
                *(_rate(r["evaluation"].get(k)) for k in ("expert", "bc", "dp", "dp_ensemble")),
            ]
            for r in runs
        ],
    )
    speed = markdown_table(
        [
            "task",
            "DP gradient steps / s",
            "BC gradient steps / s",
            "U-Net forward (ms, batch 1)",
            "DP predict / step, chunk of 8 (ms; ÷ forward)",
            "DP predict / step, chunk every step (ms; ÷ forward)",
            "BC predict / step (ms)",
        ],
        [
            [
                r["task"],
                f"{r['training']['dp']['gradient_steps_per_second']:.2f}",
                f"{r['training']['bc']['gradient_steps_per_second']:.0f}",
                f"{r['latency']['dp']['unet_forward_ms']:.2f}",
                f"{r['latency']['dp']['predict_ms_chunked']:.2f}; {r['latency']['dp']['chunked_over_forward']:.1f}×",
                f"{r['latency']['dp']['predict_ms_every_step']:.2f}; "
                f"{r['latency']['dp']['every_step_over_forward']:.1f}×",
                f"{r['latency']['bc_predict_ms']:.2f}",
            ]
            for r in runs
        ],
    )
    first = runs[0]
    dp, bc = first["training"]["dp"], first["training"]["bc"]
    policy = dp["hyperparameters"]["policy_kwargs"]
    kept = first["data"]["kept_after_first_success"]
    return "\n\n".join(
        [
            "# Meta-World imitation benchmark (scripted demonstrations made on this machine)",
            f"Success rate over {first['evaluation']['dp']['episodes']} episodes per task (success: "
            '`info["success"]` ever 1; an episode ends at its first success or after 500 steps) and the '
            "mean step of first success. Every episode draws fresh object and goal positions (Meta-World's "
            f"random reset, seeds {EVAL_SEED}…); all agents meet the same episodes. Data: the 50 scripted "
            "demonstrations of `../shared/datasets/metaworld-<task>.hdf5`, each cut "
            + ("at its end" if kept is None else f"{kept} steps after its first success")
            + "; the same cut data train both agents. Diffusion Policy samples chunks with fresh noise; "
            "BC is deterministic.",
            scores,
            "## Speed",
            f"Latency: mean `predict` time per env step at batch 1 (DP: {first['latency']['dp']['sampler_steps']} "
            "DDIM steps per chunk; chunked = a chunk every 8 steps), and as a multiple of one bare U-Net forward "
            "at batch 1 measured in the same run.",
            speed,
            f"Budget: Diffusion Policy {dp['gradient_steps']:,} gradient steps of batch {dp['batch_size']} "
            f"(U-Net widths {policy['dim']}·(1, 2, 4), T = 100, DDIM {first['latency']['dp']['sampler_steps']} "
            f"steps, T_o = 2, T_p = 16, T_a = 8, AdamW {dp['hyperparameters']['learning_rate']:.0e} (DP: 1e-04), 500 "
            "warm-up steps, cosine decay, EMA); BC "
            f"{bc['gradient_steps']:,} steps of batch {bc['batch_size']} (MLP 256 × 3, Adam 1e-3, cosine). "
            f"Seed {first['seed']}, one run per task; the last model is evaluated (no checkpoint selection). "
            f"Hardware: {hardware_line(first['hardware'])}; {first['torch_threads']} torch thread(s), the "
            "machine shared with other jobs.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffgym benchmark metaworld", description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000, help="Diffusion Policy gradient steps per task")
    parser.add_argument(
        "--learning-rate", type=float, default=5e-4, help="Diffusion Policy's peak learning rate (DP: 1e-4)"
    )
    parser.add_argument("--bc-steps", type=int, default=5000, help="BC gradient steps per task")
    parser.add_argument("--batch-size", type=int, default=256, help="Diffusion Policy batch (DP: 256)")
    parser.add_argument("--dim", type=int, default=32, help="U-Net base width (DP: 256)")
    parser.add_argument("--ddim-steps", type=int, default=10, help="DDIM steps per chunk")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task")
    parser.add_argument("--keep-after-success", type=int, default=20, help="-1: keep whole demonstrations")
    parser.add_argument(
        "--no-ensemble", dest="ensemble", action="store_false", help="skip temporal ensembling"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=1000, help="gradient steps between checkpoints"
    )
    parser.add_argument("--print-every", type=int, default=250, help="gradient steps between progress lines")
    parser.add_argument("--retrain", action="store_true", help="train even if a final model file exists")
    parser.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR), help="folder of the metaworld-*.hdf5 files"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--report", action="store_true", help="only merge existing task results into the report"
    )
    args = parser.parse_args(argv)
    if args.keep_after_success < 0:
        args.keep_after_success = None
    if not args.report:
        torch.set_num_threads(args.threads)
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        for task in args.tasks:
            record = run_task(task, args)
            write_json(RUNS_DIR / f"{task}_s{args.seed}.json", record)
    print(report().read_text())
    return 0
