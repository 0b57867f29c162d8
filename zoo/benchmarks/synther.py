"""SynthER offline: TD3+BC on a D4RL-style dataset and on its synthetic upsampling, same budget, same run.

1. Upsample the dataset with :func:`~diffgym.wrappers.synthesize_dataset` (SynthER's offline
   recipe: a diffusion model of ``[s, a, r, s', done]``, the agent then trains on synthetic data
   only) into a Minari dataset in a scratch store.
2. Quality of the synthetic transitions: for synthetic (s, a), how far is synthetic s' from the
   simulator's s'? MuJoCo locomotion observations omit the x position and the dynamics do not
   depend on it, so the simulator is put in the state ``qpos = [0, obs[:nq-1]]``,
   ``qvel = obs[nq-1:]`` and stepped with a. The same figure for real dataset transitions is the
   floor (float32 storage, Hopper's velocity clip), and ``s' = s`` on the synthetic (s, a) a naive
   baseline. Also: reward error, agreement of ``done`` with the simulator's termination, and how
   far each dimension's mean and spread are from the real data's.
3. TD3+BC (``zoo/benchmarks/td3bc.py``) on the real data and on the synthetic data, the same
   gradient steps and seeds, evaluated as the d4rl benchmark does (D4RL-normalised).

    diffgym benchmark synther --dataset hopper-medium --synthetic 200000 --steps 40000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym.data import load_dataset, load_transitions
from diffgym.scores import get_reference
from diffgym.wrappers import SynthERConfig, synthesize_dataset
from diffgym.zoo.benchmarks.d4rl import DEFAULT_DATA_DIR, _TimedEval, dataset_info
from diffgym.zoo.benchmarks.report import hardware, hardware_line, markdown_table, write_report
from diffgym.agents.baselines import TD3BC

Arrays = dict[str, np.ndarray]


# --------------------------------------------------------------------------- simulator check


def simulate(env: gym.Env, obs: np.ndarray, actions: np.ndarray) -> Arrays:
    """The simulator's ``(next_obs, reward, terminated)`` for each row of ``obs`` (N, nq-1+nv) and ``actions``."""
    sim: Any = env.unwrapped
    n_pos = sim.model.nq - 1
    if obs.shape[1] != n_pos + sim.model.nv:
        raise ValueError(f"observations of size {obs.shape[1]} are not qpos[1:] + qvel of {env.spec}")
    next_obs = np.empty_like(obs, dtype=np.float64)
    rewards, terminated = np.empty(len(obs)), np.empty(len(obs), dtype=bool)
    for i in range(len(obs)):
        sim.set_state(np.concatenate([[0.0], obs[i, :n_pos]]), obs[i, n_pos:].astype(np.float64))
        next_obs[i], rewards[i], terminated[i], _, _ = sim.step(actions[i])
    return {"next_obs": next_obs, "rewards": rewards, "terminated": terminated}


def quality(rows: Arrays, truth: Arrays, scale: np.ndarray, predicted_next: np.ndarray | None = None) -> dict:
    """How close ``rows``' s' (or ``predicted_next``), r and done are to the simulator's ``truth``.

    ``next_obs_error``: squared error of s' per dimension in units of the real s' spread (``scale``),
    averaged over dimensions: the mean over rows and the median row.
    """
    predicted = rows["next_obs"] if predicted_next is None else predicted_next
    per_row = (((predicted - truth["next_obs"]) / scale) ** 2).mean(axis=1)
    result = {
        "next_obs_error_mean": float(per_row.mean()),
        "next_obs_error_median": float(np.median(per_row)),
    }
    if predicted_next is None:
        result |= {
            "reward_abs_error": float(np.abs(rows["rewards"] - truth["rewards"]).mean()),
            "done_agreement": float(np.mean(rows["dones"].astype(bool) == truth["terminated"])),
            "done_rate": float(rows["dones"].mean()),
            "simulator_done_rate": float(truth["terminated"].mean()),
        }
    return result


def marginals(synthetic: Arrays, real: Arrays) -> dict[str, float]:
    """Largest per-dimension mean gap (in real std) and the range of std ratios over s, a, r, s'."""

    def matrix(rows: Arrays) -> np.ndarray:
        return np.concatenate([rows["obs"], rows["actions"], rows["rewards"][:, None], rows["next_obs"]], 1)

    fake, true = matrix(synthetic), matrix(real)
    std = true.std(0).clip(1e-6)
    ratio = fake.std(0) / std
    return {
        "max_mean_gap_in_std": float((np.abs(fake.mean(0) - true.mean(0)) / std).max()),
        "std_ratio_min": float(ratio.min()),
        "std_ratio_max": float(ratio.max()),
    }


def read_synthetic(dataset_id: str, n: int) -> Arrays:
    """The first ``n`` one-step episodes of a synthetic dataset as transition arrays."""
    episodes = list(load_dataset(dataset_id).iterate_episodes(episode_indices=list(range(n))))
    return {
        "obs": np.stack([e.observations[0] for e in episodes]),
        "actions": np.stack([e.actions[0] for e in episodes]),
        "rewards": np.array([e.rewards[0] for e in episodes]),
        "next_obs": np.stack([e.observations[1] for e in episodes]),
        "dones": np.array([e.terminations[0] for e in episodes]),
    }


