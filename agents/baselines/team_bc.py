"""Independent per-agent behaviour cloning for a PettingZoo team: the baseline MADiff is measured
against (MADiff's paper compares with independent BC on the same data).

Each agent ``k`` has its own MLP ``a_k = tanh(f_k(o_k))`` from its own standardised observation,
trained by mean squared error on its own actions scaled to [-1, 1] by its action bounds. No agent
sees another's observation, so the team acts decentralised. Built on the core's team base
(:class:`~diffgym.team.TeamAlgorithm`), so it loads team datasets, steps a ``ParallelEnv``, acts on
``{agent: observation}`` dicts and saves exactly as MADiff does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from diffgym.data import DatasetLike
from diffgym.networks import EnsembleMLP, make_adam
from diffgym.policies import NetArchPart
from diffgym.team import TeamAgentPolicy, TeamAlgorithm, TeamEnv
from diffgym.trajectory import SegmentSamples
from diffgym.wrappers.multiagent import JointAgentEnv


class TeamBCPolicy(TeamAgentPolicy):
    """One ReLU MLP per agent (an ensemble with one member per agent); a "plan" is the team's one
    action, (b, 1, n * A).

    Args (``policy_kwargs``):
        agents: agent ids in the env's ``possible_agents`` order (default: the ``Dict`` keys).
        hidden_dim, num_hidden: each agent's hidden ReLU layers (256 × 2).

    SB3's ``net_arch`` (a list, or ``dict(pi=[...])``): its equal widths set ``hidden_dim`` and its
    length ``num_hidden``.
    """

    net_arch_parts: ClassVar[dict[str, NetArchPart]] = {"pi": NetArchPart("hidden_dim", "num_hidden")}

    def _build(
        self,
        lr_schedule: Schedule,
        agents: Sequence[str] | None = None,
        hidden_dim: int = 256,
        num_hidden: int = 2,
    ) -> None:
        self._build_team(agents)
        self.n_obs_steps = self.n_action_steps = self.segment_horizon = 1
        self.nets = EnsembleMLP(
            self.agent_obs_dim,
            self.agent_action_dim,
            members=self.n_agents,
            hidden_dim=hidden_dim,
            num_hidden=num_hidden,
            activation=nn.ReLU,
        )
        self.optimizer = make_adam(self.nets.parameters(), lr=lr_schedule(1))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.optimizer}

    def act(self, observations: Tensor) -> Tensor:
        """Each agent's MLP on its own observation: (B, n, D) normalised -> (B, n, A) in [-1, 1]."""
        return torch.tanh(self.nets(observations.transpose(0, 1))).transpose(0, 1)

    def plan(self, history: Tensor, previous: Tensor | None, deterministic: bool) -> Tensor:
        """(b, 1, n * D) normalised -> (b, 1, n * A): the team's action now."""
        return self.act(self.team(history[:, -1])).flatten(1).unsqueeze(1)

    def plan_actions(self, plans: Tensor) -> Tensor:
        return plans


class TeamBC(TeamAlgorithm):
    """Per-agent behaviour cloning: each gradient step regresses every agent's action on a batch of
    ``batch_size`` team steps (MSE over agents and action entries; Adam, learning rate 1e-3).

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        policy: ``"MlpPolicy"`` or ``"MultiInputPolicy"`` (the same :class:`TeamBCPolicy`).
        env: a PettingZoo ``ParallelEnv``, a joint-agent Gymnasium env, or None (with a dataset).
        dataset: a team dataset (:mod:`diffgym.data.team`); its agent order is the model's.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": TeamBCPolicy, "MultiInputPolicy": TeamBCPolicy}
    joint_env = JointAgentEnv
    policy: TeamBCPolicy

    def __init__(
        self,
        policy: str | type[TeamBCPolicy],
        env: TeamEnv,
        dataset: DatasetLike | None = None,
        learning_rate: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, dataset, learning_rate=learning_rate, **kwargs)

    def train_step(self, batch: SegmentSamples) -> dict[str, Tensor]:
        policy = self.policy
        loss = ((policy.act(batch.observations[:, 0]) - batch.actions[:, 0]) ** 2).mean()
        policy.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.optimizer.step()
        return {"bc_loss": loss.detach()}
