"""SynthER as a Stable-Baselines3 replay buffer: real transitions plus a diffusion-generated pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from diffgym.serialization import (
    ModelFileError,
    as_model_file_error,
    load_model_file,
    save_model_file,
    space_from_json,
    space_to_json,
)
from diffgym.wrappers.synther import (
    SynthERConfig,
    SyntheticTransitions,
    TransitionDiffusion,
    join_transitions,
)

__all__ = ["DiffusionReplayBuffer"]

_STORAGE = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class DiffusionReplayBuffer(ReplayBuffer):
    """SB3's :class:`~stable_baselines3.common.buffers.ReplayBuffer` that mixes in synthetic data (SynthER).

    Real transitions are stored exactly as SB3 stores them (``n_envs``, ``optimize_memory_usage``
    and ``handle_timeout_termination`` behave as in SB3). Every ``retrain_every`` added
    transitions (``n_envs`` per ``add``) the buffer trains a fresh
    :class:`~diffgym.wrappers.synther.TransitionDiffusion` on all real transitions
    ``[s, a, r, s', done]`` — ``done`` being the terminal flag SB3 samples, i.e. timeouts excluded
    when ``handle_timeout_termination`` — and replaces its synthetic pool with ``pool_size`` new
    transitions. ``sample(batch_size)`` then returns ``round(synthetic_ratio * batch_size)`` rows
    drawn uniformly from the pool **after** the real rows; before the first pool exists every row
    is real. Synthetic dones are 0 / 1, actions lie within ``action_bounds`` and observations within
    the observation space's finite bounds.

    Used through SB3::

        SAC("MlpPolicy", env, replay_buffer_class=DiffusionReplayBuffer,
            replay_buffer_kwargs=dict(synthetic_ratio=0.5, retrain_every=10_000))

    Defaults are for a CPU (SynthER, online: retrain every 10k steps, 100k-200k samples, ratio
    0.5, a 1024-wide network trained 100k steps on a GPU); the network and training budget are
    :class:`~diffgym.wrappers.synther.SynthERConfig`'s, whose docstring lists the deliberate
    differences from the paper. With them a retraining costs ~1.5 min and the pool ~15 s on one
    CPU thread. SynthER's online agent also raises the update-to-data ratio (20 with REDQ), which
    is the algorithm's ``gradient_steps`` here, not the buffer's business.

    Saving: SB3's ``model.save_replay_buffer`` / ``load_replay_buffer`` pickle the buffer (its
    contents, model, pool and generator); :meth:`save` / :meth:`load` write the same state as
    JSON + tensors with checksums (:mod:`diffgym.serialization`), loadable without executing code.

    Args:
        buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination: as SB3's ``ReplayBuffer`` (SB3 passes them).
        synthetic_ratio: share of each sampled batch drawn from the synthetic pool, in [0, 1]
            (SynthER: 0.5).
        retrain_every: added transitions between (re)trainings of the diffusion model (SynthER:
            10k env steps).
        pool_size: synthetic transitions generated at each retraining; they replace the previous
            pool (SynthER: 100k-200k into a 1M buffer it empties first; 20k here keeps generation
            ~15 s on one CPU thread).
        min_real: no training before this many real transitions are stored (tiny data overfits).
        action_bounds: what generated actions are clipped to. ``"scaled"`` (default): [-1, 1],
            what SB3's SAC / TD3 / DDPG store for a Box action space (``policy.scale_action``).
            ``"space"``: the action space's low / high, for actions added in env units. Or a
            ``(low, high)`` pair of scalars or arrays.
        model_config: :class:`~diffgym.wrappers.synther.SynthERConfig` or a dict of overrides.
        seed: seed of the buffer's ``torch.Generator`` (model weights, batches, noise). None draws
            it from NumPy's global generator, which SB3's ``seed=`` sets, so seeded runs repeat.
            Synthetic batch rows are chosen with NumPy's global generator, as SB3 chooses real ones.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        synthetic_ratio: float = 0.5,
        retrain_every: int = 10_000,
        pool_size: int = 20_000,
        min_real: int = 1_000,
        action_bounds: str | tuple[Any, Any] = "scaled",
        model_config: SynthERConfig | dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        _check_spaces(observation_space, action_space)
        if not 0.0 <= float(synthetic_ratio) <= 1.0:
            raise ValueError(f"synthetic_ratio must be in [0, 1], got {synthetic_ratio}")
        for name, value in (
            ("retrain_every", retrain_every),
            ("pool_size", pool_size),
            ("min_real", min_real),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        super().__init__(
            buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination,
        )  # fmt: skip
        self.synthetic_ratio = float(synthetic_ratio)
        self.retrain_every = int(retrain_every)
        self.pool_size = int(pool_size)
        self.min_real = int(min_real)
        self.action_bounds = action_bounds
        self._action_limits()  # refuse bad bounds now
        self.model_config = SynthERConfig.make(model_config)
        self.seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.added_since_fit = 0
        self.n_fits = 0
        self.model: TransitionDiffusion | None = None
        self.pool: SyntheticTransitions | None = None

    # ------------------------------------------------------------------ adding and training

    def add(self, *args: Any, **kwargs: Any) -> None:
        """SB3's ``add``; retrains the model and regenerates the pool every ``retrain_every`` transitions."""
        super().add(*args, **kwargs)
        self.added_since_fit += self.n_envs
        if self.added_since_fit >= self.retrain_every and self.real_size() >= self.min_real:
            self.update_synthetic()

    def reset(self) -> None:
        """Empty the real storage and drop the synthetic pool (the fitted model is kept)."""
        super().reset()
        self.pool, self.added_since_fit = None, 0

    def real_size(self) -> int:
        """Number of stored real transitions (over all envs)."""
        return len(self._valid_rows()) * self.n_envs

    def update_synthetic(self) -> None:
        """Train a fresh diffusion model on the real transitions now and regenerate the pool."""
        if self.real_size() < 2:
            raise RuntimeError(f"need at least 2 real transitions to fit the model, have {self.real_size()}")
        if self.model is None:
            self.model = self._new_model()
        self.model.fit(self.real_transitions(), self.generator)
        self.pool = self.model.generate(self.pool_size, self.generator)
        self.added_since_fit = 0
        self.n_fits += 1

    def _new_model(self) -> TransitionDiffusion:
        obs_dim = int(np.prod(self.obs_shape))
        low, high = self._action_limits()
        assert isinstance(self.observation_space, spaces.Box)
        return TransitionDiffusion(
            obs_dim,
            self.action_dim,
            low,
            high,
            self.observation_space.low.reshape(-1),
            self.observation_space.high.reshape(-1),
            self.model_config,
        ).to(self.device)

    def _action_limits(self) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.action_dim,)
        if isinstance(self.action_bounds, str):
            if self.action_bounds == "scaled":
                return -np.ones(shape, np.float32), np.ones(shape, np.float32)
            if self.action_bounds == "space":
                assert isinstance(self.action_space, spaces.Box)
                return self.action_space.low.reshape(shape), self.action_space.high.reshape(shape)
            raise ValueError(
                f"action_bounds must be 'scaled', 'space' or (low, high), got {self.action_bounds!r}"
            )
        low, high = (np.broadcast_to(np.asarray(b, np.float32), shape).copy() for b in self.action_bounds)
        if not (low < high).all():
            raise ValueError(f"action_bounds must have low < high, got {self.action_bounds!r}")
        return low, high

    def _valid_rows(self) -> np.ndarray:
        """Storage rows holding a complete transition (SB3's rule for ``optimize_memory_usage``)."""
        rows = np.arange(self.buffer_size if self.full else self.pos)
        if self.optimize_memory_usage and self.full:
            rows = rows[rows != self.pos]  # its observation was overwritten by the newest next_obs
        return rows

    def real_transitions(self) -> torch.Tensor:
        """All stored transitions as rows ``[s, a, r, s', done]``: ``(real_size, D)`` float32.

        ``done`` is what SB3 samples: ``dones * (1 - timeouts)``.
        """
        rows = self._valid_rows()
        if self.optimize_memory_usage:
            next_obs = self.observations[(rows + 1) % self.buffer_size]
        else:
            next_obs = self.next_observations[rows]
        n = len(rows) * self.n_envs
        dones = self.dones[rows] * (1 - self.timeouts[rows])
        return join_transitions(
            self.observations[rows].reshape(n, -1),
            self.actions[rows].reshape(n, -1),
            self.rewards[rows].reshape(n),
            next_obs.reshape(n, -1),
            dones.reshape(n),
        )

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """``batch_size`` rows: real ones first, then ``round(synthetic_ratio * batch_size)`` synthetic
        (none before the first pool exists)."""
        n_synthetic = 0 if self.pool is None else round(self.synthetic_ratio * batch_size)
        real = super().sample(batch_size - n_synthetic, env=env)
        if n_synthetic == 0:
            return real
        synthetic = self._sample_synthetic(n_synthetic, env)
        return ReplayBufferSamples(*(torch.cat([r, s]) for r, s in zip(real[:5], synthetic[:5], strict=True)))

    def _sample_synthetic(self, n: int, env: VecNormalize | None) -> ReplayBufferSamples:
        assert self.pool is not None
        index = np.random.randint(0, len(self.pool.rewards), size=n)
        obs_shape = (n, *self.obs_shape)
        observations = self.pool.observations[index].reshape(obs_shape).astype(self.observations.dtype)
        next_observations = (
            self.pool.next_observations[index].reshape(obs_shape).astype(self.observations.dtype)
        )
        data = (
            self._normalize_obs(observations, env),
            self.pool.actions[index].astype(self.actions.dtype),
            self._normalize_obs(next_observations, env),
            self.pool.dones[index].reshape(-1, 1),
            self._normalize_reward(self.pool.rewards[index].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*(self.to_torch(array) for array in data))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ safe files

    def save(self, path: str | os.PathLike) -> Path:
        """Write the buffer (real storage, pool, model, generator, counters) as a diffgym model file.

        JSON + tensors with SHA-256 checksums, written atomically (see :mod:`diffgym.serialization`);
        ``path`` gets ``.zip`` appended when it lacks it. Returns the written path.
        """
        arrays = {name: getattr(self, name) for name in _STORAGE if hasattr(self, name)}
        members: dict[str, Any] = {
            "storage": {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()},
            "generator": {"state": self.generator.get_state()},
        }
        if self.pool is not None:
            members["pool"] = {name: torch.from_numpy(a) for name, a in self.pool._asdict().items()}
        if self.model is not None:
            members["model"] = self.model.state_dict()
        return save_model_file(path, self._manifest(), members)

    def _manifest(self) -> dict[str, Any]:
        bounds = self.action_bounds
        return {
            "class": type(self).__name__,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "init": {
                "buffer_size": self.buffer_size * self.n_envs,
                "n_envs": self.n_envs,
                "optimize_memory_usage": self.optimize_memory_usage,
                "handle_timeout_termination": self.handle_timeout_termination,
                "synthetic_ratio": self.synthetic_ratio,
                "retrain_every": self.retrain_every,
                "pool_size": self.pool_size,
                "min_real": self.min_real,
                "action_bounds": _bounds_json(bounds),
                "model_config": self.model_config.to_json(),
                "seed": self.seed,
            },
            "state": {
                "pos": self.pos,
                "full": self.full,
                "added_since_fit": self.added_since_fit,
                "n_fits": self.n_fits,
                "model_fitted": self.model is not None and self.model.fitted,
            },
        }

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "auto") -> DiffusionReplayBuffer:
        """Read a file written by :meth:`save`; nothing in it is executed.

        Raises:
            ModelFileError: a corrupt, tampered or foreign file (e.g. a model, not a buffer).
        """
        manifest, members = load_model_file(path)
        if manifest.get("class") != cls.__name__:
            raise ModelFileError(f"{path} holds a {manifest.get('class')!r}, not a {cls.__name__}")
        with as_model_file_error(f"{path}: saved buffer state does not fit {cls.__name__}"):
            init = dict(manifest["init"])
            if not isinstance(init["action_bounds"], str):
                init["action_bounds"] = tuple(np.asarray(b, np.float32) for b in init["action_bounds"])
            init["model_config"] = SynthERConfig.from_json(init["model_config"])
            buffer = cls(
                observation_space=space_from_json(manifest["observation_space"]),
                action_space=space_from_json(manifest["action_space"]),
                device=device,
                **init,
            )
            buffer._restore(manifest["state"], members)
        return buffer

    def _restore(self, state: dict[str, Any], members: dict[str, Any]) -> None:
        for name, tensor in members["storage"].items():
            target = getattr(self, name)
            if tuple(tensor.shape) != target.shape:
                raise ModelFileError(
                    f"stored {name} has shape {tuple(tensor.shape)}, expected {target.shape}"
                )
            setattr(self, name, tensor.numpy().astype(target.dtype, copy=False))
        self.generator.set_state(members["generator"]["state"])
        if "pool" in members:
            self.pool = SyntheticTransitions(**{name: t.numpy() for name, t in members["pool"].items()})
        if "model" in members:
            self.model = self._new_model()
            self.model.load_state_dict(members["model"])
            self.model.fitted = bool(state["model_fitted"])
        self.pos, self.full = int(state["pos"]), bool(state["full"])
        self.added_since_fit, self.n_fits = int(state["added_since_fit"]), int(state["n_fits"])


def _bounds_json(bounds: str | tuple[Any, Any]) -> str | list[Any]:
    return bounds if isinstance(bounds, str) else [np.asarray(b).tolist() for b in bounds]


def _check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Refuse what the transition model cannot diffuse, naming the space."""
    if not isinstance(observation_space, spaces.Box):
        raise TypeError(
            f"DiffusionReplayBuffer needs a Box observation space, got {observation_space} "
            "(flatten Dict observations with gymnasium.wrappers.FlattenObservation)"
        )
    if not isinstance(action_space, spaces.Box):
        raise TypeError(f"DiffusionReplayBuffer needs a Box (continuous) action space, got {action_space}")
