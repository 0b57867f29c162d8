"""Offline locomotion benchmark: Diffusion-QL, IDQL and a TD3+BC baseline on D4RL-style data.

Every agent trains on the same dataset with the same number of gradient steps and seeds in the
same run, is evaluated with deterministic actions every ``--eval-every`` steps (for the "best"
column) and at the end (the "last" column), and is scored with D4RL's reference returns (the
shared datasets' README explains why D4RL's references apply to these Gymnasium v5 envs only
approximately). Each run writes its own JSON under ``zoo/results/d4rl/``, so a long benchmark can
be split across processes or sessions; ``--report`` merges them into ``zoo/results/d4rl.md``.

    diffgym benchmark d4rl --agents dql --datasets hopper-medium --steps 20000
    diffgym benchmark d4rl --report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import torch
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym.agents.dql import DiffusionQL
from diffgym.agents.idql import IDQL
from diffgym.algorithm import OfflineAlgorithm
from diffgym.diffusion import GaussianDiffusion
from diffgym.scores import get_reference
from diffgym.zoo.benchmarks.report import (
    RESULTS_DIR,
    hardware,
    hardware_line,
    markdown_table,
    median_ms,
    write_json,
    write_report,
)
from diffgym.agents.baselines import TD3BC

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
RUNS_DIR = RESULTS_DIR / "d4rl"
MODELS_DIR = Path(__file__).resolve().parents[1] / "runs"  # checkpoints; not committed
DATASETS = ("hopper-medium", "hopper-medium-replay", "halfcheetah-medium", "halfcheetah-medium-replay")
AGENTS: dict[str, type[OfflineAlgorithm]] = {"td3bc": TD3BC, "dql": DiffusionQL, "idql": IDQL}
LABELS = {"td3bc": "TD3+BC (baseline)", "dql": "Diffusion-QL", "idql": "IDQL"}

# Diffusion-QL's per-task gradient-norm clip (its Table 5); other settings are the paper's defaults.
DQL_GRAD_NORM = {
    "hopper-medium": 9.0,
    "hopper-medium-replay": 4.0,
    "halfcheetah-medium": 9.0,
    "halfcheetah-medium-replay": 2.0,
}


def agent_kwargs(agent: str, dataset: str) -> dict[str, Any]:
    """Per-task settings of each paper (everything else is the class default)."""
    if agent == "dql":
        return {"grad_norm": DQL_GRAD_NORM.get(dataset, 9.0)}
    return {}


def dataset_info(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as file:
        metadata = json.loads(file.attrs["metadata"])
    return {"env_id": metadata["env_id"], "mean_return": metadata.get("mean_return")}


class _TimedEval(EvalCallback):
    """SB3's EvalCallback that also keeps each evaluation's mean return and its own run time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0
        self.mean_returns: list[float] = []

    def _on_step(self) -> bool:
        started = time.perf_counter()
        result = super()._on_step()
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            self.mean_returns.append(float(self.last_mean_reward))
        self.seconds += time.perf_counter() - started
        return result


