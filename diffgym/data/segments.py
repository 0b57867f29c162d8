"""Fixed-length trajectory segments for planners (Diffuser, Decision Diffuser).

Segments are not materialised: the episodes are kept concatenated, each preceded by
``pad_before`` rows and followed by ``H - 1`` padding rows when padding is on, and a segment is a
window of ``H`` rows from a valid start. :func:`join_continuing_episodes` first joins episodes that a
continual stream was only cut into (the shared maze2d files: one cut per goal re-drawn), so that
windows may run across those cuts over real steps.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import pairwise
from typing import Generic, NamedTuple, TypeVar

import numpy as np
from gymnasium import spaces
from scipy.signal import lfilter

from diffgym.data.loading import DatasetLike, EpisodeArrays, flatten_observations, load_dataset, read_episodes
from diffgym.data.tree import ArrayTree, tree_map

__all__ = [
    "COMMAND_KEYS",
    "SegmentDataset",
    "SegmentLayout",
    "SegmentRows",
    "SegmentWindows",
    "Segments",
    "discounted_returns_to_go",
    "join_continuing_episodes",
    "penalize_terminations",
    "segment_layout",
    "window_rows",
]

_INFO_PREFIX = "infos/"
#: ``Dict`` observation keys that are a command rather than the agent's state: a goal env's
#: ``desired_goal`` changes where a new goal is drawn, so continuity is judged without it.
COMMAND_KEYS = frozenset({"desired_goal"})
#: The batch type a segment dataset's ``__getitem__`` returns.
BatchT = TypeVar("BatchT")


class Segments(NamedTuple):
    """A batch of ``N`` trajectory segments of horizon ``H``."""

    observations: np.ndarray  #: (N, H, obs_dim) float32
    actions: np.ndarray  #: (N, H, act_dim) float32
    rewards: np.ndarray  #: (N, H) float32, a terminal step's with the termination penalty added
    mask: np.ndarray  #: (N, H) bool, True on real steps, False on padding
    returns: np.ndarray  #: (N,) float32, discounted return-to-go of those rewards to the episode end
    goals: np.ndarray | None  #: (N, goal_dim) float32, the goal at the segment start, or None


class SegmentRows(NamedTuple):
    """A :class:`SegmentDataset`'s storage: segment ``i`` is rows ``starts[i] : starts[i] + H``."""

    observations: np.ndarray  #: (R, obs_dim) float32, padded rows
    actions: np.ndarray  #: (R, act_dim)
    rewards: np.ndarray  #: (R,) float32
    mask: np.ndarray  #: (R,) bool, True on real steps
    starts: np.ndarray  #: (N,) int64, first row of each segment
    returns: np.ndarray  #: (N,) float32, return-to-go at each segment's start
    goals: np.ndarray | None  #: (N, goal_dim) float32, or None


class SegmentWindows(Generic[BatchT]):
    """What the segment datasets share: padded row arrays and windows of ``horizon`` rows from ``_starts``.

    Subclasses fill ``horizon``, ``_starts`` (S,), ``_mask`` (R,), ``_observations`` (R, ...) and
    ``_actions`` (R, ...) from a :class:`SegmentLayout` and build their batch in ``__getitem__``.
    """

    horizon: int
    _starts: np.ndarray
    _mask: np.ndarray
    _observations: np.ndarray
    _actions: np.ndarray

    def __len__(self) -> int:
        """Number of valid segment starts."""
        return len(self._starts)

    def __getitem__(self, indices: np.ndarray) -> BatchT:
        """The segments at ``indices`` (ints in ``[0, len(self))``, shape ``(B,)``)."""
        raise NotImplementedError

    def sample(self, batch_size: int, rng: np.random.Generator) -> BatchT:
        """``batch_size`` segments drawn uniformly with replacement."""
        return self[rng.integers(len(self), size=batch_size)]

    @property
    def observations(self) -> np.ndarray:
        """(N_steps, ...) the observations of all real steps, e.g. to fit a normaliser (``(N_steps, obs_dim)``
        for :class:`SegmentDataset`)."""
        return self._observations[self._mask]

    @property
    def actions(self) -> np.ndarray:
        """(N_steps, ...) the actions of all real steps."""
        return self._actions[self._mask]

    def _window_rows(self, indices: np.ndarray) -> np.ndarray:
        """(B, horizon) rows of the windows ``indices``."""
        return window_rows(self._starts, indices, self.horizon)


