"""MPE simple_spread benchmark: MADiff-C and MADiff-D next to independent per-agent behaviour cloning.

Data: the shared ``mpe-spread-{expert,medium}.hdf5`` files (1000 episodes of 25 steps, 3 agents),
imported into diffgym's team format. Env: ``mpe2`` ``simple_spread_v3.parallel_env(N=3,
local_ratio=0.5, max_cycles=25, continuous_actions=True)``, the files' env. Score: the team return
(sum over steps of the agents' mean reward) normalised with the datasets' README references
(0 = uniform random −24.69, 100 = the scripted expert −5.66).

- **MADiff-C / MADiff-D**: ``zoo/hyperparams/madiff.yml``, key ``mpe-spread`` (sized for a 2-core
  CPU; the file names the paper's values); MADiff-D also sets ``policy_kwargs.decentralized``
  (trained with one agent's observation inpainted, acting from each agent's own observation).
  Fresh sampling noise when acting (``deterministic=False``), as MADiff evaluates.
- **Per-agent BC** (:class:`~diffgym.agents.baselines.TeamBC`, ``zoo/hyperparams/team_bc.yml``): an
  independent MLP (2 × 256, ReLU, tanh output) per agent from its own observation, MSE on actions
  scaled to [−1, 1], Adam 1e-3, batch 256, 20k gradient steps.
- Every agent of a dataset trains on the same data in the same run and is evaluated on the same
  episodes (episode ``i`` reset with seed ``10_000 + seed + i``).
- **Latency**: ``predict`` per env step at batch 1 (a plan per step), against one bare U-Net forward at
  the batch of a denoising step (classifier-free guidance doubles the rows; MADiff-D samples one plan
  per agent).
- **Clip**: one episode of each MADiff run of seed 0, ``<out>/madiff/clips/<run>.gif``; the report
  names the best-scoring one.

    diffgym benchmark madiff --datasets mpe-spread-expert --agents madiff-c bc --steps 20000
"""

from __future__ import annotations

from typing import Any

import imageio.v2 as imageio
import torch
from pettingzoo import ParallelEnv

from diffgym.agents.madiff import MADiff
from diffgym.wrappers import evaluate_team
from diffgym.zoo.benchmarks.harness import (
    EVAL_SEED,
    Budget,
    Contender,
    Dataset,
    Report,
    Run,
    Suite,
    evaluate_team_episodes,
)
from diffgym.zoo.benchmarks.report import latency_ms, markdown_table

ENV_KWARGS = dict(N=3, local_ratio=0.5, max_cycles=25, continuous_actions=True)  # the shared files' env


def make_env(dataset: Dataset, render_mode: str | None = None) -> ParallelEnv:
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(**ENV_KWARGS, render_mode=render_mode)


def unet_latency(model: Any, run: Run) -> dict[str, float]:
    """One U-Net forward at a denoising step's batch (guided and unguided rows, per agent for MADiff-D)."""
    if not isinstance(model, MADiff):
        return {}
    policy = model.policy
    rows = 2 * (policy.n_agents if policy.decentralized else 1)
    x = torch.zeros(rows, *policy.plan_shape)
    t = torch.zeros(rows, dtype=torch.long)
    cond = torch.zeros(rows, 1)
    with torch.no_grad():
        return {"forward_ms": latency_ms(lambda: policy.ema_model.denoiser(x, t, cond))}


def render_clip(model: Any, run: Run) -> dict[str, str]:
    """One evaluation episode of a MADiff run of seed 0, every other pixel, as a GIF."""
    if not isinstance(model, MADiff) or run.seed != 0:
        return {}
    frames: list[Any] = []
    evaluate_team(
        model,
        make_env(run.dataset, render_mode="rgb_array"),
        1,
        run.contender.deterministic,
        seed=EVAL_SEED,
        callback=lambda env: frames.append(env.render()[::2, ::2]),
    )
    path = run.session.folder / "clips" / f"{run.name}.gif"
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames, duration=0.1, loop=0)
    return {"gif": str(path)}


def latency_section(report: Report) -> str:
    rows = [
        [r["config"]["dataset"], report.suite.label(r["config"]["agent"]), f"{r['latency']['predict_ms']:.1f}",
         f"{forward:.2f}", f"{r['latency']['predict_ms'] / forward:.1f}"]
        for r in report.runs
        if (forward := r["extra"]["unet"].get("forward_ms"))
    ]  # fmt: skip
    clips = [r for r in report.runs if r["extra"]["clip"]]
    best = max(clips, key=lambda r: r["final"]["score"], default=None)
    return "\n\n".join(
        [
            "## Decision latency",
            "`predict` at batch 1 planning from scratch (classifier-free guidance, inverse dynamics), median by "
            "`torch.utils.benchmark`, against one bare U-Net forward at one denoising step's batch (2 rows for "
            "MADiff-C, 2 × 3 for MADiff-D). A decision makes one denoiser call per sampler step, the floor of "
            "the last column.",
            markdown_table(["dataset", "agent", "predict ms", "forward ms", "predict ÷ forward"], rows),
            ""
            if best is None
            else f"Clip of the best MADiff run ({best['run']}): `{best['extra']['clip']['gif']}`.",
        ]
    )


SUITE = Suite(
    name="madiff",
    title="MADiff on MPE simple_spread",
    description=(
        "Normalised team return (0 = uniform random −24.69, 100 = the scripted expert −5.66: the shared "
        "datasets' README, measured with mpe2; not comparable with OMAR / MADiff's numbers), the same "
        "evaluation episodes for every agent of a dataset. Data: the shared `mpe-spread-{expert,medium}.hdf5` "
        "(1000 episodes × 25 steps). *data's own*: the data's mean team return, normalised."
    ),
    datasets=("mpe-spread-expert", "mpe-spread-medium"),
    agents=(
        Contender("madiff-c", agent="madiff", deterministic=False, title="MADiff-C"),
        Contender(
            "madiff-d",
            agent="madiff",
            overrides=("policy_kwargs.decentralized=true",),
            deterministic=False,
            title="MADiff-D",
        ),
        Contender("bc", agent="team_bc", title="per-agent BC"),
    ),
    budget=Budget(final_episodes=50),
    make_env=make_env,
    zoo_env=lambda dataset: {"id": "mpe2.simple_spread_v3", "kwargs": ENV_KWARGS},
    evaluate=evaluate_team_episodes,
    measures={"unet": unet_latency, "clip": render_clip},
    sections=(latency_section,),
)
