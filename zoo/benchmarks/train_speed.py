"""Training speed against the networks' own cost: gradient steps per second, ``predict`` latency, and
the floor of each (:mod:`~diffgym.zoo.benchmarks.kernel_floor`: the step's matrix products and
convolutions replayed alone).

For each agent on the hopper-medium data (its ``zoo/hyperparams`` settings for that key), at each
precision of ``suite:precision`` (``"fp32"``, and ``"bf16"``: bfloat16 autocast, see
:mod:`diffgym.precision`):

- gradient steps per second at each thread count of ``suite:threads`` (``--steps`` steps after 20
  warm-up steps);
- the floor of one step at 1 thread, and the step's time ÷ floor;
- the same steps per second with the networks compiled (``suite:compile``; see
  :mod:`diffgym.compilation`), after the eager measurements;
- ``predict`` at batch 1 (median, fp32, 1 thread, eager; a new decision each call) and its floor.

Nothing is evaluated. The precision is switched on the one built model (``model.precision``) between
measurements, so every measurement of an agent trains the same networks.

    diffgym benchmark train_speed
    diffgym benchmark train_speed --agents dql idql --steps 100 --set "suite:threads=[1]"
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch._dynamo

from diffgym.compilation import compile_networks
from diffgym.zoo.benchmarks.d4rl import SUITE as D4RL
from diffgym.zoo.benchmarks.harness import Budget, Contender, Report, Run, Suite
from diffgym.zoo.benchmarks.kernel_floor import measure_floor
from diffgym.zoo.benchmarks.report import latency_ms, markdown_table

WARM_UP = 20  # gradient steps before each timing
#: gradient steps a step's floor is averaged over: TD3+BC updates its actor every 2nd step
FLOOR_STEPS = 2


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


def floor_record(fn: Any, calls: int = 1) -> dict[str, float]:
    """The floor of ``fn()`` at 1 thread, per call of the ``calls`` it stands for: seconds, FLOPs and
    the products' GFLOP/s."""
    with torch_threads(1):
        floor = measure_floor(fn)
    return {
        "seconds": floor.seconds / calls,
        "flops": floor.flops / calls,
        "gflops_per_second": floor.gflops_per_second,
    }


def measure_speed(model: Any, run: Run) -> dict[str, Any]:
    """The run's procedure: per precision, steps/s at each thread count and the step's floor, then
    the same steps/s with the networks compiled (``suite:compile``); then ``predict``'s latency
    and floor (fp32, 1 thread, as built: eager)."""
    params = run.session.params
    speed: dict[str, dict[str, float]] = {}
    floor: dict[str, dict[str, float]] = {}
    observation = run.make_env().reset(seed=0)[0]
    act = lambda: model.predict(observation, deterministic=run.contender.deterministic)  # noqa: E731
    with torch_threads(1):
        predict = {"ms": latency_ms(act), "floor": floor_record(act)}
    for compiled in (False, True) if params["compile"] else (False,):
        if compiled:
            compile_networks(model.policy, model.device)
        for precision in params["precision"]:
            torch._dynamo.reset()  # each precision compiles afresh (else both fill one recompile limit)
            model.precision = precision
            variant = f"{precision}+compile" if compiled else precision
            speed[variant] = {}
            for threads in params["threads"]:
                with torch_threads(threads):
                    speed[variant][str(threads)] = steps_per_second(model, run.steps)
            if not compiled:  # compiling changes no product
                floor[precision] = floor_record(lambda: model.learn(FLOOR_STEPS), FLOOR_STEPS)
    return {"steps_per_second": speed, "step_floor": floor, "predict": predict}


SPEED_HEADER = ["agent", "precision (+ compiled networks)", "torch threads", "gradient steps / s", "floor (ms / step)",
                "products' GFLOP/s", "÷ floor"]  # fmt: skip


def speed_table(report: Report) -> str:
    rows = []
    for r in report.runs:
        for variant, by_threads in r["steps_per_second"].items():
            floor = r["step_floor"][variant.split("+")[0]]
            for threads, speed in by_threads.items():
                ratio = f"{1 / speed / floor['seconds']:.2f}" if threads == "1" else "-"
                rows.append([
                    report.suite.label(r["config"]["agent"]), variant, threads, f"{speed:.1f}",
                    f"{1e3 * floor['seconds']:.1f}", f"{floor['gflops_per_second']:.0f}", ratio,
                ])  # fmt: skip
    steps = ", ".join(sorted({str(r["budget"]["gradient_steps"]) for r in report.runs}))
    return "\n\n".join(
        [
            f"{steps} gradient steps per measurement after {WARM_UP} warm-up steps. *floor*: one step's "
            "matrix products and convolutions, each replayed alone on fresh tensors of the same layout "
            "(1 thread; `zoo/benchmarks/kernel_floor.py`); *GFLOP/s*: their FLOPs "
            "(`torch.utils.flop_counter`) ÷ that time; *÷ floor*: the step's time at 1 thread ÷ its floor.",
            markdown_table(SPEED_HEADER, rows),
        ]
    )


def predict_table(report: Report) -> str:
    rows = [
        [report.suite.label(r["config"]["agent"]), f"{r['predict']['ms']:.2f}",
         f"{1e3 * r['predict']['floor']['seconds']:.2f}", f"{r['predict']['ms'] / 1e3 / r['predict']['floor']['seconds']:.2f}"]
        for r in report.runs
    ]  # fmt: skip
    return "\n\n".join(
        [
            "`predict` at batch 1, fp32, 1 thread: median over repeated calls, a new decision each call "
            "(planners replan, Diffusion Policy samples a new chunk).",
            markdown_table(["agent", "predict (ms)", "floor (ms)", "÷ floor"], rows),
        ]
    )


SUITE = Suite(
    name="train_speed",
    title="Training speed (hopper-medium, default networks)",
    description="Gradient steps per second and predict latency of each agent against their floors, "
    "machine otherwise idle.",
    datasets=("hopper-medium",),
    agents=(
        *D4RL.agents,
        Contender("diffuser", title="Diffuser"),
        Contender("decision_diffuser", title="Decision Diffuser"),
        Contender("diffusion_policy", title="Diffusion Policy"),
    ),
    budget=Budget(steps=200),
    params={"threads": [1, 2], "precision": ["fp32", "bf16"], "compile": True},
    procedure=measure_speed,
    sections=(speed_table, predict_table),
)
