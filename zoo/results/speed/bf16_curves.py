"""Loss curves of an agent on hopper-medium under fp32 and bf16 autocast, on CPU, 1 thread.

Trains AGENT (its class defaults, ``device="cpu"``) for STEPS gradient steps in blocks of 100,
recording the training monitor's means after each block, then scores the final policy on 5
Hopper-v5 episodes (env seeded ``10_000 + SEED``). Writes ``bf16/<agent>_<precision>_s<seed>.json``
beside this file. ``--table`` reads those files back and prints a Markdown table of fp32 against
bf16 (seeds 0 and 1).

Usage (from the repository root)::

    python zoo/results/speed/bf16_curves.py AGENT PRECISION SEED STEPS [--data FILE]
    python zoo/results/speed/bf16_curves.py AGENT --table
"""

import argparse
import json
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[3]  # the repository root
DATA = Path("../shared/datasets/hopper-medium.hdf5")  # from the repository root
OUT = Path(__file__).resolve().parent / "bf16"
RUNS = [("fp32", 0), ("bf16", 0), ("fp32", 1), ("bf16", 1)]
TABLE_STEPS = (500, 1000, 2000)
TABLE_STATS = ("critic_loss", "q_mean", "bc_loss")


def train(agent: str, precision: str, seed: int, steps: int, data: Path) -> None:
    # imported here, not at the top: --table needs none of them
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    from diffgym import registry

    model = registry.get(agent).make(
        "MlpPolicy", gym.make("Hopper-v5"), dataset=str(data), seed=seed, precision=precision, device="cpu"
    )
    curve = []
    started = time.perf_counter()
    for block in range(steps // 100):
        model.learn(100, reset_num_timesteps=False)
        curve.append({"step": (block + 1) * 100, **model._monitor.means})
    seconds = time.perf_counter() - started
    env = Monitor(gym.make("Hopper-v5"))
    env.reset(seed=10_000 + seed)
    returns, _ = evaluate_policy(model, env, n_eval_episodes=5, return_episode_rewards=True)
    assert isinstance(returns, list)  # episode returns, as return_episode_rewards=True gives
    out = {
        "agent": agent,
        "precision": precision,
        "seed": seed,
        "steps": steps,
        "train_seconds": seconds,
        "returns": returns,
        "curve": curve,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"{agent}_{precision}_s{seed}.json").write_text(json.dumps(out, indent=1))
    print(agent, precision, seed, "steps/s", steps / seconds, "returns", sum(returns) / len(returns))


def table(agent: str) -> str:
    """Markdown: the monitor's means at TABLE_STEPS and the final mean return, one column per run."""
    runs = {}
    for precision, seed in RUNS:
        path = OUT / f"{agent}_{precision}_s{seed}.json"
        if path.exists():
            runs[f"{precision} s{seed}"] = json.loads(path.read_text())
    lines = ["| | " + " | ".join(runs) + " |", "| --- |" + " --- |" * len(runs)]
    for stat in TABLE_STATS:
        for step in TABLE_STEPS:
            cells = []
            for run in runs.values():
                row: dict[str, float] = next((r for r in run["curve"] if r["step"] == step), {})
                cells.append(f"{row[stat]:.4g}" if stat in row else "-")
            lines.append(f"| {stat} @ {step} | " + " | ".join(cells) + " |")
    means = [sum(run["returns"]) / len(run["returns"]) for run in runs.values()]
    lines.append("| return (5 episodes, mean) | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="fp32 vs bf16 loss curves on hopper-medium.")
    parser.add_argument("agent", help="registered agent name, e.g. dql")
    parser.add_argument(
        "precision", nargs="?", choices=("fp32", "bf16"), metavar="PRECISION", help="fp32 or bf16"
    )
    parser.add_argument("seed", nargs="?", type=int, metavar="SEED")
    parser.add_argument(
        "steps", nargs="?", type=int, metavar="STEPS", help="gradient steps, a multiple of 100"
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="D4RL-layout HDF5 file (relative: from the repo root)"
    )
    parser.add_argument("--table", action="store_true", help="print the Markdown table of bf16/ and exit")
    args = parser.parse_args()
    if args.table:
        print(table(args.agent))
    elif args.steps is None:
        parser.error("PRECISION SEED STEPS are required unless --table")
    else:
        train(args.agent, args.precision, args.seed, args.steps, ROOT / args.data)


if __name__ == "__main__":
    main()