def real_sample(dataset: str, n: int, seed: int) -> Arrays:
    data = load_transitions(dataset)
    index = np.random.default_rng(seed).choice(len(data.rewards), size=n, replace=False)
    return {
        "obs": np.asarray(data.observations)[index],
        "actions": data.actions[index],
        "rewards": data.rewards[index],
        "next_obs": np.asarray(data.next_observations)[index],
        "dones": data.terminals[index],
    }


def quality_table(env_id: str, synthetic: Arrays, real: Arrays) -> dict[str, Any]:
    env = gym.make(env_id)
    env.reset(seed=0)
    scale = real["next_obs"].std(0).clip(1e-6)
    fake_truth = simulate(env, synthetic["obs"], synthetic["actions"])
    real_truth = simulate(env, real["obs"], real["actions"])
    return {
        "synthetic": quality(synthetic, fake_truth, scale),
        "real (floor)": quality(real, real_truth, scale),
        "naive s' = s on synthetic (s, a)": quality(synthetic, fake_truth, scale, synthetic["obs"]),
        "marginals": marginals(synthetic, real),
        "n": len(synthetic["obs"]),
    }


# --------------------------------------------------------------------------- TD3+BC runs


def train(
    label: str, dataset: Any, transitions: int, env_id: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """TD3+BC on ``dataset`` for ``args.steps`` gradient steps, evaluated as the d4rl benchmark does."""
    started = time.perf_counter()
    model = TD3BC("MlpPolicy", gym.make(env_id), dataset=dataset, seed=seed)
    load_seconds = time.perf_counter() - started
    evaluation = _TimedEval(
        Monitor(gym.make(env_id)),
        eval_freq=args.eval_every,
        n_eval_episodes=args.eval_episodes,
        deterministic=True,
        verbose=0,
    )
    started = time.perf_counter()
    model.learn(args.steps, callback=evaluation)
    train_seconds = time.perf_counter() - started - evaluation.seconds
    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=10_000 + seed)
    returns, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=args.final_episodes, deterministic=True, return_episode_rewards=True
    )
    normalise = _normaliser(args.dataset)
    last = normalise(float(np.mean(returns)))
    periodic = [normalise(r) for r in evaluation.mean_returns]
    return {
        "data": label,
        "seed": seed,
        "transitions": transitions,
        "gradient_steps": args.steps,
        "final_returns": [float(r) for r in returns],  # type: ignore[union-attr]
        "last_score": last,
        "periodic_scores": periodic,
        "best_score": max([*periodic, last]),
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        "gradient_steps_per_second": args.steps / train_seconds,
    }


def _normaliser(dataset: str) -> Any:
    reference = get_reference(dataset.split("-")[0])
    return lambda value: 100 * (value - reference.random) / (reference.expert - reference.random)


# --------------------------------------------------------------------------- report


