"""MPE simple_spread benchmark: MADiff-C and MADiff-D next to independent per-agent behaviour cloning.

Data: the shared ``mpe-spread-{expert,medium}.hdf5`` files (1000 episodes of 25 steps, 3 agents),
imported into diffgym's multi-agent Minari format. Env: ``mpe2`` ``simple_spread_v3.parallel_env(N=3,
local_ratio=0.5, max_cycles=25, continuous_actions=True)``, the files' env. Score: the team return
(sum over steps of the agents' mean reward) normalised with the datasets' README references
(0 = uniform random −24.69, 100 = the scripted expert −5.66).

- **MADiff-C / MADiff-D**: one model each (``decentralized`` trains with one agent's observation
  inpainted and acts from each agent's own observation). Sized for a 2-core CPU: U-Net widths
  32·(1, 2, 4) instead of MADiff's 128·(1, 4, 8), horizon 16 instead of 24, T = 100 training steps
  sampled with DDIM in 10 steps instead of DDPM 200, x0-prediction instead of ε (see
  :class:`~diffgym.agents.madiff.MADiffPolicy`), learning rate 5e-4 instead of 2e-4 for the short
  budget; fresh sampling noise when acting (``deterministic=False``), as MADiff evaluates.
- **Per-agent BC**: an independent MLP (2 × 256, ReLU, tanh output) per agent from its own
  observation, MSE on actions scaled to [−1, 1], Adam 1e-3, batch 256.
- Every agent of a dataset trains on the same data in the same run and is evaluated on the same
  ``--episodes`` episodes (episode ``i`` reset with seed ``10_000 + i``).
- **Latency**: ``predict`` per env step at batch 1 (a plan per step), against one bare U-Net forward at
  the batch of a denoising step (classifier-free guidance doubles the rows; MADiff-D samples one plan
  per agent).

Each run writes ``zoo/results/madiff/<dataset>_<agent>_s<seed>.json``; models go to ``zoo/runs/``.
``--clip`` renders one episode of the best MADiff model to ``zoo/results/mpe-spread_madiff.gif``;
``--report`` merges the runs into ``zoo/results/madiff.{json,md}``.

    diffgym benchmark madiff --datasets expert --agents madiff-c bc --steps 20000
    diffgym benchmark madiff --clip --report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import torch
from mpe2 import simple_spread_v3
from pettingzoo import ParallelEnv
from stable_baselines3.common.callbacks import CheckpointCallback
from torch import Tensor, nn

from diffgym.agents.madiff import MADiff
from diffgym.data import load_dataset
from diffgym.data.team import MultiAgentSegmentDataset
from diffgym.networks import make_adam
from diffgym.scores import get_reference
from diffgym.wrappers import evaluate_team
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

DATASETS = ("expert", "medium")
LABELS = {"madiff-c": "MADiff-C", "madiff-d": "MADiff-D", "bc": "per-agent BC"}
RUNS_DIR = RESULTS_DIR / "madiff"
CLIP = RESULTS_DIR / "mpe-spread_madiff.gif"
EVAL_SEED = 10_000
ENV_KWARGS = dict(N=3, local_ratio=0.5, max_cycles=25, continuous_actions=True)  # the shared files' env

#: MADiff sized for a CPU (see the module doc for the paper's values).
MADIFF: dict[str, Any] = dict(
    learning_rate=5e-4,
    batch_size=32,  # MADiff MPE: 32
    ema_start=500,
    policy_kwargs=dict(
        horizon=16,
        num_timesteps=100,
        dim=32,
        dim_mults=(1, 2, 4),
        sampler={"name": "ddim", "num_steps": 10},
        prediction="sample",  # x0-prediction: MADiff's epsilon-model failed at this budget (policy doc)
        normalizer="gaussian",  # standardised observations, x0 unclipped
        cfg_weight=1.2,  # MADiff MPE: 1.2
        target_return=0.9,
    ),
)


def make_env(render_mode: str | None = None) -> ParallelEnv:
    return simple_spread_v3.parallel_env(**ENV_KWARGS, render_mode=render_mode)


def dataset_path(name: str, data_dir: Path) -> str:
    return str(data_dir / f"mpe-spread-{name}.hdf5")


# ----------------------------------------------------------------------------- per-agent BC


class PerAgentBC(nn.Module):
    """One MLP per agent, ``a_k = f_k(o_k)``, each trained by MSE on its own agent's actions.

    ``predict({agent: obs}, state, episode_start, deterministic)`` as :func:`evaluate_team` calls it.
    """

    mean: Tensor  # (n, obs_dim) observation mean per agent
    std: Tensor  # (n, obs_dim) observation std per agent

    def __init__(self, agents: tuple[str, ...], obs_dim: int, action_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.agents = agents
        self.nets = nn.ModuleList(
            nn.Sequential(
                nn.Linear(obs_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, action_dim),
                nn.Tanh(),
            )
            for _ in agents
        )
        self.register_buffer("mean", torch.zeros(len(agents), obs_dim))
        self.register_buffer("std", torch.ones(len(agents), obs_dim))

    def forward(self, observations: Tensor) -> Tensor:
        """(B, n, obs_dim) -> (B, n, action_dim) in [-1, 1]."""
        x = (observations - self.mean) / self.std
        return torch.stack([net(x[:, k]) for k, net in enumerate(self.nets)], dim=1)

    def fit(self, observations: Tensor, actions: Tensor, steps: int, seed: int) -> None:
        """observations (N, n, obs_dim), actions (N, n, action_dim) in [-1, 1]."""
        self.mean.copy_(observations.mean(0))
        self.std.copy_(observations.std(0).clamp_min(1e-3))
        generator = torch.Generator().manual_seed(seed)
        optimizer = make_adam(self.parameters(), lr=1e-3)
        for _ in range(steps):
            index = torch.randint(0, len(observations), (256,), generator=generator)
            loss = ((self(observations[index]) - actions[index]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, np.ndarray], None]:
        stacked = torch.as_tensor(np.stack([observation[a] for a in self.agents]), dtype=torch.float32)[None]
        with torch.no_grad():
            scaled = self(stacked)[0].numpy()
        return {
            a: ((scaled[k] + 1) / 2).astype(np.float32) for k, a in enumerate(self.agents)
        }, None  # Box(0, 1)


def train_bc(dataset: str, steps: int, seed: int) -> PerAgentBC:
    segments = MultiAgentSegmentDataset(load_dataset(dataset), horizon=1)
    observations = torch.as_tensor(segments.observations, dtype=torch.float32)
    actions = torch.as_tensor(segments.actions, dtype=torch.float32) * 2 - 1  # MPE actions are in [0, 1]
    torch.manual_seed(seed)
    model = PerAgentBC(segments.agents, observations.shape[-1], actions.shape[-1])
    model.fit(observations, actions, steps, seed)
    return model


# ----------------------------------------------------------------------------- runs


def run_one(agent: str, dataset_name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate and time one (agent, dataset, seed)."""
    dataset = dataset_path(dataset_name, Path(args.data_dir))
    started = time.perf_counter()
    if agent == "bc":
        model: Any = train_bc(dataset, args.bc_steps, seed)
        steps, settings = args.bc_steps, {"hidden": 256, "learning_rate": 1e-3, "batch_size": 256}
    else:
        settings = json.loads(json.dumps(MADIFF))
        settings["policy_kwargs"]["decentralized"] = agent == "madiff-d"
        model = MADiff("MlpPolicy", make_env(), dataset=dataset, seed=seed, **settings)
        name = f"madiff_{agent}_{dataset_name}_s{seed}"
        model.learn(args.steps, callback=CheckpointCallback(max(args.steps // 4, 1), str(MODELS_DIR), name))
        model.save(MODELS_DIR / name)
        steps = args.steps
    train_seconds = time.perf_counter() - started
    deterministic = agent == "bc"
    started = time.perf_counter()
    returns, lengths = evaluate_team(
        model, make_env(), args.episodes, deterministic, seed=EVAL_SEED, return_episode_rewards=True
    )
    eval_seconds = time.perf_counter() - started
    reference = get_reference("mpe-spread")
    mean_return = float(np.mean(returns))
    record = {
        "agent": agent,
        "dataset": dataset_name,
        "seed": seed,
        "gradient_steps": steps,
        "settings": settings,
        "returns": [float(r) for r in returns],
        "score": 100 * (mean_return - reference.random) / (reference.expert - reference.random),
        "reference": {"random": reference.random, "expert": reference.expert, "source": reference.source},
        "train_seconds": train_seconds,
        "gradient_steps_per_second": steps / train_seconds,
        "env_step_ms": 1e3 * eval_seconds / max(float(np.sum(lengths)), 1.0),
        "torch_threads": torch.get_num_threads(),
        "hardware": hardware(),
    }
    if agent != "bc":
        record["model"] = str(MODELS_DIR / f"madiff_{agent}_{dataset_name}_s{seed}.zip")
        record["latency"] = latency(model)
    return record


def latency(model: MADiff) -> dict[str, float]:
    """``predict`` at batch 1 with a new plan per call, and one U-Net forward at a denoising step's batch."""
    policy = model.policy
    observation, _ = make_env().reset(seed=0)
    rows = 2 * (policy.n_agents if policy.decentralized else 1)  # guided and unguided rows (CFG)
    x = torch.zeros(rows, *policy.plan_shape)
    t = torch.zeros(rows, dtype=torch.long)
    cond = torch.zeros(rows, 1)
    with torch.no_grad():
        forward_ms = median_ms(lambda: policy.ema_model.denoiser(x, t, cond), repeats=20)
    predict_ms = median_ms(lambda: model.predict(observation), repeats=20)
    return {
        "predict_ms": predict_ms,
        "forward_ms": forward_ms,
        "predict_over_forward": predict_ms / forward_ms,
    }


def remeasure_latency() -> None:
    """Measure every saved MADiff run's latency again (the runs measure theirs beside each other)."""
    for path in sorted(RUNS_DIR.glob("*_s*.json")):
        record = json.loads(path.read_text())
        if "model" in record:
            record["latency"] = latency(MADiff.load(record["model"])) | {"remeasured": True}
            write_json(path, record)


def render_clip(runs: list[dict[str, Any]]) -> Path:
    """One episode of the best-scoring MADiff model, every other pixel, as a GIF."""
    best = max((r for r in runs if r["agent"] != "bc"), key=lambda r: r["score"])
    model = MADiff.load(best["model"])
    frames: list[Any] = []
    evaluate_team(
        model,
        make_env("rgb_array"),
        1,
        False,
        seed=EVAL_SEED,
        callback=lambda env: frames.append(env.render()[::2, ::2]),
    )
    imageio.mimsave(CLIP, frames, duration=0.1, loop=0)
    write_json(RUNS_DIR / "clip.json", {"run": f"{best['agent']} {best['dataset']} s{best['seed']}"})
    return CLIP


# ----------------------------------------------------------------------------- report


def report() -> Path:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS_DIR.glob("*_s*.json"))]
    if not runs:
        raise FileNotFoundError(f"no runs in {RUNS_DIR}: run the benchmark first")
    return write_report("madiff", {"runs": runs}, _markdown(runs))


def _markdown(runs: list[dict[str, Any]]) -> str:
    rows, latency_rows = [], []
    for run in sorted(runs, key=lambda r: (DATASETS.index(r["dataset"]), list(LABELS).index(r["agent"]))):
        rows.append(
            [
                run["dataset"],
                LABELS[run["agent"]],
                f"{run['score']:.1f}",
                f"{np.mean(run['returns']):.2f}",
                len(run["returns"]),
                f"{run['gradient_steps']:,}",
                f"{run['gradient_steps_per_second']:.1f}",
                f"{run['train_seconds'] / 60:.0f}",
                f"{run['env_step_ms']:.1f}",
            ]
        )
        if "latency" in run:
            lat = run["latency"]
            latency_rows.append(
                [
                    run["dataset"],
                    LABELS[run["agent"]],
                    f"{lat['predict_ms']:.1f}",
                    f"{lat['forward_ms']:.2f}",
                    f"{lat['predict_over_forward']:.1f}",
                ]
            )
    clip = RUNS_DIR / "clip.json"
    parts = [
        "# MADiff on MPE simple_spread",
        "Normalised team return of the final model, 1 seed, the same evaluation episodes for every agent of a "
        "dataset (0 = uniform random −24.69, 100 = the scripted expert −5.66: the shared datasets' README, "
        "measured with mpe2; not comparable with OMAR / MADiff's numbers). Data: `../shared/datasets/"
        "mpe-spread-{expert,medium}.hdf5` (1000 episodes × 25 steps). Settings: `zoo/benchmarks/madiff.py`.",
        markdown_table(
            [
                "dataset",
                "agent",
                "score",
                "team return",
                "episodes",
                "gradient steps",
                "steps / s",
                "train min",
                "ms per env step",
            ],
            rows,
        ),
        "## Decision latency",
        "`predict` at batch 1 planning from scratch (DDIM 10 steps, classifier-free guidance, inverse dynamics), "
        "median of 20 on the otherwise idle machine (`--latency`), against one bare U-Net forward at one denoising "
        "step's batch (2 rows for MADiff-C, 2 × 3 for MADiff-D). A decision makes 10 denoiser calls, so 10 is "
        "the floor of the last column.",
        markdown_table(["dataset", "agent", "predict ms", "forward ms", "predict ÷ forward"], latency_rows),
    ]
    if clip.exists():
        parts.append(f"Clip: `{CLIP.name}`, one episode of {json.loads(clip.read_text())['run']}.")
    parts.append(f"Hardware: {hardware_line(runs[0]['hardware'])}.")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffgym benchmark madiff", description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--agents", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps of each MADiff model")
    parser.add_argument("--bc-steps", type=int, default=20_000, help="gradient steps of per-agent BC")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="folder of the mpe-spread files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--clip", action="store_true", help="render the best MADiff model")
    parser.add_argument(
        "--latency", action="store_true", help="re-measure the saved models' latency (on an idle machine)"
    )
    parser.add_argument("--report", action="store_true", help="merge the runs into the report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    if not (args.clip or args.report or args.latency):
        for dataset in args.datasets:
            for agent in args.agents:
                for seed in args.seeds:
                    record = run_one(agent, dataset, seed, args)
                    write_json(RUNS_DIR / f"{dataset}_{agent}_s{seed}.json", record)
                    print(f"{agent} {dataset} seed {seed}: score {record['score']:.1f}", flush=True)
    if args.latency:
        remeasure_latency()
    if args.clip:
        print(f"clip: {render_clip([json.loads(p.read_text()) for p in RUNS_DIR.glob('*_s*.json')])}")
    print(report().read_text())
    return 0