class SegmentDataset(SegmentWindows[Segments]):
    """Windows of ``horizon`` consecutive steps from a dataset's episodes.

    Padding (Diffuser's ``use_padding=True``): every step of an episode is a valid start, and a window
    running past the episode end continues with padding rows whose observation repeats the episode's
    final observation (the last next-observation), whose action and reward are zero and whose
    ``mask`` is False. Repeating the final state keeps padded observations inside the data's range
    (zeros would drag a normaliser's statistics and the model toward an arbitrary state); the mask
    lets losses ignore them. Without padding only windows of ``horizon`` real steps are used, so
    episodes shorter than ``horizon`` contribute nothing.

    ``pad_before`` (Diffusion Policy's ``pad_before = n_obs_steps - 1``) also starts windows up to
    that many steps before each episode, on rows that repeat the episode's first observation and
    first action (mask False), so a policy sees the history it gets at an episode's start.

    ``join_episodes`` first joins the episodes a continual stream was cut into
    (:func:`join_continuing_episodes`). With ``use_padding=False`` every window is then ``horizon``
    real consecutive steps whose last row is a real state, also across the cuts: Diffuser's maze2d
    setting (``use_padding=False`` on its long paths of the continual maze2d stream). Diffuser cuts
    that stream where the ball leaves the *evaluation* goal (its ``maze2d_set_terminals``), which
    uses the evaluation task to prepare training data; here nothing is cut, so a window may also
    run across those points.

    ``termination_penalty`` is added to the reward of every terminal step (``terminations``, not
    truncations), before the returns-to-go are discounted: Diffuser's and Decision Diffuser's
    ``termination_penalty`` (-100 for their locomotion value targets and returns; their
    ``ReplayBuffer.add_path`` adds it to the last reward of a path that terminates and refuses a
    path that also times out). The stored ``rewards`` carry it too, as theirs do.

    Args:
        dataset: anything :func:`~diffgym.data.load_dataset` accepts.
        horizon: ``H``, steps per segment.
        discount: discount of the returns-to-go.
        use_padding: see above.
        obs_key: for a ``Dict`` observation space, the key to use as observation (e.g.
            ``"observation"``); by default all keys are flattened (:func:`flatten_observations`).
        goal_key: ``"<key>"`` of a ``Dict`` observation (e.g. ``"desired_goal"``) or ``"infos/<key>"``
            (e.g. ``"infos/goal"``) giving each segment's goal at its first step; None for no goals.
        pad_before: rows repeating each episode's first step before it (see above); 0 for none.
        termination_penalty: added to the reward of each terminal step (see above); 0 for none.
        join_episodes: join episodes that continue one another first (see above).
    """

    def __init__(
        self,
        dataset: DatasetLike,
        horizon: int,
        discount: float = 0.99,
        use_padding: bool = True,
        obs_key: str | None = None,
        goal_key: str | None = None,
        pad_before: int = 0,
        termination_penalty: float = 0.0,
        join_episodes: bool = False,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, not {horizon}")
        if pad_before < 0:
            raise ValueError(f"pad_before must be >= 0, not {pad_before}")
        dataset = load_dataset(dataset)
        info_keys = (goal_key[len(_INFO_PREFIX) :],) if goal_key and goal_key.startswith(_INFO_PREFIX) else ()
        episodes = read_episodes(dataset, info_keys=info_keys)
        if join_episodes:
            episodes = join_continuing_episodes(episodes)
        self.horizon, self.discount, self.use_padding = horizon, discount, use_padding
        self.termination_penalty, self.join_episodes = termination_penalty, join_episodes
        layout = segment_layout(episodes.lengths, horizon, use_padding, pad_before)
        observations = _observation_matrix(episodes.observations, dataset.observation_space, obs_key)
        rewards = penalize_terminations(episodes.rewards, episodes.terminations, termination_penalty)
        self._observations = layout.observations(observations)
        self._actions = layout.actions(episodes.actions.reshape(len(episodes.actions), -1))
        self._rewards = layout.rewards(rewards)
        self._mask, self._starts = layout.mask, layout.starts
        returns = discounted_returns_to_go(rewards, episodes.lengths, discount)
        self._returns = returns[layout.start_steps]
        self._goals = _goals(episodes, dataset.observation_space, goal_key, layout.start_steps)

    def __getitem__(self, indices: np.ndarray) -> Segments:
        """The segments at ``indices`` (ints in ``[0, len(self))``, shape ``(N,)``)."""
        rows = self._window_rows(indices)
        return Segments(
            observations=self._observations[rows],
            actions=self._actions[rows],
            rewards=self._rewards[rows],
            mask=self._mask[rows],
            returns=self._returns[indices],
            goals=None if self._goals is None else self._goals[indices],
        )

    def rows(self) -> SegmentRows:
        """The padded row arrays and window starts, e.g. to move them to a device once."""
        return SegmentRows(
            self._observations,
            self._actions,
            self._rewards,
            self._mask,
            self._starts,
            self._returns,
            self._goals,
        )


class SegmentLayout(NamedTuple):
    """Where the padded rows of segment storage come from, for episodes of any per-step shape.

    Each episode of ``T`` steps becomes a block of ``pad_before + T + pad_after`` rows (see
    :class:`SegmentDataset` for what the padding rows hold); ``R`` rows in all, ``S`` window starts.
    The methods gather any concatenated episode arrays, with or without an agent axis, into the rows.
    """

    observation_rows: np.ndarray  #: (R,) int64, row of the (N + E)-row observations (T + 1 per episode)
    step_rows: np.ndarray  #: (R,) int64, row of the N-row step arrays, clipped into the row's episode
    mask: np.ndarray  #: (R,) bool, True on real steps
    acting: np.ndarray  #: (R,) bool, rows whose action is kept: real steps and the ``pad_before`` rows
    starts: np.ndarray  #: (S,) int64, first row of each window
    start_steps: np.ndarray  #: (S,) int64, step row (of the N) of each window's first real step

    def observations(self, observations: np.ndarray) -> np.ndarray:
        """``(N + E, *shape)`` -> ``(R, *shape)``: before an episode its first observation, after it the final one."""
        return observations[self.observation_rows]

    def actions(self, actions: np.ndarray) -> np.ndarray:
        """``(N, *shape)`` -> ``(R, *shape)``: the first action before an episode, zeros after it."""
        return _where_rows(self.acting, actions[self.step_rows])

    def rewards(self, rewards: np.ndarray) -> np.ndarray:
        """``(N, *shape)`` -> ``(R, *shape)`` float32, zero on every padding row."""
        return _where_rows(self.mask, rewards[self.step_rows]).astype(np.float32)


def segment_layout(lengths: np.ndarray, horizon: int, use_padding: bool, pad_before: int) -> SegmentLayout:
    """The padded row layout of :class:`SegmentDataset` for episodes of ``lengths`` (E,) steps.

    With ``use_padding`` every step starts a window and ``horizon - 1`` rows follow each episode;
    without it only windows of ``horizon`` real steps start. ``pad_before`` rows precede each episode
    and start windows too.
    """
    step_offsets = np.concatenate([[0], np.cumsum(lengths)])
    observation_offsets = step_offsets + np.arange(len(lengths) + 1)
    pad_after = horizon - 1 if use_padding else 0
    block_lengths = pad_before + lengths + pad_after
    step = _ranges(block_lengths) - pad_before  # step in the episode; < 0 before, >= length after
    episode_lengths = np.repeat(lengths, block_lengths)
    clipped = np.clip(step, 0, episode_lengths)  # before: the first step; after: the final obs
    n_starts = pad_before + (lengths if use_padding else np.maximum(lengths - horizon + 1, 0))
    offset_in_block = _ranges(n_starts)
    block_starts = np.concatenate([[0], np.cumsum(block_lengths)[:-1]])
    step_in_episode = np.maximum(offset_in_block - pad_before, 0)
    return SegmentLayout(
        observation_rows=np.repeat(observation_offsets[:-1], block_lengths) + clipped,
        step_rows=np.repeat(step_offsets[:-1], block_lengths) + np.minimum(clipped, episode_lengths - 1),
        mask=(step >= 0) & (step < episode_lengths),
        acting=step < episode_lengths,
        starts=np.repeat(block_starts, n_starts) + offset_in_block,
        start_steps=np.repeat(step_offsets[:-1], n_starts) + step_in_episode,
    )


def window_rows(starts: np.ndarray, indices: np.ndarray, horizon: int) -> np.ndarray:
    """(B, horizon) rows of the windows ``indices`` (B,) whose first rows are ``starts``."""
    return starts[np.asarray(indices)][:, None] + np.arange(horizon)


def _where_rows(keep: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (R, *shape) with the rows where ``keep`` (R,) is False set to zero, dtype kept."""
    return np.where(keep.reshape(-1, *([1] * (values.ndim - 1))), values, 0).astype(values.dtype)


def discounted_returns_to_go(rewards: np.ndarray, lengths: np.ndarray, discount: float) -> np.ndarray:
    """``R_t = sum_{k >= t} discount^(k - t) r_k`` within each episode.

    Args:
        rewards: (N,) concatenated rewards of consecutive episodes.
        lengths: (E,) steps per episode, summing to N.
        discount: the discount factor.

    Returns:
        (N,) float32 returns-to-go, each up to its own episode's end.
    """
    result = np.empty(len(rewards), dtype=np.float32)
    rewards = rewards.astype(np.float64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for start, stop in pairwise(offsets):
        result[start:stop] = lfilter([1.0], [1.0, -discount], rewards[start:stop][::-1])[::-1]
    return result


def penalize_terminations(rewards: np.ndarray, terminations: np.ndarray, penalty: float) -> np.ndarray:
    """(N,) float32 ``rewards`` with ``penalty`` added on the steps where ``terminations`` (N,) is True.

    Diffuser's and Decision Diffuser's ``termination_penalty``: the reward of a terminal step (an
    episode that ended in a failure state such as a fall, not one cut by a time limit) is lowered,
    so that returns-to-go discount it like any reward.

    >>> penalize_terminations(np.array([1.0, 1.0]), np.array([False, True]), -100.0)
    array([  1., -99.], dtype=float32)
    """
    return (rewards + np.where(terminations, np.float32(penalty), np.float32(0.0))).astype(np.float32)


def join_continuing_episodes(
    episodes: EpisodeArrays, ignore_keys: Collection[str] = COMMAND_KEYS
) -> EpisodeArrays:
    """Join each episode to the next where the next one continues it: the first ends without
    termination and the next's first observation is exactly its final observation.

    A continual data stream is sometimes stored cut into episodes at events that do not end the
    agent's trajectory: the shared maze2d files (D4RL's maze2d recipe with ``continuing_task=True``)
    mark a timeout wherever a goal is reached and a new one drawn, and the ball moves on from there.
    Joined, the steps run on without a break; the final observation of every inner episode (the
    same state as the next one's first observation) is dropped, so each step keeps the observation
    it acted on (for a goal env, with the goal it was pursuing).

    Args:
        episodes: from :func:`~diffgym.data.read_episodes`.
        ignore_keys: top-level ``Dict`` observation keys left out of the comparison (by default
            :data:`COMMAND_KEYS`: a goal env's ``desired_goal``, which changes at a re-draw).

    Returns:
        The same steps as fewer, longer episodes: ``lengths`` summed over each joined run,
        ``observations`` without the dropped rows, ``truncations`` cleared at the joins and
        ``episode_ids`` of each run's first episode; step arrays and infos unchanged.
    """
    offsets = episodes.observation_offsets
    final_rows, first_rows = offsets[1:-1] - 1, offsets[1:-1]  # (E - 1,) episode i's final, i + 1's first
    joins = ~episodes.terminations[episodes.step_offsets[1:-1] - 1]
    for leaf in _compared_leaves(episodes.observations, ignore_keys):
        same = leaf[final_rows] == leaf[first_rows]
        joins &= same.reshape(len(same), -1).all(axis=1)
    if not joins.any():
        return episodes
    keep = np.ones(int(offsets[-1]), dtype=bool)
    keep[final_rows[joins]] = False
    truncations = episodes.truncations.copy()
    truncations[episodes.step_offsets[1:-1][joins] - 1] = False
    run_starts = np.flatnonzero(np.concatenate([[True], ~joins]))
    return episodes._replace(
        observations=tree_map(lambda rows: rows[keep], episodes.observations),
        truncations=truncations,
        lengths=np.add.reduceat(episodes.lengths, run_starts).astype(np.int64),
        episode_ids=episodes.episode_ids[run_starts],
    )


def _compared_leaves(observations: ArrayTree, ignore_keys: Collection[str]) -> list[np.ndarray]:
    """The observation arrays continuity is judged on: every leaf but the top-level ``ignore_keys``."""
    if not isinstance(observations, dict):
        return [observations]
    leaves: list[np.ndarray] = []
    for key, value in observations.items():
        if key not in ignore_keys:
            leaves.extend(_compared_leaves(value, ()))
    return leaves


def _ranges(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in counts])``, vectorised."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _observation_matrix(observations: ArrayTree, space: spaces.Space, obs_key: str | None) -> np.ndarray:
    """(rows, obs_dim) float32: the chosen Dict key, or every observation flattened."""
    if obs_key is None:
        return flatten_observations(observations, space)
    if (
        not isinstance(observations, dict)
        or not isinstance(space, spaces.Dict)
        or obs_key not in observations
    ):
        raise KeyError(f"obs_key {obs_key!r} is not a key of the observation space {space}")
    return flatten_observations(observations[obs_key], space[obs_key])


def _goals(
    episodes: EpisodeArrays, space: spaces.Space, goal_key: str | None, start_steps: np.ndarray
) -> np.ndarray | None:
    """(n_starts, goal_dim) float32 goals at the segment starts, or None."""
    if goal_key is None:
        return None
    if goal_key.startswith(_INFO_PREFIX):
        goals = episodes.infos[goal_key[len(_INFO_PREFIX) :]][start_steps]
    else:
        if not isinstance(episodes.observations, dict) or goal_key not in episodes.observations:
            raise KeyError(f"goal_key {goal_key!r} is neither 'infos/<key>' nor a key of {space}")
        rows = episodes.observation_rows()[start_steps]
        goals = episodes.observations[goal_key][rows]
    return goals.reshape(len(goals), -1).astype(np.float32, copy=False)
