"""MADiff: multi-agent trajectory diffusion for PettingZoo teams, centralised or decentralised."""

from __future__ import annotations

import os
from typing import Any, ClassVar, TypeAlias

import torch
from gymnasium import spaces
from minari import MinariDataset
from pettingzoo import ParallelEnv
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from diffgym.agents.madiff.policies import MADiffPolicy
from diffgym.data import DatasetLike
from diffgym.data.team import MultiAgentSegmentDataset, check_agents_and_spaces, dataset_agents
from diffgym.planning import PlanningAlgorithm
from diffgym.trajectory import SegmentBatches, SegmentSamples, SequenceAlgorithm
from diffgym.wrappers.multiagent import JointAgentEnv

TeamEnv: TypeAlias = ParallelEnv | GymEnv | str | None


def as_joint_env(env: TeamEnv) -> GymEnv | str | None:
    """A ``ParallelEnv`` as a :class:`~diffgym.wrappers.JointAgentEnv`; anything else unchanged."""
    return JointAgentEnv(env) if isinstance(env, ParallelEnv) else env


class MADiff(PlanningAlgorithm):
    """MADiff (Zhu et al., "MADiff: Offline Multi-agent Learning with Diffusion Models", NeurIPS 2024)
    as an SB3 algorithm over a PettingZoo team, learning offline from a multi-agent dataset
    (:mod:`diffgym.data.multiagent`'s format).

    ``MADiff("MlpPolicy", parallel_env, dataset=...)``: the ``ParallelEnv`` is stepped through
    :class:`~diffgym.wrappers.JointAgentEnv` (``Dict`` spaces keyed by agent; SB3 wraps that in a
    ``DummyVecEnv`` as usual). ``predict({agent: obs})`` returns ``{agent: action}`` (a VecEnv batch
    gives one dict per env); :func:`~diffgym.wrappers.evaluate_team` plays episodes on the parallel env.

    Each gradient step (a batch of ``batch_size`` segments of ``horizon`` steps of the team):

    - the multi-agent U-Net (:class:`~diffgym.denoisers.MultiAgentTemporalUnet`: shared weights,
      attention across agents) learns to predict the noise of every agent's observation trajectory,
      conditioned on the segment's team return (dropped with probability ``cond_drop_prob`` for
      classifier-free guidance), the first step inpainted: every agent's (MADiff-C) or one random
      agent's (MADiff-D, ``policy_kwargs=dict(decentralized=True)``);
    - each agent's inverse-dynamics model regresses its ``a_t`` from its ``(o_t, o_{t+1})`` on real steps;
    - the loss is ``(diffusion + inverse) / 2`` (Decision Diffuser's, which MADiff builds on: the core's
      :meth:`~diffgym.planning.PlanningAlgorithm._update_return_conditioned`);
    - the EMA starts after ``ema_start`` steps and is updated every ``ema_every`` steps.

    Deliberate differences from MADiff: the return condition is the *team* return (the mean of the
    agents' rewards, as the dataset format defines it) in [0, 1] over the dataset's segment returns,
    where MADiff feeds each agent its own return divided by a hand-set scale; no observation history
    (MADiff can condition on past observations); MADiff-D is trained with one random agent's first
    observation inpainted (so the model learns to plan the team from one agent's view). By default the
    U-Net predicts x0 on standardised observations (MADiff: ε on a [-1, 1] CDF normalisation with x0
    clipped; both ε variants failed at CPU budgets, see :class:`MADiffPolicy`); the U-Net is not told
    the episode's time step (MADiff's takes ``env_timestep``) and sampling starts from unit noise
    (MADiff's from 0.5 · N(0, I)).
    Offline only: ``learn(online=True)`` raises; ``total_timesteps`` counts gradient steps.

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        policy: ``"MlpPolicy"`` or ``"MultiInputPolicy"`` (the same :class:`MADiffPolicy`).
        env: a PettingZoo ``ParallelEnv``, a joint-agent Gymnasium env, or None (with a dataset).
        dataset: a multi-agent dataset; its agents and spaces must match the env's; its agent order is
            the model's.
        learning_rate: Adam learning rate (MADiff: 2e-4).
        batch_size: segments per gradient step (MADiff MPE: 32).
        gamma: discount of the team returns-to-go the condition is computed from (MADiff: 0.99).
        ema_start: gradient steps before the EMA starts averaging (MADiff: 2000; 500 here, for CPU
            budgets of a few tens of thousands of steps).
        ema_every: gradient steps between EMA updates (MADiff: 10).
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": MADiffPolicy, "MultiInputPolicy": MADiffPolicy}
    action_space_types: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Dict,)
    policy: MADiffPolicy

    def __init__(
        self,
        policy: str | type[MADiffPolicy],
        env: TeamEnv,
        dataset: DatasetLike | None = None,
        learning_rate: float = 2e-4,
        batch_size: int = 32,
        gamma: float = 0.99,
        ema_start: int = 500,
        ema_every: int = 10,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        env = as_joint_env(env)
        policy_kwargs = dict(policy_kwargs or {})
        if "agents" not in policy_kwargs:
            policy_kwargs["agents"] = self._team_order(env, dataset)
        super().__init__(
            "MultiInputPolicy" if policy == "MlpPolicy" else policy,  # SB3 wants this name for Dict spaces
            env,
            dataset,
            ema_start=ema_start,
            ema_every=ema_every,
            learning_rate=learning_rate,
            batch_size=batch_size,
            gamma=gamma,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    @staticmethod
    def _team_order(env: GymEnv | str | None, dataset: DatasetLike | None) -> list[str] | None:
        """The agent order: the dataset's when there is one (it is the training data's), else the env's."""
        if dataset is not None:
            if isinstance(env, JointAgentEnv):
                check_agents_and_spaces(dataset, env)  # names the agent that differs
            return list(dataset_agents(dataset))
        agents = env.get_attr("agents")[0] if isinstance(env, VecEnv) else getattr(env, "agents", None)
        return list(agents) if agents is not None else None

    @staticmethod
    def _wrap_env(env: Any, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        return SequenceAlgorithm._wrap_env(as_joint_env(env), verbose, monitor_wrapper)  # type: ignore[arg-type]

    @classmethod
    def load(  # type: ignore[override]
        cls, path: str | os.PathLike, env: TeamEnv = None, **kwargs: Any
    ) -> MADiff:
        """:meth:`~diffgym.algorithm.OfflineAlgorithm.load`, also taking a ``ParallelEnv``."""
        return super().load(path, env=as_joint_env(env), **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ data

    def _offline_data(self, dataset: MinariDataset) -> SegmentBatches:
        """The team's segments on the device, agents in the model's order."""
        segments = MultiAgentSegmentDataset(dataset, self.policy.segment_horizon, discount=self.gamma)
        if len(segments) == 0:
            raise ValueError(f"{dataset.id} has no segment of {self.policy.segment_horizon} steps")
        order = [segments.agents.index(agent) for agent in self.policy.agents]
        rows = segments.rows()
        rows = rows._replace(observations=rows.observations[:, order], actions=rows.actions[:, order])
        return SegmentBatches(rows, segments.horizon, self.policy, self.device)

    def _prepare_batch(self, batch: SegmentSamples) -> SegmentSamples:
        return batch._replace(observations=self.policy.normalize_team(batch.observations))

    # ------------------------------------------------------------------ learning

    def train_step(self, batch: SegmentSamples) -> dict[str, Tensor]:
        policy = self.policy
        x0 = batch.observations  # (B, H, n, D) normalised: a team's plans are its observations
        own = None  # MADiff-D: one random agent's first observation is inpainted per segment
        if policy.decentralized:
            own = torch.randint(
                0, policy.n_agents, (x0.shape[0],), generator=self.generator, device=self.device
            )
        inpainting = policy.inpainting(x0.shape, x0[:, 0], keep=policy.own_agents(x0[:, 0], own))
        stats = self._update_return_conditioned(batch, x0, inpainting, policy.return_condition(batch.returns))
        self._update_ema()
        return stats
