"""Action chunks: one agent step executes ``k`` environment actions in order (receding horizon).

Diffusion Policy (Chi et al. 2023) predicts a horizon of actions and executes the first
``n_action_steps`` of them before planning again from the newest ``n_obs_steps`` observations.
:class:`ActionChunkWrapper` turns any Box-action env into one whose action *is* such a chunk;
:func:`make_chunked_env` adds the observation history with Gymnasium's own
:class:`~gymnasium.wrappers.FrameStackObservation`.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import FrameStackObservation

__all__ = ["ActionChunkWrapper", "make_chunked_env"]


class ActionChunkWrapper(gym.Wrapper[Any, np.ndarray, Any, np.ndarray], gym.utils.RecordConstructorArgs):
    """Execute a chunk of ``n_action_steps`` actions per step; stop early when the episode ends.

    Spaces: the wrapped env's action space ``Box(low, high, inner_shape)`` becomes
    ``Box(tile(low), tile(high), (n_action_steps, *inner_shape))``; the observation space is
    unchanged (the observation after the last executed action is returned).

    ``step(chunk)`` runs ``chunk[0], chunk[1], …`` in the wrapped env and stops after the action at
    which the env terminates or truncates. It returns the last observation, the **sum** of the
    executed steps' rewards, the last step's ``terminated`` / ``truncated`` and the last step's
    ``info`` plus:

    - ``info["chunk_rewards"]``: ``(n_action_steps,)`` float64, each executed step's reward, 0.0 for
      the actions not executed (fixed shape, so vectorised envs can stack it);
    - ``info["chunk_executed"]``: how many actions of the chunk ran (1 … n_action_steps).

    Example:
        >>> import gymnasium as gym
        >>> env = ActionChunkWrapper(gym.make("Pendulum-v1"), n_action_steps=4)
        >>> env.action_space
        Box(-2.0, 2.0, (4, 1), float32)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(np.zeros((4, 1), dtype=np.float32))
        >>> info["chunk_executed"], info["chunk_rewards"].shape
        (4, (4,))
        >>> bool(np.isclose(reward, info["chunk_rewards"].sum()))
        True

    Args:
        env: an env with a ``Box`` action space.
        n_action_steps: k, the actions per chunk (Diffusion Policy's ``n_action_steps``, 8 there).

    Raises:
        TypeError: the env's action space is not a ``Box``.
        ValueError: ``n_action_steps`` < 1.
    """

    def __init__(self, env: gym.Env, n_action_steps: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, n_action_steps=n_action_steps)
        super().__init__(env)
        inner = env.action_space
        if not isinstance(inner, spaces.Box):
            raise TypeError(f"ActionChunkWrapper needs a Box action space, got {inner}")
        if isinstance(n_action_steps, bool) or not isinstance(n_action_steps, (int, np.integer)):
            raise ValueError(f"n_action_steps must be an integer >= 1, got {n_action_steps!r}")
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {n_action_steps}")
        self.n_action_steps = int(n_action_steps)
        reps = (self.n_action_steps,) + (1,) * len(inner.shape)
        self.action_space = spaces.Box(
            np.tile(inner.low, reps),
            np.tile(inner.high, reps),
            (self.n_action_steps, *inner.shape),
            inner.dtype,
        )

    def step(self, action: np.ndarray) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """``action``: ``(n_action_steps, *inner_shape)``; see the class docstring for the outputs."""
        chunk = np.asarray(action)
        if chunk.shape != self.action_space.shape:
            raise ValueError(
                f"expected an action chunk of shape {self.action_space.shape}, got shape {chunk.shape}"
            )
        rewards = np.zeros(self.n_action_steps, dtype=np.float64)
        executed = 0
        for inner_action in chunk:
            obs, reward, terminated, truncated, info = self.env.step(inner_action)
            rewards[executed] = float(reward)
            executed += 1
            if terminated or truncated:
                break
        info = {**info, "chunk_rewards": rewards, "chunk_executed": executed}
        return obs, float(rewards.sum()), bool(terminated), bool(truncated), info


def make_chunked_env(
    env: gym.Env | str, n_obs_steps: int, n_action_steps: int, **make_kwargs: Any
) -> gym.Env:
    """Observation history and action chunks, as Diffusion Policy's ``MultiStepWrapper`` gives.

    ``ActionChunkWrapper(FrameStackObservation(env, n_obs_steps), n_action_steps)``: observations
    have shape ``(n_obs_steps, *obs_shape)`` (the newest last; before enough steps, the reset
    observation is repeated, Gymnasium's ``padding_type="reset"``), and actions
    ``(n_action_steps, *action_shape)``. The history is stacked per *environment* step, so after a
    chunk it holds the last ``n_obs_steps`` observations seen while executing it.

    Args:
        env: an env, or an id for :func:`gymnasium.make` (with ``make_kwargs``).
        n_obs_steps: observations in the history (Diffusion Policy's ``n_obs_steps``, 2 there).
        n_action_steps: actions per chunk (Diffusion Policy's ``n_action_steps``, 8 there).
    """
    if isinstance(n_obs_steps, bool) or not isinstance(n_obs_steps, (int, np.integer)) or n_obs_steps < 1:
        raise ValueError(f"n_obs_steps must be an integer >= 1, got {n_obs_steps!r}")
    base = gym.make(env, **make_kwargs) if isinstance(env, str) else env
    return ActionChunkWrapper(FrameStackObservation(base, int(n_obs_steps)), n_action_steps)
