"""MADiff: multi-agent trajectory diffusion for PettingZoo teams, centralised or decentralised."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from diffgym.agents.madiff.policies import MADiffPolicy
from diffgym.data import DatasetLike
from diffgym.planning import PlanningAlgorithm
from diffgym.team import TeamAlgorithm, TeamEnv
from diffgym.trajectory import SegmentSamples
from diffgym.wrappers.multiagent import JointAgentEnv


class MADiff(TeamAlgorithm, PlanningAlgorithm):
    """MADiff (Zhu et al., "MADiff: Offline Multi-agent Learning with Diffusion Models", NeurIPS 2024)
    as an SB3 algorithm over a PettingZoo team, learning offline from a multi-agent dataset
    (:mod:`diffgym.data.team`'s format), on the core's team base (:class:`~diffgym.team.TeamAlgorithm`).

    ``MADiff("MlpPolicy", parallel_env, dataset=...)``: the ``ParallelEnv`` is stepped through
    :class:`~diffgym.wrappers.JointAgentEnv` (``Dict`` spaces keyed by agent; SB3 wraps that in a
    ``DummyVecEnv`` as usual). ``predict({agent: obs})`` returns ``{agent: action}`` (a VecEnv batch
    gives one dict per env); :func:`~diffgym.wrappers.evaluate_team` plays episodes on the parallel env.

    Each gradient step (a batch of ``batch_size`` segments of ``horizon`` steps of the team):

    - the multi-agent U-Net (:class:`~diffgym.denoisers.MultiAgentTemporalUnet`: shared weights,
      time-conditioned attention across agents whose gain starts at 0, as MADiff's) learns to
      denoise every agent's observation trajectory, conditioned on the segment's team
      return (dropped with probability ``cond_drop_prob`` for classifier-free guidance), the first
      step inpainted: every agent's (MADiff-C) or one random agent's (MADiff-D,
      ``policy_kwargs=dict(decentralized=True)``);
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
    clipped; both ε variants failed at CPU budgets, see :class:`MADiffPolicy`); sampling starts from
    unit noise (MADiff's from 0.5 · N(0, I)). As in MADiff's MPE (and every released) configs, the
    U-Net is not told the episode's time step and every agent's loss weighs the same: its code's
    ``env_ts_condition`` and ``opponent_loss_weight`` options are off there and not ported.
    Offline only: ``learn(online=True)`` raises; ``total_timesteps`` counts gradient steps.

    Args (besides :class:`~diffgym.planning.PlanningAlgorithm`'s, whose defaults are MADiff's MPE
    settings: learning rate 2e-4, 64 segments a step as its 32 × 2 accumulated batches, gamma 0.99 for
    the team returns-to-go the condition is computed from, EMA every 10 steps):
        policy: ``"MlpPolicy"`` or ``"MultiInputPolicy"`` (the same :class:`MADiffPolicy`).
        env: a PettingZoo ``ParallelEnv``, a joint-agent Gymnasium env, or None (with a dataset).
        dataset: a multi-agent dataset; its agents and spaces must match the env's; its agent order is
            the model's.
        ema_start: gradient steps before the EMA starts averaging (MADiff: 2000; 500 here, for CPU
            budgets of a few tens of thousands of steps).
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": MADiffPolicy, "MultiInputPolicy": MADiffPolicy}
    joint_env = JointAgentEnv
    policy: MADiffPolicy

    def __init__(
        self,
        policy: str | type[MADiffPolicy],
        env: TeamEnv,
        dataset: DatasetLike | None = None,
        ema_start: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, dataset, ema_start=ema_start, **kwargs)

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
