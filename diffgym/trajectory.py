"""Trajectory-level agents: segment batches on the device, a receding-horizon policy and its algorithm.

Planners (Diffuser, Decision Diffuser, MADiff: :mod:`diffgym.planning`), Diffusion Policy and
history-based behaviour cloning learn from windows of consecutive steps rather than single
transitions, and act by producing a *plan* (a chunk of future actions) from a short observation
history, then executing several of its actions before planning again.

- :class:`SegmentBatches` keeps a dataset's padded segment rows on the training device and samples
  windows with the algorithm's generator (no host round trip per step).
- :class:`RecedingHorizonPolicy` overrides SB3's ``predict(obs, state, episode_start)`` outright
  with the recurrent-policy convention (as ``sb3_contrib.RecurrentPPO``'s policies do): the
  returned ``state`` carries each env's observation history, its current plan and the position in
  it, so ``evaluate_policy`` and a hand-written loop that passes ``state`` back execute
  ``n_action_steps`` actions per plan; ``episode_start`` (or ``state=None``) starts afresh.
  A call without ``state`` plans from the current observation alone (its history repeats it)
  and returns the plan's first action; so does ``_predict``, SB3's stateless entry point.
- :class:`SequenceAlgorithm` is :class:`~diffgym.algorithm.OfflineAlgorithm` fed with segments.
  It learns offline only.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from minari import MinariDataset
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import Tensor

from diffgym.algorithm import OfflineAlgorithm
from diffgym.data import SegmentDataset, SegmentRows
from diffgym.normalizers import DEFAULT_EPS
from diffgym.policies import AgentPolicy
from diffgym.samplers import Randomness, TiledNoise

PlanState = tuple[np.ndarray, np.ndarray, np.ndarray]  # (history, plans, next step in plan), per env


class SegmentSamples(NamedTuple):
    """A batch of ``B`` segments of horizon ``H`` (actions scaled to [-1, 1])."""

    observations: Tensor  #: (B, H, obs_dim) (a team: (B, H, n, obs_dim)), normalised before ``train_step``
    actions: Tensor  #: (B, H, action_dim) (a team: (B, H, n, action_dim)) in [-1, 1]
    rewards: Tensor  #: (B, H), zero on padding
    mask: Tensor  #: (B, H) bool, True on real steps
    returns: Tensor  #: (B,) discounted return-to-go from the segment's first step
    goals: Tensor | None  #: (B, goal_dim) or None


class SegmentBatches:
    """A segment dataset's rows (:meth:`~diffgym.data.SegmentDataset.rows`) on the device, sampled
    uniformly over segment starts; windows of ``horizon`` rows."""

    def __init__(self, rows: SegmentRows, horizon: int, policy: AgentPolicy, device: torch.device) -> None:
        def tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

        self.horizon = horizon
        self.observations = tensor(rows.observations)
        self.actions = tensor(policy.scale_action(rows.actions))
        self.rewards = tensor(rows.rewards)
        self.mask = tensor(rows.mask, torch.bool)
        self.starts = tensor(rows.starts, torch.long)
        self.returns = tensor(rows.returns)
        self.goals = None if rows.goals is None else tensor(rows.goals)
        self.size = len(self.starts)

    def sample(self, batch_size: int, generator: torch.Generator) -> SegmentSamples:
        index = torch.randint(0, self.size, (batch_size,), generator=generator, device=generator.device)
        index = index.to(self.starts.device)
        rows = self.starts[index, None] + torch.arange(self.horizon, device=self.starts.device)
        return SegmentSamples(
            self.observations[rows],
            self.actions[rows],
            self.rewards[rows],
            self.mask[rows],
            self.returns[index],
            None if self.goals is None else self.goals[index],
        )

    @property
    def step_observations(self) -> Tensor:
        """(N_steps, obs_dim) (a team: (N_steps, n, obs_dim)) observations of the real steps, to fit normalisers."""
        return self.observations[self.mask]


class RecedingHorizonPolicy(AgentPolicy):
    """Acts by planning ``n_action_steps`` actions from ``n_obs_steps`` observations, then executing them.

    Subclasses set ``n_obs_steps``, ``n_action_steps``, ``segment_horizon`` (the training window),
    ``pad_before`` and ``obs_std_floor`` in ``_build`` and implement :meth:`plan` and :meth:`plan_actions`. A plan is
    whatever tensor the subclass keeps between decisions (Diffuser keeps the whole normalised
    trajectory, to warm-start the next plan from it).
    """

    n_obs_steps: int  # observations the plan is conditioned on (the current one and those before it)
    n_action_steps: int  # actions executed from each plan before planning again
    segment_horizon: int  # steps per training window
    pad_before: int = 0  # training windows may start this many steps before an episode
    obs_std_floor: float = DEFAULT_EPS  # floor of each observation feature's spread when fitted

    @abstractmethod
    def plan(self, history: Tensor, previous: Tensor | None, deterministic: bool) -> Tensor:
        """New plans: ``history`` (b, n_obs_steps, obs_dim) normalised -> (b, *plan_shape).

        ``previous`` holds the same rows' last plans when they are continuing (for warm starts),
        else None. Draw noise from :meth:`plan_noise`.
        """

    @abstractmethod
    def plan_actions(self, plans: Tensor) -> Tensor:
        """The actions to execute from each plan, in order: (b, *plan_shape) -> (b, n_action_steps, A)."""

    def fit_to_segments(self, data: SegmentBatches) -> None:
        """Fit normalisers to the first dataset: observations (a team's flattened), their spread
        floored at ``obs_std_floor``; subclasses add their own."""
        self.fit_normalizer(data.step_observations.flatten(1), eps=self.obs_std_floor)

    def plan_noise(self, deterministic: bool, period: int = 1) -> Randomness:
        """Where a plan's noise comes from: fresh draws, or (deterministic) the same fixed noise for
        every row, so that a row's plan does not depend on the rest of its batch. ``period`` is the
        number of rows sampled per observation (several candidate plans)."""
        return TiledNoise(self._fixed_noise(), period) if deterministic else self.sampling_generator

    # ------------------------------------------------------------------ SB3 predict with a plan state

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: PlanState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, PlanState]:
        """SB3's ``predict``, with ``state`` carrying histories and plans between calls (see the
        module doc); overridden outright, as sb3-contrib's recurrent policies do.

        Observations are preprocessed as SB3's :meth:`~stable_baselines3.common.policies.BasePolicy.predict`
        does (one observation or a VecEnv batch; actions rescaled to the action space's bounds);
        NaN or inf entries are refused, as in :meth:`AgentPolicy.predict <diffgym.policies.AgentPolicy>`.
        """
        self._before_acting(deterministic)
        self.set_training_mode(False)
        if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
            raise ValueError(  # SB3's check: the Gymnasium API mixed with the VecEnv API
                "You have passed a tuple to the predict() function instead of a Numpy array or a Dict. "
                "You are probably mixing Gym API with SB3 VecEnv API: `obs, info = env.reset()` (Gym) "
                "vs `obs = vec_env.reset()` (SB3 VecEnv)."
            )
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        with torch.no_grad():
            actions, next_state = self.act_from_features(
                self.features(obs_tensor), state, episode_start, deterministic
            )
        box: spaces.Box = self.action_space  # type: ignore[assignment]
        scaled = self.unscale_action(actions.cpu().numpy().reshape((-1, *box.shape)))
        return (scaled if vectorized_env else scaled.squeeze(axis=0)), next_state

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        """SB3's stateless entry point: plan from scratch and return the plan's first action."""
        return self.act_from_features(self.features(observation), None, None, deterministic)[0]

    def act_from_features(
        self,
        features: Tensor,
        state: PlanState | None,
        episode_start: np.ndarray | None,
        deterministic: bool,
    ) -> tuple[Tensor, PlanState]:
        """One action per env from normalised features (n, obs_dim): plan where a plan is used up or
        an episode starts, else take the plan's next action. -> ((n, A) in [-1, 1], the next state)."""
        history, plans, step, fresh = self._advance(features, state, episode_start)
        replan = fresh | (step >= self.n_action_steps)
        for rows, previous in ((replan & fresh, None), (replan & ~fresh, plans)):
            index = torch.nonzero(rows).squeeze(1)
            if len(index):
                new = self.plan(history[index], None if previous is None else previous[index], deterministic)
                plans = new if plans is None else plans.index_copy(0, index, new.to(plans.dtype))
                step = step.index_fill(0, index, 0)
        assert plans is not None
        actions = self.step_actions(plans, step, features)
        return actions, (history.cpu().numpy(), plans.cpu().numpy(), (step + 1).cpu().numpy())

    def step_actions(self, plans: Tensor, step: Tensor, features: Tensor) -> Tensor:
        """The action each env executes now: entry ``step`` (n,) of its plan's actions; ``features``
        (n, obs_dim) is the current normalised observation (for controllers that track a plan)."""
        return self.plan_actions(plans)[torch.arange(len(step), device=step.device), step]

    def _advance(
        self, features: Tensor, state: PlanState | None, episode_start: np.ndarray | None
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Histories with the new observation, the last plans, steps in them, and which rows start afresh."""
        n, device = features.shape[0], features.device
        restarted = features.new_ones(n, dtype=torch.bool)
        if state is None:
            history = features[:, None].expand(n, self.n_obs_steps, -1)
            return history.contiguous(), None, torch.zeros(n, dtype=torch.long, device=device), restarted
        history_np, plans_np, step_np = state
        if len(history_np) != n:
            raise ValueError(f"the state holds {len(history_np)} envs but {n} observations were given")
        if episode_start is not None:
            restarted = torch.as_tensor(np.asarray(episode_start, dtype=bool).reshape(n), device=device)
        else:
            restarted = torch.zeros(n, dtype=torch.bool, device=device)
        previous = torch.as_tensor(history_np, device=device, dtype=features.dtype)
        history = torch.cat([previous[:, 1:], features[:, None]], dim=1)
        history = torch.where(restarted[:, None, None], features[:, None], history)
        plans = torch.as_tensor(plans_np, device=device)
        step = torch.as_tensor(step_np, device=device, dtype=torch.long)
        return history, plans, step, restarted


class SequenceAlgorithm(OfflineAlgorithm):
    """:class:`~diffgym.algorithm.OfflineAlgorithm` trained on segments of ``policy.segment_horizon``
    steps (discounted returns-to-go with ``gamma``); offline only (``learn(online=True)`` refuses)."""

    policy: RecedingHorizonPolicy
    supports_online: ClassVar[bool] = False
    supports_mapped_dataset: ClassVar[bool] = False  # segments are built in memory

    def _offline_data(self, dataset: MinariDataset) -> SegmentBatches:
        segments = SegmentDataset(
            dataset,
            horizon=self.policy.segment_horizon,
            discount=self.gamma,
            pad_before=self.policy.pad_before,
            **self._segment_options(),
        )
        if len(segments) == 0:
            raise ValueError(f"{dataset.id} has no segment of {self.policy.segment_horizon} steps")
        return SegmentBatches(segments.rows(), segments.horizon, self.policy, self.device)

    def _segment_options(self) -> dict[str, Any]:
        """Further :class:`~diffgym.data.SegmentDataset` arguments (``use_padding``, ``join_episodes``,
        ``termination_penalty``); none here: padded episodes, no penalty."""
        return {}

    def _fit_normalizers(self) -> None:
        self.policy.fit_to_segments(self._offline)

    def _prepare_batch(self, batch: SegmentSamples) -> SegmentSamples:
        """Normalise observations (returns stay raw: each policy scales them its own way)."""
        return batch._replace(observations=self.policy.obs_normalizer.normalize(batch.observations))
