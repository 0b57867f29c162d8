"""Training speed: gradient steps per second, and how much of a step is spent in torch kernels.

For each agent on the hopper-medium data: steps per second with 1 and 2 torch threads, and,
from ``torch.profiler`` over the same steps, the share of wall time spent inside ATen kernels
(matmuls, activations, their backward, the optimiser): what is left is Python and dispatch
overhead. A share near 100 % means the step runs at the network's own cost, so only smaller
networks or fewer passes could make it faster. Writes ``zoo/results/train_speed.{json,md}``.

    diffgym benchmark train_speed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch.profiler import ProfilerActivity, profile

from diffgym.zoo.benchmarks.d4rl import AGENTS, DEFAULT_DATA_DIR, LABELS
from diffgym.zoo.benchmarks.report import markdown_table, write_report


def steps_per_second(model: Any, steps: int) -> float:
    model.learn(20)  # warm-up
    started = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - started)


def kernel_share(model: Any, steps: int) -> float:
    """Self time of ATen ops (``aten::``) ÷ wall time, over ``steps`` gradient steps."""
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        model.learn(steps)
    wall = time.perf_counter() - started
    aten_us = sum(e.self_cpu_time_total for e in profiler.key_averages() if e.key.startswith("aten::"))
    return aten_us / 1e6 / wall


def measure(data_dir: Path, steps: int) -> list[dict[str, Any]]:
    rows = []
    for name, cls in AGENTS.items():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = cls(
                "MlpPolicy", gym.make("Hopper-v5"), dataset=str(data_dir / "hopper-medium.hdf5"), seed=0
            )
            row = {"agent": name, "threads": threads, "steps_per_second": steps_per_second(model, steps)}
            if threads == 1:
                row["kernel_share"] = kernel_share(model, steps)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffgym benchmark train_speed", description=__doc__)
    parser.add_argument("--steps", type=int, default=200, help="gradient steps per measurement")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    args = parser.parse_args(argv)
    rows = measure(Path(args.data_dir), args.steps)
    table = markdown_table(
        ["agent", "torch threads", "gradient steps / s", "time in torch kernels"],
        [
            [
                LABELS[r["agent"]],
                r["threads"],
                f"{r['steps_per_second']:.1f}",
                f"{100 * r['kernel_share']:.0f} %" if "kernel_share" in r else "-",
            ]
            for r in rows
        ],
    )
    text = "\n\n".join(
        [
            "# Training speed (hopper-medium, batch 256, default networks)",
            f"{args.steps} gradient steps per measurement after 20 warm-up steps, machine otherwise idle. "
            "*time in torch kernels*: self time of `aten::` ops from `torch.profiler` ÷ wall time "
            "(the profiler's own overhead lowers it slightly).",
            table,
        ]
    )
    print(write_report("train_speed", {"steps": args.steps, "rows": rows}, text).read_text())
    return 0
