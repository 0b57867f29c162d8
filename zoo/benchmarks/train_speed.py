"""Training speed: gradient steps per second, and how much of a step is spent in torch kernels.

For each agent on the hopper-medium data (its ``zoo/hyperparams`` settings for that key): steps per
second at each thread count of ``suite:threads`` (1 and 2), and, from ``torch.profiler`` over the same steps, the share of
wall time spent inside ATen kernels (matmuls, activations, their backward, the optimiser): what is
left is Python and dispatch overhead. A share near 100 % means the step runs at the network's own
cost, so only smaller networks or fewer passes could make it faster. ``--steps`` is the number of
gradient steps per measurement (after 20 warm-up steps); nothing is evaluated.

    diffgym benchmark train_speed
    diffgym benchmark train_speed --steps 20 --set "suite:threads=[1]"
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from diffgym.zoo.benchmarks.d4rl import SUITE as D4RL
from diffgym.zoo.benchmarks.harness import Budget, Report, Run, Suite
from diffgym.zoo.benchmarks.report import markdown_table

WARM_UP = 20  # gradient steps before each timing


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with ``threads`` torch threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def steps_per_second(model: Any, steps: int) -> float:
    model.learn(WARM_UP)
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
    return float(aten_us / 1e6 / wall)


def measure_speed(model: Any, run: Run) -> dict[str, Any]:
    """The run's procedure: steps per second at each of the suite's thread counts, the kernel share at 1."""
    speeds = {}
    for threads in run.session.params["threads"]:
        with torch_threads(threads):
            speeds[str(threads)] = steps_per_second(model, run.steps)
    with torch_threads(1):
        share = kernel_share(model, run.steps)
    return {"steps_per_second": speeds, "kernel_share": share}


def speed_table(report: Report) -> str:
    rows = [
        [report.suite.label(r["config"]["agent"]), threads, f"{speed:.1f}",
         f"{100 * r['kernel_share']:.0f} %" if threads == "1" else "-"]
        for r in report.runs
        for threads, speed in r["steps_per_second"].items()
    ]  # fmt: skip
    steps = ", ".join(sorted({str(r["budget"]["gradient_steps"]) for r in report.runs}))
    return "\n\n".join(
        [
            f"{steps} gradient steps per measurement after {WARM_UP} warm-up steps. *time in torch kernels*: "
            "self time of `aten::` ops from `torch.profiler` ÷ wall time (the profiler's own overhead lowers "
            "it slightly).",
            markdown_table(["agent", "torch threads", "gradient steps / s", "time in torch kernels"], rows),
        ]
    )


SUITE = Suite(
    name="train_speed",
    title="Training speed (hopper-medium, default networks)",
    description="Gradient steps per second of each agent, machine otherwise idle.",
    datasets=("hopper-medium",),
    agents=D4RL.agents,
    budget=Budget(steps=200),
    params={"threads": [1, 2]},  # torch thread counts measured
    procedure=measure_speed,
    sections=(speed_table,),
)