def run_one(agent: str, dataset: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate and time one (agent, dataset, seed); returns the run's record."""
    path = Path(args.data_dir) / f"{dataset}.hdf5"
    info = dataset_info(path)
    env = gym.make(info["env_id"])
    model = AGENTS[agent]("MlpPolicy", env, dataset=str(path), seed=seed, **agent_kwargs(agent, dataset))
    evaluation = _TimedEval(
        Monitor(gym.make(info["env_id"])),
        eval_freq=args.eval_every,
        n_eval_episodes=args.eval_episodes,
        deterministic=True,
        verbose=0,
    )
    started = time.perf_counter()
    model.learn(args.steps, callback=evaluation)
    train_seconds = time.perf_counter() - started - evaluation.seconds
    eval_env = Monitor(gym.make(info["env_id"]))
    eval_env.reset(seed=10_000 + seed)
    returns, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=args.final_episodes, deterministic=True, return_episode_rewards=True
    )
    reference = get_reference(dataset.split("-")[0])
    normalise = lambda value: 100 * (value - reference.random) / (reference.expert - reference.random)  # noqa: E731
    periodic = evaluation.mean_returns
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    model.save(MODELS_DIR / f"d4rl_{agent}_{dataset}_s{seed}")
    return {
        "agent": agent,
        "dataset": dataset,
        "seed": seed,
        "env_id": info["env_id"],
        "gradient_steps": args.steps,
        "hyperparameters": agent_kwargs(agent, dataset),
        "final_returns": [float(r) for r in returns],  # type: ignore[union-attr]
        "last_score": normalise(float(np.mean(returns))),
        "periodic_scores": [normalise(r) for r in periodic],
        "periodic_steps": list(range(args.eval_every, args.steps + 1, args.eval_every))[: len(periodic)],
        "best_score": max([normalise(r) for r in periodic] + [normalise(float(np.mean(returns)))]),
        "dataset_score": normalise(info["mean_return"]) if info["mean_return"] is not None else None,
        "reference": {"random": reference.random, "expert": reference.expert, "source": reference.source},
        "train_seconds": train_seconds,
        "gradient_steps_per_second": args.steps / train_seconds,
        "latency": predict_latency(model, env),
        "torch_threads": torch.get_num_threads(),
        "hardware": hardware(),
    }


def predict_latency(model: Any, env: gym.Env) -> dict[str, float]:
    """Median ``predict`` time at batch 1, against one bare denoiser forward.

    Two references: one forward at batch 1, and the chain's own floor, ``steps`` forwards at
    batch ``num_candidates`` (acting samples all candidates in one batch).
    """
    obs, _ = env.reset(seed=0)
    predict_ms = median_ms(lambda: model.predict(obs, deterministic=True))
    result = {"predict_ms": predict_ms}
    policy = model.policy
    actor = getattr(policy, "actor", None)
    if isinstance(actor, GaussianDiffusion):
        steps = policy.sampler.steps(actor.num_timesteps)
        forward = {batch: _forward_ms(actor, policy, batch) for batch in (1, policy.num_candidates)}
        result |= {
            "denoiser_forward_ms": forward[1],
            "predict_over_forward": predict_ms / forward[1],
            "chain_floor_ms": steps * forward[policy.num_candidates],
            "predict_over_chain_floor": predict_ms / (steps * forward[policy.num_candidates]),
        }
    return result


def _forward_ms(actor: GaussianDiffusion, policy: Any, batch: int) -> float:
    x = torch.zeros(batch, policy.action_dim)
    t = torch.zeros(batch, dtype=torch.long)
    cond = torch.zeros(batch, policy.obs_dim)
    with torch.no_grad():
        return median_ms(lambda: actor.denoiser(x, t, cond))


def remeasure_latency() -> None:
    """Measure every saved run's ``predict`` latency again (run on an otherwise idle machine)."""
    for path in sorted(RUNS_DIR.glob("*.json")):
        record = json.loads(path.read_text())
        model = AGENTS[record["agent"]].load(MODELS_DIR / f"d4rl_{path.stem}")
        record["latency"] = predict_latency(model, gym.make(record["env_id"]))
        record["latency_measured"] = "re-measured alone on the machine, 1 torch thread"
        write_json(path, record)