def _fmt(values: list[float]) -> str:
    return f"{values[0]:.1f}" if len(values) == 1 else f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def _markdown(results: dict[str, Any]) -> str:
    runs, args, synthesis = results["runs"], results["settings"], results["synthesis"]
    rows = []
    for label in ("real", "synthetic"):
        mine = [r for r in runs if r["data"] == label]
        if not mine:
            continue
        rows.append(
            [
                f"{label} ({mine[0]['transitions']:,} transitions)",
                ", ".join(f"{r['last_score']:.1f}" for r in mine),
                _fmt([r["last_score"] for r in mine]),
                _fmt([r["best_score"] for r in mine]),
                f"{np.mean([r['gradient_steps_per_second'] for r in mine]):.0f}",
                f"{np.mean([r['load_seconds'] for r in mine]):.0f}",
            ]
        )
    scores = markdown_table(
        ["TD3+BC trained on", "last, per seed", "last", "best", "grad steps / s", "load s"], rows
    )
    q = results["quality"]
    quality_rows = [
        [
            name,
            f"{q[name]['next_obs_error_mean']:.4f}",
            f"{q[name]['next_obs_error_median']:.4f}",
            f"{q[name]['reward_abs_error']:.3f}" if "reward_abs_error" in q[name] else "-",
            f"{q[name]['done_agreement']:.4f}" if "done_agreement" in q[name] else "-",
            f"{q[name]['done_rate']:.4f} / {q[name]['simulator_done_rate']:.4f}"
            if "done_rate" in q[name]
            else "-",
        ]
        for name in ("synthetic", "naive s' = s on synthetic (s, a)", "real (floor)")
    ]
    quality_md = markdown_table(
        [
            "transitions",
            "s' error (mean)",
            "s' error (median)",
            "reward error (abs)",
            "done = sim's",
            "done rate / sim's",
        ],
        quality_rows,
    )
    m = q["marginals"]
    config = synthesis["config"]
    return "\n\n".join(
        [
            f"# SynthER offline: TD3+BC on {args['dataset']}, real vs synthetic",
            f"Real data: `{args['dataset']}.hdf5` from `../shared/datasets/` ({synthesis['source_transitions']:,} "
            f"transitions). Synthetic: {args['synthetic']:,} transitions from "
            "`diffgym.wrappers.synthesize_dataset` (SynthER's offline recipe: the agent sees synthetic data "
            f"only), a residual MLP of width {config['hidden_dim']} × {config['num_blocks']} blocks "
            f"(expansion {config['expansion']}) trained {config['train_steps']:,} steps at batch "
            f"{config['batch_size']} ({synthesis['fit_seconds'] / 60:.1f} min, final loss "
            f"{synthesis['fit_loss']:.3f}), sampled with {config['sampler']} "
            f"({synthesis['generate_seconds'] / 60:.1f} min); writing the Minari dataset took "
            f"{synthesis['store_seconds'] / 60:.1f} min. SynthER: width 2048 × 6, 100k steps, 5M samples, GPU.",
            "## Scores",
            f"TD3+BC (`zoo/benchmarks/td3bc.py`, paper defaults), {args['steps']:,} gradient steps per run, "
            f"seeds {args['seeds']}, same run. D4RL-normalised return of deterministic actions: *last* = "
            f"final model over {args['final_episodes']} episodes; *best* = best of that and the evaluations "
            f"every {args['eval_every']:,} steps ({args['eval_episodes']} episodes), which flatters. Mean ± std "
            f"over seeds. The behaviour data's own mean: {results['dataset_score']:.1f}. *load s*: building "
            "the agent, i.e. reading the dataset (one-step Minari episodes are slow to read).",
            scores,
            "## Quality of the synthetic transitions",
            f"{q['n']:,} transitions each. *s' error*: squared error between s' and the simulator's s' after "
            "setting the state to s and stepping with a, per dimension in units of the real s' standard "
            "deviation, averaged over dimensions (mean over transitions, and the median transition). "
            "*done = sim's*: share whose done flag equals the simulator's termination. The real data's "
            "error is the floor (float32 storage, Hopper's velocity clip in the observation).",
            quality_md,
            f"Marginals of s, a, r, s' (synthetic vs real): largest mean gap {m['max_mean_gap_in_std']:.3f} "
            f"real std; std ratios {m['std_ratio_min']:.3f}–{m['std_ratio_max']:.3f}.",
            f"Hardware: {hardware_line(results['hardware_at_start'])}; one process.",
        ]
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffgym benchmark synther", description=__doc__)
    parser.add_argument("--dataset", default="hopper-medium", help="a D4RL-layout file in --data-dir")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--synthetic", type=int, default=200_000, help="synthetic transitions to generate")
    parser.add_argument(
        "--diffusion-steps", type=int, default=10_000, help="training steps of the diffusion model"
    )
    parser.add_argument("--steps", type=int, default=40_000, help="TD3+BC gradient steps per run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--final-episodes", type=int, default=10)
    parser.add_argument("--quality-samples", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--store", default=None, help="Minari store for the data (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    store = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="synther-minari-"))
    os.environ["MINARI_DATASETS_PATH"] = str(store)
    try:
        run(args)
    finally:
        if args.store is None:
            shutil.rmtree(store, ignore_errors=True)
    return 0


def run(args: argparse.Namespace) -> Path:
    path = Path(args.data_dir) / f"{args.dataset}.hdf5"
    info = dataset_info(path)
    results: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k != "store"},
        "hardware_at_start": hardware(),
        "dataset_score": _normaliser(args.dataset)(info["mean_return"]),
        "runs": [],
    }
    source = load_dataset(str(path))
    synthetic_id = f"synther/{args.dataset}-{args.synthetic}-v0"
    config = SynthERConfig(train_steps=args.diffusion_steps)
    _log(f"fitting the diffusion model ({config.train_steps} steps) and writing {args.synthetic} transitions")
    synthetic = synthesize_dataset(source, synthetic_id, args.synthetic, config=config, seed=0)
    results["synthesis"] = {**synthetic.storage.metadata["synthesis"], "config": config.to_json()}
    _log(f"synthesis: {results['synthesis']}")
    sample = read_synthetic(synthetic_id, args.quality_samples)
    results["quality"] = quality_table(
        info["env_id"], sample, real_sample(str(path), args.quality_samples, 0)
    )
    _log(f"quality: {results['quality']}")
    for seed in args.seeds:
        for label, dataset, n in (
            ("real", str(path), source.total_steps),
            ("synthetic", synthetic_id, args.synthetic),
        ):
            record = train(label, dataset, n, info["env_id"], seed, args)
            results["runs"].append(record)
            _log(f"{label} seed {seed}: last {record['last_score']:.1f}, best {record['best_score']:.1f}")
            write_report("synther", results, _markdown(results))
    return write_report("synther", results, _markdown(results))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
