"""SynthER's transition model (Lu, Ball, Teh & Parker-Holder, "Synthetic Experience Replay", NeurIPS
2023): an unconditional diffusion model over flat transition vectors, and offline upsampling of a
Minari dataset with it.

A transition is the row ``x = [s, a, r, s', done]`` of ``D = 2 obs_dim + act_dim + 2`` numbers
(observations flattened). Every column is standardised with the core's
:class:`~diffgym.normalizers.GaussianNormalizer` except ``done``, which stays 0 / 1 as in SynthER
(standardising a rare binary flag would turn its 1s into far outliers) — unless the data has no
terminal at all: then it is a constant column and every generated ``done`` is 0. Generated rows are
un-normalised, actions clipped to their bounds, observations to the observation space's finite
bounds, and ``done`` thresholded at 0.5 (SynthER's ``terminal_threshold``).

CPU defaults (:class:`SynthERConfig`) and the deliberate differences from the paper are listed on
the config; :class:`~diffgym.wrappers.DiffusionReplayBuffer` uses this model online. An offline agent
trained on the synthetic data standardises its observations with the real data's statistics, as
SynthER's do: :func:`fit_observation_normalizer`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from minari import MinariDataset
from minari.data_collector import EpisodeBuffer
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from diffgym.data import DatasetLike, check_spaces, flatten_observations, load_dataset, load_transitions
from diffgym.data.minari_writer import write_dataset
from diffgym.denoisers import ResidualMLPDenoiser
from diffgym.diffusion import GaussianDiffusion, PredictionType
from diffgym.ema import EMA
from diffgym.lr_schedules import cosine_decay
from diffgym.normalizers import GaussianNormalizer
from diffgym.samplers import Sampler, make_sampler
from diffgym.schedules import NoiseSchedule
from diffgym.serialization import ModelFileError, as_model_file_error, atomic_file

if TYPE_CHECKING:
    from diffgym.algorithm import OfflineAlgorithm

#: the ``format`` of a saved :class:`TransitionDiffusion` (its safetensors header's ``diffgym`` entry)
GENERATOR_FORMAT = "diffgym-synther/1"
_EMA_PREFIX, _TRAINED_PREFIX = "ema_denoiser.module.", "denoiser."

__all__ = [
    "SynthERConfig",
    "SyntheticTransitions",
    "TransitionDiffusion",
    "fit_observation_normalizer",
    "synthesize_dataset",
]


@dataclass(frozen=True)
class SynthERConfig:
    """Hyperparameters of the transition model, sized for a CPU (SynthER's are for a GPU).

    SynthER trains a 6-block residual MLP of width 2048 (offline; 1024 online) for 100k steps with
    EDM (Karras et al. 2022) and samples with 128 stochastic Heun steps. On one CPU thread that
    network trains at well under 1 step/s, so the defaults here are about 20x smaller and train
    for a few thousand steps: a (re)training costs ~1-2 min and 20k samples ~15 s on one thread.

    Deliberate differences from SynthER:

    - **Discrete-time diffusion** (the core's :class:`~diffgym.diffusion.GaussianDiffusion`,
      linear betas, T = 1000) instead of EDM's continuous noise levels, preconditioning and
      log-normal noise-level sampling, which the core does not offer. The network predicts the
      clean sample x0 (EDM's denoiser output is also a clean-sample estimate); on hopper-medium,
      at this budget, ε-prediction with the deterministic samplers gave off-manifold transitions
      whose s' was ~100x further from the simulator's.
    - **Sampler**: DPM-Solver++(2M) with 20 steps instead of 128 stochastic Heun steps with churn
      (S_churn = 80). Measured on hopper-medium (3000 training steps): per-dimension spread within
      5% of the data's and s' as close to the simulator's as with 50 stochastic DDIM steps, whose
      samples were 5-12% too narrow at 20 steps.
    - **Denoiser**: the core's IDQL-style residual block (LayerNorm, Mish, 2 Linears) with
      learned Fourier features of the step index, where SynthER has x + Linear(ReLU(x)) blocks
      without LayerNorm and fixed random Fourier features of the noise level.
    - **Size / budget**: width 256, 4 blocks (expansion 2, ~1.1M parameters) and 3000 steps
      instead of width 2048 x 6 and 100k steps (see the fields below).
    """

    hidden_dim: int = 256  # residual stream width (SynthER: 2048 offline, 1024 online; GPU)
    num_blocks: int = 4  # residual blocks (SynthER: 6)
    # inner width multiple of each block; 2: ~1.1M parameters, ~33 steps/s at batch 256 on 1 thread
    expansion: int = 2
    time_dim: int = 64  # Fourier features of the step index (IDQL's 64; SynthER 16 random features)
    # std of their frequencies per step index, ~16 / T; IDQL's 0.2 suits its T = 5 and at T = 1000
    # gave unrelated features for neighbouring steps (s' 25x further from the simulator's on hopper)
    fourier_scale: float = 0.016
    num_timesteps: int = 1000  # T of the discrete chain (DDPM's; SynthER is continuous-time)
    schedule: str = "linear"  # DDPM's linear betas scaled to T (alpha_bar_T ≈ 4e-5: ends in noise)
    prediction: PredictionType = "sample"  # the network predicts x0 ("epsilon": the noise; see above)
    train_steps: int = 3000  # gradient steps per (re)training (SynthER: 100k on a GPU)
    batch_size: int = 256  # transitions per gradient step (SynthER: 256 online and below 800k rows)
    # AdamW without weight decay (SynthER's Trainer.weight_decay = 0), cosine-annealed to 0 over
    # train_steps (SynthER's)
    learning_rate: float = 3e-4
    adam_betas: tuple[float, float] = (0.9, 0.99)  # SynthER's (denoising-diffusion-pytorch's)
    grad_clip: float = 1.0  # global gradient-norm clip (SynthER's)
    ema_decay: float = 0.995  # EMA of the weights used for sampling (SynthER's 0.995)
    # SynthER updates its EMA every 10 of 100k steps; with a few thousand steps that would leave the
    # random initial weights ~20-50% of the average (samples collapse to the mean), so every step:
    ema_every: int = 1
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"name": "dpm_solver", "num_steps": 20}
    )  # DPM-Solver++(2M), 20 denoiser calls per sample (see above); any make_sampler config
    sample_batch_size: int = 20_000  # rows denoised at once when generating (bounds memory, not results)

    def __post_init__(self) -> None:
        positive = ("hidden_dim", "num_blocks", "expansion", "num_timesteps", "train_steps", "batch_size")
        for name in (*positive, "ema_every", "sample_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SynthERConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"SynthERConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.prediction not in ("epsilon", "sample"):
            raise ValueError(
                f"SynthERConfig.prediction must be 'epsilon' or 'sample', got {self.prediction!r}"
            )
        make_sampler(self.sampler)  # a clear error for an unknown sampler now, not after training

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (:meth:`from_json` inverts it)."""
        return {**dataclasses.asdict(self), "adam_betas": list(self.adam_betas)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SynthERConfig:
        return cls(**{**data, "adam_betas": tuple(data["adam_betas"])})

    @classmethod
    def make(cls, config: SynthERConfig | dict[str, Any] | None) -> SynthERConfig:
        """Accept a config, a dict of overrides of the defaults, or None (the defaults)."""
        if config is None or isinstance(config, SynthERConfig):
            return config or cls()
        if not isinstance(config, dict):
            raise TypeError(f"config must be a SynthERConfig, a dict or None, not {type(config).__name__}")
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SynthERConfig fields {sorted(unknown)}")
        return cls(**config)


class SyntheticTransitions(NamedTuple):
    """Generated transitions as numpy arrays (observations flattened, float32)."""

    observations: np.ndarray  #: (N, obs_dim)
    actions: np.ndarray  #: (N, act_dim), within the action bounds
    rewards: np.ndarray  #: (N,)
    next_observations: np.ndarray  #: (N, obs_dim)
    dones: np.ndarray  #: (N,) float32, exactly 0.0 or 1.0


def join_transitions(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_observations: np.ndarray,
    dones: np.ndarray,
) -> Tensor:
    """``(N, obs_dim), (N, act_dim), (N,), (N, obs_dim), (N,)`` -> ``(N, D)`` float32 rows."""
    n = len(rewards)
    parts = [observations, actions, rewards, next_observations, dones]
    return torch.as_tensor(np.concatenate([np.asarray(p, np.float32).reshape(n, -1) for p in parts], 1))


def _bound(values: np.ndarray | None, size: int, missing: float) -> Tensor:
    """``(size,)`` float32 bounds; ``missing`` (±inf) when None."""
    if values is None:
        return torch.full((size,), missing)
    return torch.as_tensor(np.asarray(values, np.float32)).reshape(size)


class TransitionDiffusion(nn.Module):
    """Unconditional diffusion over transition rows ``[s, a, r, s', done]``: fit, then generate.

    Args:
        obs_dim: flat observation size.
        act_dim: flat action size.
        action_low, action_high: ``(act_dim,)`` bounds generated actions are clipped to.
        obs_low, obs_high: ``(obs_dim,)`` bounds of observations (±inf: no clipping).
        config: see :class:`SynthERConfig`.
    """

    action_low: Tensor
    action_high: Tensor
    obs_low: Tensor
    obs_high: Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        obs_low: np.ndarray | None = None,
        obs_high: np.ndarray | None = None,
        config: SynthERConfig | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.config = config or SynthERConfig()
        self.dim = 2 * obs_dim + act_dim + 2
        self.register_buffer("action_low", _bound(action_low, act_dim, -math.inf))
        self.register_buffer("action_high", _bound(action_high, act_dim, math.inf))
        self.register_buffer("obs_low", _bound(obs_low, obs_dim, -math.inf))
        self.register_buffer("obs_high", _bound(obs_high, obs_dim, math.inf))
        self.normalizer = GaussianNormalizer(self.dim)
        self.denoiser = self._new_denoiser()
        self.ema_denoiser = EMA(self.denoiser, self.config.ema_decay)
        self.schedule = NoiseSchedule.make(self.config.schedule, self.config.num_timesteps)
        self.fitted = False
        self.last_fit: dict[str, float] = {}

    def _new_denoiser(self) -> ResidualMLPDenoiser:
        c = self.config
        return ResidualMLPDenoiser(
            self.dim,
            hidden_dim=c.hidden_dim,
            num_blocks=c.num_blocks,
            time_dim=c.time_dim,
            dropout=0.0,  # SynthER uses none
            expansion=c.expansion,
            fourier_scale=c.fourier_scale,
        )

    @property
    def sampler(self) -> Sampler:
        return make_sampler(self.config.sampler)

    def fit(self, data: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Train from fresh weights on ``data`` (N, D) rows, as SynthER retrains from scratch.

        Refits the normaliser (``done`` column left unscaled), then runs ``config.train_steps``
        batched gradient steps; all randomness (initial weights, batches, noise) comes from
        ``generator``. Returns the mean loss of the last 10% of steps and the seconds taken.
        """
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"expected transition rows of shape (N, {self.dim}), got {tuple(data.shape)}")
        if len(data) < 2:
            raise ValueError(f"need at least 2 transitions to fit the transition model, got {len(data)}")
        started = time.perf_counter()
        device = self.action_low.device
        fitted = GaussianNormalizer.fit(data)
        if fitted.std[-1] > 1e-3:  # done stays 0 / 1 (SynthER: no terminal normalisation) ...
            fitted.mean[-1], fitted.std[-1] = 0.0, 1.0
        # ... unless it never varies (no terminals): then it un-normalises to its constant
        self.normalizer.load_state_dict(fitted.state_dict())
        with torch.random.fork_rng(devices=[]):  # fresh weights drawn from our generator only
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            self.denoiser = self._new_denoiser().to(device)
        rows = self.normalizer.normalize(data.to(device))
        losses = self._train(rows, generator)
        self.ema_denoiser = self.ema_denoiser.to(device)
        self.fitted = True
        tail = max(1, len(losses) // 10)
        self.last_fit = {
            "loss": float(torch.stack(losses[-tail:]).mean()),
            "seconds": time.perf_counter() - started,
        }
        return self.last_fit

    def _train(self, rows: Tensor, generator: torch.Generator) -> list[Tensor]:
        c = self.config
        model = GaussianDiffusion(self.denoiser, self.schedule, prediction=c.prediction)
        optimizer = torch.optim.AdamW(  # SynthER's weight_decay = 0 (torch's AdamW default: 0.01)
            self.denoiser.parameters(), lr=c.learning_rate, betas=c.adam_betas, weight_decay=0.0
        )
        annealing = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_decay(1 - step / c.train_steps)
        )
        self.ema_denoiser = EMA(self.denoiser, c.ema_decay)
        params: list[Tensor] = list(self.denoiser.parameters())
        self.denoiser.train()
        losses = []
        for step in range(c.train_steps):
            index = torch.randint(0, len(rows), (c.batch_size,), generator=generator).to(rows.device)
            loss = model.loss(rows[index], generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, c.grad_clip)
            optimizer.step()
            annealing.step()
            self.ema_denoiser.update(self.denoiser, step + 1, every=c.ema_every)  # after step + 1 updates
            losses.append(loss.detach())
        return losses

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator) -> SyntheticTransitions:
        """``n`` new transitions from the EMA weights, post-processed (see the module docstring)."""
        if not self.fitted:
            raise RuntimeError("the transition model is not fitted yet: call fit() first")
        if n < 0:
            raise ValueError(f"cannot generate a negative number of transitions ({n})")
        model = GaussianDiffusion(self.ema_denoiser.module, self.schedule, self.config.prediction).eval()
        chunks = []
        for start in range(0, n, self.config.sample_batch_size):
            size = min(self.config.sample_batch_size, n - start)
            rows = model.sample((size, self.dim), sampler=self.sampler, generator=generator)
            chunks.append(self.normalizer.unnormalize(rows))
        rows = torch.cat(chunks) if chunks else torch.empty(0, self.dim, device=self.action_low.device)
        return self._split(rows)

    # ------------------------------------------------------------------ saving

    def manifest(self) -> dict[str, Any]:
        """What rebuilds the model with :meth:`from_parts`: sizes, config and the fit's loss and time."""
        return {
            "format": GENERATOR_FORMAT,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": self.config.to_json(),
            "fit": dict(self.last_fit),
        }

    def sampling_state(self) -> dict[str, Tensor]:
        """The tensors generation needs (bounds, normaliser, EMA weights) as CPU copies. The weights
        being trained are left out: :meth:`fit` starts from fresh ones, and generation uses the EMA."""
        return {
            key: value.detach().cpu().contiguous().clone()
            for key, value in self.state_dict().items()
            if not key.startswith(_TRAINED_PREFIX)
        }

    @classmethod
    def from_parts(cls, manifest: dict[str, Any], state: dict[str, Tensor]) -> TransitionDiffusion:
        """A fitted model from :meth:`manifest` and :meth:`sampling_state` (the trained weights start
        as copies of the EMA's)."""
        if manifest.get("format") != GENERATOR_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r} is not {GENERATOR_FORMAT!r}")
        model = cls(
            int(manifest["obs_dim"]),
            int(manifest["act_dim"]),
            state["action_low"].numpy(),
            state["action_high"].numpy(),
            state["obs_low"].numpy(),
            state["obs_high"].numpy(),
            SynthERConfig.from_json(manifest["config"]),
        )
        trained = {
            _TRAINED_PREFIX + key[len(_EMA_PREFIX) :]: value
            for key, value in state.items()
            if key.startswith(_EMA_PREFIX)
        }
        model.load_state_dict(state | trained)
        model.fitted, model.last_fit = True, dict(manifest.get("fit") or {})
        return model

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model as one safetensors file (:meth:`sampling_state`, with the
        :meth:`manifest` as JSON in its header); a file already at ``path`` is replaced only once the
        new one is complete."""
        if not self.fitted:
            raise RuntimeError("the transition model is not fitted yet: call fit() first")
        data = save(self.sampling_state(), metadata={"diffgym": json.dumps(self.manifest())})
        with atomic_file(path) as file:
            file.write(data)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> TransitionDiffusion:
        """A model written by :meth:`save`; reads JSON and tensors only (nothing is unpickled).

        Raises:
            ModelFileError: the file is missing, not safetensors, or does not describe a model.
        """
        if not os.path.isfile(path):
            raise ModelFileError(f"{path}: missing")
        try:
            with safe_open(str(path), framework="pt") as file:
                header = (file.metadata() or {}).get("diffgym")
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelFileError(f"{path}: not a safetensors file ({error})") from error
        if header is None:
            raise ModelFileError(f"{path}: its header names no diffgym transition model")
        with as_model_file_error(f"{path}: does not describe a transition model"):
            return cls.from_parts(json.loads(header), state).to(device)

    def _split(self, rows: Tensor) -> SyntheticTransitions:
        """(N, D) un-normalised rows -> clipped, thresholded arrays."""
        o, a = self.obs_dim, self.act_dim
        obs = rows[:, :o].clamp(self.obs_low, self.obs_high)
        actions = rows[:, o : o + a].clamp(self.action_low, self.action_high)
        next_obs = rows[:, o + a + 1 : 2 * o + a + 1].clamp(self.obs_low, self.obs_high)
        dones = (rows[:, -1] > 0.5).to(torch.float32)
        arrays = (obs, actions, rows[:, o + a], next_obs, dones)
        return SyntheticTransitions(*(t.cpu().numpy().astype(np.float32) for t in arrays))


# --------------------------------------------------------------------------- offline upsampling


def synthesize_dataset(
    dataset: DatasetLike,
    new_dataset_id: str,
    n_transitions: int,
    config: SynthERConfig | dict[str, Any] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    description: str | None = None,
    model: TransitionDiffusion | None = None,
) -> MinariDataset:
    """Upsample a dataset into a new Minari dataset of ``n_transitions`` synthetic transitions.

    SynthER's offline recipe: fit :class:`TransitionDiffusion` on every transition of ``dataset``
    (terminals as ``done``; timeouts are not terminal), generate ``n_transitions`` new ones and
    store them **alone** (SynthER trains offline agents on the synthetic data only). Synthetic
    transitions are independent, so each is stored as a Minari episode of length 1: observations
    ``[s, s']``; ``terminations = [done]`` and ``truncations = [not done]`` — a non-terminal
    synthetic transition is a *truncated* one, so agents bootstrap from its s' and
    :func:`~diffgym.data.load_transitions` reads back exactly the generated rows. Minari's HDF5
    layout costs about 1 ms and 14 kB per episode to write and again ~1 ms to read, so a few
    100k transitions are practical, SynthER's 5M are not.

    The new dataset keeps the source's spaces, its env spec when the env can be recovered, and
    its reference returns; its metadata names the source (``synthetic_source``), the config
    (``synthesis_config``), and the fit's loss and the time each stage took (``synthesis``).

    Statistics come from the real data in SynthER: an agent trained on the new dataset should
    standardise its observations with the source's (:func:`fit_observation_normalizer`), and agents
    that scale rewards by the spread of *episode* returns (IDQL's ``reward_scale="iql"``) see one-step
    episodes here: pass the scale computed on the source dataset instead.

    Args:
        dataset: anything :func:`~diffgym.data.load_dataset` accepts, with Box observation and
            action spaces.
        new_dataset_id: the new Minari id; must not exist yet.
        n_transitions: how many synthetic transitions to store (>= 1).
        config: :class:`SynthERConfig`, a dict of overrides, or None for the defaults.
        seed: seeds the generator of all randomness (weights, batches, noise).
        device: where the diffusion model trains and samples.
        description: Minari description (default names the source and size).
        model: a transition model already fitted on this data (e.g. the zoo's
            ``zoo.load("synther/hopper-medium")``, or :meth:`TransitionDiffusion.load`): it only
            generates (give no ``config`` with it). Only its sizes and action bounds are checked
            against the dataset's; that it was fitted on this data is the caller's word.
    """
    if n_transitions < 1:
        raise ValueError(f"n_transitions must be >= 1, got {n_transitions}")
    source = load_dataset(dataset)
    obs_space, action_space = source.observation_space, source.action_space
    for name, space in (("observation", obs_space), ("action", action_space)):
        if not isinstance(space, spaces.Box):
            raise TypeError(f"synthesize_dataset needs a Box {name} space; dataset {source.id} has {space}")
    assert isinstance(obs_space, spaces.Box) and isinstance(action_space, spaces.Box)
    if model is None:
        model = fit_on_dataset(source, SynthERConfig.make(config), seed, device)
    elif config is not None:
        raise ValueError("give a fitted model or a config to fit one, not both")
    else:
        _check_model_fits(model, obs_space, action_space)
    started = time.perf_counter()
    synthetic = model.generate(n_transitions, torch.Generator().manual_seed(seed + 1))
    generated = time.perf_counter()
    created = _store(source, new_dataset_id, synthetic, model.config, description)
    created.storage.update_metadata(
        {
            "synthesis": {
                "seed": seed,
                "source_transitions": source.total_steps,
                "fit_loss": model.last_fit["loss"],
                "fit_seconds": model.last_fit["seconds"],
                "generate_seconds": generated - started,
                "store_seconds": time.perf_counter() - generated,
            }
        }
    )
    return created


def fit_observation_normalizer(model: OfflineAlgorithm, dataset: DatasetLike) -> None:
    """Standardise ``model``'s observations with the statistics of the real ``dataset``.

    An agent fits its observation normaliser to the first dataset it is given, so one built on a
    synthetic dataset would use the synthetic data's mean and std. SynthER's agents use the real
    data's: its TD3+BC (``synther/corl/algorithms/td3_bc.py``, ``train``) computes
    ``compute_mean_std(dataset["observations"], eps=1e-3)`` on the D4RL dataset and normalises the
    env's and the synthetic buffer's states with it (``prepare_replay_buffer(...,
    state_normalizer=StateNormalizer(state_mean, state_std))``). Call this after building the agent
    on the synthetic data and before ``learn``::

        model = TD3BC("MlpPolicy", env, dataset="synther/hopper-medium-v0")
        fit_observation_normalizer(model, "mujoco/hopper/medium-v0")

    Args:
        model: an offline agent (its ``policy.fit_normalizer`` is refitted; saved with the model).
        dataset: the real dataset, anything :func:`~diffgym.data.load_dataset` accepts, with the
            model's observation space.
    """
    source = load_dataset(dataset)
    check_spaces(source.observation_space, model.observation_space, "observation")
    observations = flatten_observations(load_transitions(source).observations, model.observation_space)
    model.policy.fit_normalizer(torch.as_tensor(observations, dtype=torch.float32, device=model.device))


def fit_on_dataset(
    source: MinariDataset, config: SynthERConfig, seed: int = 0, device: torch.device | str = "cpu"
) -> TransitionDiffusion:
    """A :class:`TransitionDiffusion` fitted on every transition of a Box-space Minari dataset."""
    obs_space, action_space = source.observation_space, source.action_space
    assert isinstance(obs_space, spaces.Box) and isinstance(action_space, spaces.Box)
    data = load_transitions(source)
    n = len(data.rewards)
    rows = join_transitions(
        data.observations.reshape(n, -1),  # type: ignore[union-attr]
        data.actions,
        data.rewards,
        data.next_observations.reshape(n, -1),  # type: ignore[union-attr]
        data.terminals,
    )
    model = TransitionDiffusion(
        int(np.prod(obs_space.shape)),
        int(np.prod(action_space.shape)),
        action_space.low.reshape(-1),
        action_space.high.reshape(-1),
        obs_space.low.reshape(-1),
        obs_space.high.reshape(-1),
        config,
    ).to(device)
    model.fit(rows, torch.Generator().manual_seed(seed))
    return model


def _check_model_fits(model: TransitionDiffusion, obs_space: spaces.Box, action_space: spaces.Box) -> None:
    """Raise ``ValueError`` unless ``model`` generates transitions of these spaces."""
    obs_dim, act_dim = int(np.prod(obs_space.shape)), int(np.prod(action_space.shape))
    if (model.obs_dim, model.act_dim) != (obs_dim, act_dim):
        raise ValueError(
            f"the transition model makes observations of size {model.obs_dim} and actions of size "
            f"{model.act_dim}; the dataset has {obs_dim} and {act_dim}"
        )
    low, high = _bound(action_space.low, act_dim, -math.inf), _bound(action_space.high, act_dim, math.inf)
    if not (torch.equal(model.action_low.cpu(), low) and torch.equal(model.action_high.cpu(), high)):
        raise ValueError("the transition model's action bounds are not the dataset's action space's")


def _store(
    source: MinariDataset,
    dataset_id: str,
    synthetic: SyntheticTransitions,
    config: SynthERConfig,
    description: str | None,
) -> MinariDataset:
    """Write the synthetic transitions as length-1 episodes (see :func:`synthesize_dataset`)."""
    obs_space, action_space = source.observation_space, source.action_space
    pairs = np.stack([synthetic.observations, synthetic.next_observations], axis=1)
    pairs = pairs.reshape(len(pairs), 2, *obs_space.shape).astype(obs_space.dtype)
    actions = synthetic.actions.reshape(len(pairs), 1, *action_space.shape).astype(action_space.dtype)
    rewards = synthetic.rewards.astype(np.float64).reshape(-1, 1)
    terminal = synthetic.dones.astype(bool).reshape(-1, 1)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=pairs[i],
            actions=actions[i],
            rewards=rewards[i],
            terminations=terminal[i],
            truncations=~terminal[i],
        )
        for i in range(len(pairs))
    ]
    env = _recover_env(source)
    try:
        created = write_dataset(
            dataset_id,
            buffers,
            env,
            obs_space,
            action_space,
            algorithm_name="SynthER (diffgym.wrappers.synthesize_dataset)",
            author=None,
            description=description
            or f"{len(pairs)} synthetic transitions (SynthER) upsampled from {source.id}, one per episode",
        )
    finally:
        if env is not None:
            env.close()
    metadata = source.storage.metadata
    references = {key: metadata[key] for key in ("ref_min_score", "ref_max_score") if key in metadata}
    created.storage.update_metadata(
        {**references, "synthetic_source": source.id, "synthesis_config": config.to_json()}
    )
    return created


def _recover_env(source: MinariDataset) -> Any:
    """The source's env (to record its spec), or None when it cannot be made."""
    if source.env_spec is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return source.recover_environment()
    except Exception:  # an env whose package is missing here: keep the spaces only
        return None