def report() -> Path:
    """Merge every run under zoo/results/d4rl/ into zoo/results/d4rl.{json,md}."""
    runs = [json.loads(p.read_text()) for p in sorted(RUNS_DIR.glob("*.json"))]
    if not runs:
        raise FileNotFoundError(f"no runs in {RUNS_DIR}: run the benchmark first")
    return write_report("d4rl", {"runs": runs}, _markdown(runs))


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def _markdown(runs: list[dict[str, Any]]) -> str:
    agents = [a for a in AGENTS if any(r["agent"] == a for r in runs)]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in runs)]
    rows = []
    for dataset in datasets:
        of = {a: [r for r in runs if r["agent"] == a and r["dataset"] == dataset] for a in agents}
        behaviour = next(r["dataset_score"] for rs in of.values() for r in rs)
        cells = [dataset, f"{behaviour:.1f}"]
        for agent in agents:
            done = of[agent]
            cells.append(
                f"{_mean_std([r['last_score'] for r in done])} / {_mean_std([r['best_score'] for r in done])}"
                f" ({len(done)} seed{'s' * (len(done) != 1)}, {done[0]['gradient_steps']:,} steps)"
                if done
                else "not run"
            )
        rows.append(cells)
    scores = markdown_table(
        ["dataset", "dataset's mean"] + [f"{LABELS[a]}: last / best" for a in agents], rows
    )
    speed_rows = []
    for agent in agents:
        mine = [r for r in runs if r["agent"] == agent]
        latency = [r["latency"] for r in mine]
        ratio = [x["predict_over_forward"] for x in latency if "predict_over_forward" in x]
        floor = [x["predict_over_chain_floor"] for x in latency if "predict_over_chain_floor" in x]
        speed_rows.append(
            [
                LABELS[agent],
                f"{np.mean([r['gradient_steps_per_second'] for r in mine]):.1f}",
                f"{np.mean([x['predict_ms'] for x in latency]):.2f}",
                f"{np.mean(ratio):.1f}" if ratio else "-",
                f"{np.mean(floor):.2f}" if floor else "-",
                mine[0]["torch_threads"],
            ]
        )
    speed = markdown_table(
        [
            "agent",
            "gradient steps / s",
            "predict ms (batch 1)",
            "predict ÷ one denoiser forward (batch 1)",
            "predict ÷ (steps × forward at batch N)",
            "torch threads (training)",
        ],
        speed_rows,
    )
    first = runs[0]
    return "\n\n".join(
        [
            "# Offline locomotion benchmark (D4RL-style data made on this machine)",
            "D4RL-normalised scores (100 · (return − random) / (expert − random), D4RL's references) of "
            "deterministic actions: *last* = the final model over "
            f"{len(first['final_returns'])} episodes; *best* = the best of that and the periodic evaluations "
            f"(every {first['periodic_steps'][0] if first['periodic_steps'] else '-'} steps), which flatters. "
            "*dataset's mean* = the behaviour data's own mean episode return, normalised. Data: "
            "`../shared/datasets/` (Gymnasium MuJoCo v5; see its README), not D4RL's files, so the numbers "
            "are not comparable one-to-one with published D4RL results.",
            scores,
            "## Speed",
            "Gradient steps per second exclude evaluation time. Latency: median `predict` of one observation "
            "(deterministic: N candidates sampled in one batch through the chain, then scored), as a ratio to "
            "one bare forward of the agent's denoiser at batch 1, and to the chain's floor (steps × one "
            "forward at batch N): the rest is the critic and the sampler's arithmetic.",
            speed,
            f"Hardware: {hardware_line(first['hardware'])}. Each run trained with {first['torch_threads']} torch "
            "thread(s) while two runs shared the machine's 2 cores"
            + (
                "; latencies were re-measured afterwards, alone on the machine, with 1 thread."
                if all("latency_measured" in r for r in runs)
                else "."
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffgym benchmark d4rl", description=__doc__)
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=list(AGENTS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    parser.add_argument("--eval-every", type=int, default=5_000, help="gradient steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per periodic evaluation")
    parser.add_argument("--final-episodes", type=int, default=10, help="episodes of the final evaluation")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="folder of the D4RL-layout files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--report", action="store_true", help="only merge existing runs into the report")
    parser.add_argument(
        "--latency", action="store_true", help="re-measure saved models' latency, then report"
    )
    args = parser.parse_args(argv)
    if args.latency:
        torch.set_num_threads(1)
        remeasure_latency()
    elif not args.report:
        torch.set_num_threads(args.threads)
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        for dataset in args.datasets:
            for agent in args.agents:
                for seed in args.seeds:
                    record = run_one(agent, dataset, seed, args)
                    target = RUNS_DIR / f"{agent}_{dataset}_s{seed}.json"
                    write_json(target, record)
                    print(
                        f"{agent} {dataset} seed {seed}: last {record['last_score']:.1f}, best "
                        f"{record['best_score']:.1f}, {record['gradient_steps_per_second']:.1f} steps/s",
                        flush=True,
                    )
    print(report().read_text())
    return 0
