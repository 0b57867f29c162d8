"""Offline locomotion benchmark: Diffusion-QL, IDQL and the TD3+BC, IQL and BC baselines on D4RL-style data.

Every agent trains on the same dataset with its hyperparameters from ``zoo/hyperparams/<agent>.yml``
(the same 20k-step budget for all four; Diffusion-QL's per-task gradient-norm clip), is evaluated
with deterministic actions every ``--eval-every`` steps (for the "best" column) and at the end (the
"last" column), and is scored with D4RL's reference returns (the shared datasets' README explains
why D4RL's references apply to these Gymnasium v5 envs only approximately). Besides the harness's
``predict`` latency, each run times one bare forward of the agent's denoiser (the speed reference).

    diffgym benchmark d4rl --agents dql --datasets hopper-medium --steps 20000
    diffgym benchmark d4rl --report
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffgym.diffusion import GaussianDiffusion
from diffgym.zoo.benchmarks.harness import Budget, Report, Run, Suite
from diffgym.zoo.benchmarks.report import latency_ms, markdown_table


def denoiser_latency(model: Any, run: Run) -> dict[str, float]:
    """One bare forward of a diffusion actor's denoiser at batch 1, and the chain's floor: ``steps``
    forwards at batch ``num_candidates`` (acting samples all candidates in one batch). {} for
    agents without a diffusion actor."""
    policy = model.policy
    actor = getattr(policy, "actor", None)
    if not isinstance(actor, GaussianDiffusion):
        return {}
    steps = policy.sampler.steps(actor.num_timesteps)
    forward = {batch: _forward_ms(actor, policy, batch) for batch in (1, policy.num_candidates)}
    return {
        "denoiser_forward_ms": forward[1],
        "sampler_steps": steps,
        "chain_floor_ms": steps * forward[policy.num_candidates],
    }


def _forward_ms(actor: GaussianDiffusion, policy: Any, batch: int) -> float:
    x = torch.zeros(batch, policy.action_dim)
    t = torch.zeros(batch, dtype=torch.long)
    cond = torch.zeros(batch, policy.obs_dim)
    with torch.no_grad():
        return latency_ms(lambda: actor.denoiser(x, t, cond))


def speed_section(report: Report) -> str:
    """Per agent: training speed, ``predict`` latency and its ratio to the denoiser's forward and floor."""
    rows = []
    for contender in report.suite.contenders:
        runs = report.runs_of(contender.name)
        if not runs:
            continue
        predict = [r["latency"]["predict_ms"] for r in runs]
        forward = [r["extra"]["denoiser"].get("denoiser_forward_ms") for r in runs]
        floor = [r["extra"]["denoiser"].get("chain_floor_ms") for r in runs]
        rows.append(
            [
                contender.label,
                f"{np.mean([r['gradient_steps_per_second'] for r in runs]):.1f}",
                f"{np.mean(predict):.2f}",
                _ratio(predict, forward),
                _ratio(predict, floor),
            ]
        )
    header = ["agent", "gradient steps / s", "predict ms (batch 1)", "predict ÷ one denoiser forward (batch 1)",
              "predict ÷ (steps × forward at batch N)"]  # fmt: skip
    return "\n\n".join(
        [
            "## Speed",
            "Gradient steps per second exclude evaluation time. Latency: median `predict` of one observation "
            "(deterministic: N candidates sampled in one batch through the chain, then scored), as a ratio to "
            "one bare forward of the agent's denoiser at batch 1, and to the chain's floor (steps × one "
            "forward at batch N): the rest is the critic and the sampler's arithmetic.",
            markdown_table(header, rows),
        ]
    )


def _ratio(numerators: list[float], denominators: list[float | None]) -> str:
    pairs = [n / d for n, d in zip(numerators, denominators, strict=True) if d]
    return f"{np.mean(pairs):.2f}" if pairs else "-"


SUITE = Suite(
    name="d4rl",
    title="Offline locomotion benchmark (D4RL-style data made on this machine)",
    description=(
        "D4RL-normalised scores (100 · (return − random) / (expert − random), D4RL's references) of "
        "deterministic actions. *data's own* = the behaviour data's mean episode return, normalised. Data: "
        "the shared D4RL-layout files (Gymnasium MuJoCo v5, see their README), not D4RL's, so the numbers "
        "are not comparable one-to-one with published D4RL results. Hyperparameters: `zoo/hyperparams/`."
    ),
    datasets=("hopper-medium", "hopper-medium-replay", "halfcheetah-medium", "halfcheetah-medium-replay"),
    agents=("td3bc", "iql", "bc", "dql", "idql"),
    budget=Budget(eval_every=5_000, eval_episodes=5, final_episodes=10),
    measures={"denoiser": denoiser_latency},
    sections=(speed_section,),
)
