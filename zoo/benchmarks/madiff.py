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
- **Per-agent BC** (:class:`PerAgentBC`, defined here until ``agents/`` has a team BC agent): an
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
import numpy as np
import torch
from pettingzoo import ParallelEnv
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from torch import Tensor, nn

from diffgym.agents.madiff import MADiff
from diffgym.data import load_dataset
from diffgym.data.team import MultiAgentSegmentDataset
from diffgym.networks import EnsembleMLP, make_adam
from diffgym.registry import AgentSpec
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


class PerAgentBC(nn.Module):
    """One MLP per agent, ``a_k = f_k(o_k)``, each trained by MSE on its own agent's actions.

    Built and trained as the harness builds agents (``PerAgentBC(policy, env, dataset=..., seed=...)``,
    ``learn(steps, callback)``, SB3 callbacks called once per gradient step) and acting through
    ``predict({agent: obs}, state, episode_start, deterministic)`` as :func:`evaluate_team` calls it.
    """

    mean: Tensor  # (n, obs_dim) observation mean per agent
    std: Tensor  # (n, obs_dim) observation std per agent

    def __init__(
        self,
        policy: str,
        env: ParallelEnv,
        dataset: str,
        seed: int = 0,
        hidden: int = 256,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        segments = MultiAgentSegmentDataset(load_dataset(dataset), horizon=1)
        self.agents = segments.agents
        self.observations = torch.as_tensor(segments.observations, dtype=torch.float32)  # (N, n, obs_dim)
        actions = torch.as_tensor(segments.actions, dtype=torch.float32)
        self.actions = actions * 2 - 1  # (N, n, action_dim): MPE's [0, 1] scaled to the tanh's [-1, 1]
        torch.manual_seed(seed)
        obs_dim, action_dim = self.observations.shape[-1], self.actions.shape[-1]
        self.nets = EnsembleMLP(
            obs_dim, action_dim, len(self.agents), hidden, num_hidden=2, activation=nn.ReLU
        )
        self.register_buffer("mean", self.observations.mean(0))
        self.register_buffer("std", self.observations.std(0).clamp_min(1e-3))
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = make_adam(self.parameters(), lr=learning_rate)
        self.batch_size, self.num_timesteps = batch_size, 0
        self.logger = configure(None, [])  # what SB3 callbacks read

    def forward(self, observations: Tensor) -> Tensor:
        """(B, n, obs_dim) -> (B, n, action_dim) in [-1, 1]: agent k's MLP on agent k's observation."""
        x = (observations - self.mean) / self.std
        return torch.tanh(self.nets(x.transpose(0, 1))).transpose(0, 1)

    def get_env(self) -> None:
        return None

    def learn(self, total_timesteps: int, callback: BaseCallback | None = None) -> PerAgentBC:
        """``total_timesteps`` gradient steps on random batches of the data."""
        callback = callback or CallbackList([])
        callback.init_callback(self)  # type: ignore[arg-type]
        callback.on_training_start(locals(), globals())
        for _ in range(total_timesteps):
            index = torch.randint(0, len(self.observations), (self.batch_size,), generator=self.generator)
            loss = ((self(self.observations[index]) - self.actions[index]) ** 2).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.num_timesteps += 1
            if not callback.on_step():
                break
        callback.on_training_end()
        return self

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


#: per-agent BC as the harness builds agents (this suite's own; not in the registry)
PER_AGENT_BC = AgentSpec("per_agent_bc", PerAgentBC, tasks=("offline", "team"), baseline=True)


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
        Contender("bc", agent=PER_AGENT_BC, overrides=("n_timesteps=20000",), title="per-agent BC"),
    ),
    budget=Budget(final_episodes=50),
    make_env=make_env,
    evaluate=evaluate_team_episodes,
    measures={"unet": unet_latency, "clip": render_clip},
    sections=(latency_section,),
)
