"""The Stable-Baselines3 algorithm base shared by diffgym's agents.

:class:`OfflineAlgorithm` is an SB3 :class:`~stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm`
that can also learn from a dataset. What a user of SAC knows keeps working: ``learn``,
``predict`` (single observations and VecEnv batches), callbacks (``EvalCallback``,
``CheckpointCallback``), SB3's logger and TensorBoard, ``progress_bar=True``, ``set_env``,
``seed``. Where an offline algorithm must depart from SB3:

- **Offline** (the default when ``dataset`` is given): ``learn(total_timesteps)`` performs
  ``total_timesteps`` *gradient steps* on the dataset and never steps the env; callbacks see one
  "step" per gradient step, so ``EvalCallback(eval_freq=k)`` evaluates every k gradient steps.
  SB3's callback hooks offline (see :class:`OfflineAlgorithm` for all of them): a "rollout" is
  a block of ``check_every`` gradient steps, and no episode ever ends (``dones`` all False).
- **Online fine-tuning**: ``learn(total_timesteps, online=True)`` is SB3's off-policy loop:
  ``total_timesteps`` counts *environment steps*, with ``gradient_steps`` updates per
  ``train_freq``; the replay buffer (``replay_buffer_class``, e.g.
  :class:`~diffgym.wrappers.DiffusionReplayBuffer`) starts with the whole dataset and receives
  the new experience, so fine-tuning keeps learning from both.
- **Files**: ``save`` writes one zip that loads without executing code (see
  :mod:`diffgym.serialization`): hyperparameters and spaces as JSON, and the policy's state
  (networks, EMA weights, target networks, normalisers), the optimizers and the random
  generators as tensors. ``load`` followed by ``learn(..., reset_num_timesteps=False)`` resumes
  where training stopped. Code is never saved: a ``learning_rate`` schedule is recorded as its
  value at progress 1, with a warning. ``set_parameters`` reads the same files in place.

Every gradient step's statistics stay on the device; they are read (one sync) every
``check_every`` steps, when a non-finite or exploding value stops training with
:class:`TrainingDivergedError` naming the statistic and the exact gradient step.
"""

from __future__ import annotations

import numbers
import os
import pathlib
import time
import warnings
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from minari import MinariDataset
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples
from stable_baselines3.common.utils import check_for_correct_spaces, safe_mean
from torch import Tensor

import diffgym
from diffgym.batches import MappedBatches, OfflineBatches
from diffgym.compilation import compile_networks
from diffgym.data import DatasetLike, check_spaces, load_dataset, load_transitions, map_episodes
from diffgym.data.d4rl import explain_cached_import
from diffgym.linear_backend import check_linear_backend, use_onednn_linear
from diffgym.lr_schedules import cosine_decay, linear_warmup
from diffgym.monitor import TrainingMonitor
from diffgym.policies import AgentPolicy
from diffgym.precision import check_precision, step_autocast
from diffgym.progress import StepProgressBar
from diffgym.rl import iql_reward_scale_chunked
from diffgym.samplers import sampler_config
from diffgym.serialization import (
    ModelFileError,
    as_model_file_error,
    load_model_file,
    save_model_file,
    space_from_json,
    space_to_json,
)

SelfAlgorithm = TypeVar("SelfAlgorithm", bound="OfflineAlgorithm")


class OfflineAlgorithm(OffPolicyAlgorithm):
    """Base of diffgym's agents: offline learning from a dataset, online fine-tuning, safe files.

    What SB3's callback hooks and buffer methods mean while learning offline (``learn`` without
    ``online=True``; online they are SB3's own):

    - ``_on_step``: after every gradient step; ``num_timesteps`` counts gradient steps.
    - ``_on_rollout_start`` / ``_on_rollout_end``: around each block of ``check_every`` gradient
      steps (the divergence-check and logging period; the last block of a ``learn`` call may be
      shorter). As in SB3, a callback that stops training skips the block's ``_on_rollout_end``.
    - ``self.locals``: ``learn``'s arguments, plus per step ``dones`` (``n_envs`` times False: the
      env is not stepped, so no episode ends) and ``infos`` (``n_envs`` empty dicts). Callbacks
      counting episodes (``StopTrainingOnMaxEpisodes``) therefore never stop offline learning:
      ``total_timesteps`` bounds it.
    - ``save_replay_buffer``: offline data is the dataset (named in the model file), not a replay
      buffer; it raises until ``learn(..., online=True)`` has built one, then saves it as SB3 does.

    Args:
        policy: ``"MlpPolicy"`` (or ``"MultiInputPolicy"`` for Dict observations; both flatten).
        env: the environment (or its id); its spaces must match the dataset's.
        dataset: a Minari dataset id, a Minari dataset directory, a D4RL-layout ``.hdf5`` file or
            a :class:`minari.MinariDataset`. Validated against the env's spaces at construction.
        learning_rate: Adam learning rate of every network.
        buffer_size: replay capacity for online fine-tuning, in addition to the dataset.
        learning_starts: env steps before online updates begin (0: the dataset is already there).
        batch_size: transitions per gradient step.
        tau: Polyak coefficient of the target networks.
        gamma: discount factor.
        train_freq, gradient_steps: online schedule, as in SB3.
        reward_scale, reward_bias: rewards enter the losses as ``reward_scale * r + reward_bias``;
            ``reward_scale="iql"`` is IQL's ``1000 / (max - min episode return)``, computed on the
            first dataset (:func:`iql_reward_scale`) and saved as that number.
        check_every: gradient steps between divergence checks and log averages (one sync each).
        explode_above: a training statistic beyond this magnitude counts as divergence.
        lr_decay_steps: anneal the scheduled learning rates to 0 along a cosine over this many
            gradient steps, counted across ``learn`` calls (the model's ``_n_updates``, saved with
            it), then hold them at 0; None: no decay. A horizon the user states, never the length of
            one ``learn`` call, so that training in several calls follows one curve.
        lr_warmup_steps: gradient steps of linear learning-rate warm-up (Diffusion Policy's); 0: none.
        precision: ``"fp32"``, or ``"bf16"``: each gradient step under bfloat16 autocast (matrix products
            in bfloat16, everything stored in float32; :mod:`diffgym.precision`), 2x faster on a CPU
            with AVX512-BF16 or AMX, at the accuracy stated in ``zoo/results/README.md`` (speed).
        compile_networks: run the policy's networks through ``torch.compile``
            (:mod:`diffgym.compilation`; needs a C++ compiler on CPU); the first steps at each new
            batch shape compile.
        linear_backend: ``"aten"`` (torch's own), or ``"onednn"``: the policy's large float32
            ``nn.Linear`` products on the CPU through oneDNN (:mod:`diffgym.linear_backend`), about 2x
            faster where torch's BLAS runs them on AVX2 only (AMD CPUs); equal up to float32 rounding.
        replay_buffer_class, replay_buffer_kwargs: the online replay buffer, as in SB3 (default:
            SB3's ``ReplayBuffer``, or ``DictReplayBuffer`` for Dict observations); it is created by
            ``learn(..., online=True)``, filled with the dataset first (a
            :class:`~diffgym.wrappers.DiffusionReplayBuffer` counts it as real data and draws its
            first synthetic pool after ``retrain_every`` new steps). Not saved with the model:
            pass them again to ``load``. Refused by agents that learn offline only.
        policy_kwargs: the policy's arguments; SB3's ``net_arch`` is accepted where the policy's
            networks are MLPs (see :class:`~diffgym.policies.AgentPolicy`).
        dataset_in_memory: True: the dataset's transitions are held on the training device. False, for
            datasets larger than memory: they are streamed once, episode by episode, into a cache of
            ``.npy`` files beside the dataset (:func:`~diffgym.data.map_episodes`, reused afterwards),
            memory-mapped, and each batch is read by index and copied to the device alone (same
            batches as with True). Observation statistics and ``reward_scale="iql"`` are computed in
            chunks. Agents that sample transitions support it (Diffusion-QL, IDQL, IQL, TD3+BC);
            segment agents (planners, Diffusion Policy, MADiff) and online fine-tuning, whose
            replay buffer holds the dataset in memory, refuse it. Not saved with the model (pass it
            to ``load`` again).
        tensorboard_log, verbose, seed, device: as in SB3.
    """

    policy: AgentPolicy
    #: False for agents that learn from a dataset only (``learn(..., online=True)`` refuses)
    supports_online: ClassVar[bool] = True
    #: action spaces the agent accepts (a team of agents has a ``Dict`` of per-agent spaces)
    action_space_types: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Box,)
    #: the optimizers (by their name in ``policy.optimizers()``) that the learning-rate schedule and
    #: ``lr_decay_steps`` drive; None: all of them (IDQL and IQL anneal the actor only)
    scheduled_optimizers: ClassVar[tuple[str, ...] | None] = None
    #: with ``verbose >= 1``, offline learning logs at the end of its first block of ``check_every`` steps and
    #: then at the first block end after this many seconds of wall time since the last log (see ``learn``)
    log_every_seconds: ClassVar[float] = 30.0
    #: whether the agent can train from a memory-mapped dataset (``dataset_in_memory=False``)
    supports_mapped_dataset: ClassVar[bool] = True
    #: constructor arguments saved in the model file (besides ``policy_kwargs``)
    saved_hyperparameters: ClassVar[tuple[str, ...]] = (
        "learning_rate",
        "buffer_size",
        "learning_starts",
        "batch_size",
        "tau",
        "gamma",
        "gradient_steps",
        "reward_scale",
        "reward_bias",
        "check_every",
        "explode_above",
        "lr_decay_steps",
        "lr_warmup_steps",
        "precision",
        "compile_networks",
        "linear_backend",
    )

    def __init__(
        self,
        policy: str | type[AgentPolicy],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        learning_rate: float = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 0,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        reward_scale: float | str = 1.0,
        reward_bias: float = 0.0,
        check_every: int = 100,
        explode_above: float = 1e8,
        lr_decay_steps: int | None = None,
        lr_warmup_steps: int = 0,
        precision: str = "fp32",
        compile_networks: bool = False,
        linear_backend: str = "aten",
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        dataset_in_memory: bool = True,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if (replay_buffer_class is not None or replay_buffer_kwargs) and not self.supports_online:
            raise ValueError(
                f"{type(self).__name__} learns from a dataset only (no online learning), so it has no use "
                "for replay_buffer_class or replay_buffer_kwargs: leave them out"
            )
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            support_multi_env=True,
            sde_support=False,
            supported_action_spaces=self.action_space_types,
        )
        if not dataset_in_memory and not self.supports_mapped_dataset:
            raise ValueError(
                f"{type(self).__name__} trains on trajectory segments, which dataset_in_memory=False does "
                "not serve; it is supported by the agents that sample transitions (DiffusionQL, IDQL, IQL, "
                "TD3BC)"
            )
        self.dataset_in_memory = dataset_in_memory
        self.dataset = dataset
        if isinstance(reward_scale, numbers.Real):
            reward_scale = float(reward_scale)
        elif reward_scale != "iql":
            raise ValueError(f"reward_scale must be a number or 'iql', got {reward_scale!r}")
        self.reward_scale: float | str = reward_scale
        self.reward_bias = reward_bias
        self.check_every = check_every
        self.explode_above = explode_above
        if lr_decay_steps is not None and lr_decay_steps <= 0:
            raise ValueError(
                f"lr_decay_steps must be a positive number of gradient steps or None, got {lr_decay_steps}"
            )
        self.lr_decay_steps = lr_decay_steps
        self.lr_warmup_steps = lr_warmup_steps
        self.precision = check_precision(precision, self.device)
        self.compile_networks = compile_networks
        self.linear_backend = check_linear_backend(linear_backend, self.device)
        self._offline: Any = None  # the dataset on the device: OfflineBatches, or a subclass's own
        #: how the model was made (JSON: e.g. the hyperparameter file, key and command line of
        #: ``diffgym train``), saved in its file and read back by ``load``
        self.provenance: dict[str, Any] = {}
        self._learning_offline = False
        self._monitor = TrainingMonitor(check_every, explode_above)
        #: the training statistics of the latest gradient step (tensors on the device: reading one syncs)
        self.step_statistics: dict[str, Tensor] = {}
        self._last_log: tuple[float, int] | None = None  # wall time and step of the last offline log
        self._warned_warmup = False
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up

    def _setup_model(self) -> None:
        """Policy, generators and train frequency; the replay buffer waits for online learning."""
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self._build_policy()
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        self._seed_generators(seed)
        self._convert_train_freq()
        if self.dataset is not None:
            self.set_dataset(self.dataset)

    def _policy_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        """The spaces of one step that the policy and the dataset have: the env's here (an agent acting on
        a wrapped env, such as Diffusion Policy on an action-chunk env, derives them)."""
        return self.observation_space, self.action_space

    def _build_policy(self) -> None:
        """``self.policy`` from :meth:`_policy_spaces` and ``policy_kwargs``, on the model's device."""
        observation_space, action_space = self._policy_spaces()
        self.policy = self.policy_class(  # type: ignore[assignment]
            observation_space, action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        if self.linear_backend == "onednn":
            use_onednn_linear(self.policy)
        if self.compile_networks:
            compile_networks(self.policy, self.device)

    def _seed_generators(self, seed: int) -> None:
        """The training generator (batches, diffusion noise) from ``seed``; the policy's stochastic
        sampling from ``seed + 1``."""
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.policy.sampling_generator = torch.Generator(device=self.device).manual_seed(seed + 1)

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's seeding (Python, NumPy and torch's global RNGs, the action space, the env), and the
        model's own generators: training from ``seed``; stochastic ``predict`` from torch's global
        RNG just seeded, so that this and SB3's global ``set_random_seed(seed)`` give the same
        actions. None changes nothing, as in SB3."""
        super().set_random_seed(seed)
        if seed is not None and hasattr(self, "generator"):  # the generators exist once set up
            self.generator = torch.Generator(device=self.device).manual_seed(seed)
            self.policy.follow_global_seed()

    def _setup_lr_schedule(self) -> None:
        """SB3's schedule, times the cosine decay (``lr_decay_steps``) and the warm-up
        (``lr_warmup_steps``), both driven by the gradient steps taken so far (Python ints: no sync)."""
        super()._setup_lr_schedule()
        base = self.lr_schedule
        self.lr_schedule = lambda progress: (
            base(progress)
            * self._lr_decay_factor()
            * linear_warmup(getattr(self, "_n_updates", 0), self.lr_warmup_steps)
        )

    def _lr_decay_factor(self) -> float:
        """The cosine factor after ``_n_updates`` of ``lr_decay_steps`` gradient steps (1 without decay)."""
        if self.lr_decay_steps is None:
            return 1.0
        done = min(getattr(self, "_n_updates", 0) / self.lr_decay_steps, 1.0)
        return cosine_decay(1.0 - done)

    def set_dataset(self, dataset: DatasetLike) -> None:
        """Load and validate a dataset; on first use, fit the observation normaliser to it.

        A D4RL-layout file is imported with the model's (its env's) spaces as the reference
        (:func:`~diffgym.data.load_dataset`'s ``reference_spaces``), whatever env its metadata names.

        Raises:
            DatasetSpaceMismatchError: the dataset's spaces differ from the model's.
            NonFiniteDataError, EpisodeLengthError: the dataset is broken.
        """
        observation_space, action_space = self._policy_spaces()
        minari_dataset = load_dataset(  # local ids and paths never download
            dataset, download=True, reference_spaces=(observation_space, action_space)
        )
        with explain_cached_import(minari_dataset):  # a cached import with guessed spaces says how to redo it
            check_spaces(minari_dataset.observation_space, observation_space, "observation")
            check_spaces(minari_dataset.action_space, action_space, "action")
        first_dataset = self._offline is None and self.num_timesteps == 0
        self._offline = self._offline_data(minari_dataset)
        if first_dataset:
            self._fit_normalizers()
        if self.reward_scale == "iql":
            self.reward_scale = iql_reward_scale_chunked(self._offline.chunks())
        self.dataset = minari_dataset.id  # saved with the model, so a resumed run can name its data

    def _offline_data(self, dataset: MinariDataset) -> Any:
        """The dataset, with ``sample(batch_size, generator)`` and ``chunks()`` (transitions here): on
        the device, or memory-mapped (``dataset_in_memory=False``)."""
        if not self.dataset_in_memory:
            return MappedBatches(map_episodes(dataset), self.policy, self.device)
        return OfflineBatches(load_transitions(dataset), self.policy, self.device)

    def _fit_normalizers(self) -> None:
        """Fit the policy's normalisers to the first dataset (observations here)."""
        chunks = self._offline.chunks()  # a chunk's observations may hold the next chunk's first row
        self.policy.fit_normalizer_in_chunks(
            observations[: len(rewards)] for observations, _, rewards, _ in chunks
        )

    # ------------------------------------------------------------------ learning

    def _setup_learn(self, *args: Any, **kwargs: Any) -> tuple[int, BaseCallback]:
        if self.reward_scale == "iql":
            raise ValueError(
                "reward_scale='iql' is computed from a dataset: pass dataset=... (or call set_dataset) "
                "before learning, or give reward_scale as a number"
            )
        return super()._setup_learn(*args, **kwargs)

    def learn(  # type: ignore[override]
        self: SelfAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
        online: bool = False,
    ) -> SelfAlgorithm:
        """Learn offline from the dataset (``total_timesteps`` gradient steps) or online.

        Args:
            total_timesteps: gradient steps offline; environment steps with ``online=True``.
            callback: SB3 callback(s), called once per gradient step offline (what each hook means
                offline: see the class doc).
            log_interval: offline, gradient steps between log dumps; online, episodes (as SB3). Offline
                with ``verbose >= 1`` the log is also dumped at the end of the call's first block of
                ``check_every`` steps, then at the end of the first block that ends
                :attr:`log_every_seconds` (30 s) or more after the last dump, and at the end of the call,
                so that a slow model shows progress early. Which steps are logged then depends on the
                wall time; what is logged at a step does not (means over the blocks' steps).
            tb_log_name: TensorBoard run name (default: the algorithm's class name).
            reset_num_timesteps: False continues the step count (and LR schedule) of a loaded model.
            progress_bar: show SB3's progress bar.
            online: fine-tune in the environment, with the dataset in the replay buffer.

        Warns (once per model): a ``UserWarning`` when ``lr_warmup_steps`` spans every gradient step of an
        offline call, whose learning rate then stays below its peak.
        """
        name = tb_log_name or type(self).__name__
        if self.env is None:
            raise ValueError(
                f"{type(self).__name__} has no environment: pass env=... to load() (or call set_env) before learn()"
            )
        if online:
            if not self.supports_online:
                raise NotImplementedError(
                    f"{type(self).__name__} learns from a dataset only; online=True is not supported"
                )
            self._learning_offline = False
            self._load_named_dataset_for_buffer()
            self._prepare_replay_buffer(total_timesteps)
            return super().learn(
                total_timesteps, callback, log_interval, name, reset_num_timesteps, progress_bar
            )
        if self._offline is None and self.dataset is not None:  # a loaded model names its dataset
            self.set_dataset(self.dataset)
        if self._offline is None:
            raise ValueError(
                f"{type(self).__name__} has no dataset to learn from: pass dataset=... when creating it, "
                "call set_dataset(...) after loading, or use learn(..., online=True)"
            )
        self._learning_offline = True
        total, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, name, progress_bar
        )
        self._warn_if_warmup_spans(total - self.num_timesteps)
        callback.on_training_start(locals(), globals())
        clock = (time.perf_counter(), self.num_timesteps)
        self._last_log = None
        while self.num_timesteps < total:
            steps = min(self.check_every, total - self.num_timesteps)
            if not self._offline_block(steps, callback, log_interval, clock):
                break
        self._monitor.flush()
        if self.verbose >= 1 and self._last_log is not None and self._last_log[1] != self.num_timesteps:
            self._dump_offline_logs(*clock)  # the call's last steps
        callback.on_training_end()
        return self

    def _warn_if_warmup_spans(self, steps: int) -> None:
        """Warn (once per model) when the learning-rate warm-up lasts for all ``steps`` gradient steps."""
        warmup, done = self.lr_warmup_steps, self._n_updates
        if warmup <= 0 or done + steps > warmup or self._warned_warmup:
            return
        self._warned_warmup = True
        warnings.warn(
            f"{type(self).__name__}.learn: the learning rate is still warming up during all {steps} gradient "
            f"steps of this call (lr_warmup_steps={warmup}, counted across learn calls; {done} taken before), "
            f"so it never reaches its peak before gradient step {warmup}: learn for more than "
            f"{warmup - done} steps, or pass a smaller lr_warmup_steps (0: no warm-up)",
            UserWarning,
            stacklevel=3,
        )

    def _offline_block(
        self, steps: int, callback: BaseCallback, log_interval: int, clock: tuple[float, int]
    ) -> bool:
        """``steps`` gradient steps on the dataset, framed as one SB3 rollout (see the class doc);
        ``clock``: when and at which step this ``learn`` call started. False: a callback stopped."""
        callback.on_rollout_start()
        for _ in range(steps):
            self._gradient_step(self._offline.sample(self.batch_size, self.generator))
            self.num_timesteps += 1
            callback.update_locals(self._offline_locals())
            if not callback.on_step():
                return False
            if log_interval and self.num_timesteps % log_interval == 0:
                self._dump_offline_logs(*clock)
        if self.verbose >= 1 and self._log_due():
            self._dump_offline_logs(*clock)
        callback.on_rollout_end()
        return True

    def _log_due(self) -> bool:
        """Whether a block end is due to log by wall time (see ``learn``'s ``log_interval``)."""
        if self._last_log is None:
            return True
        logged_at, step = self._last_log
        return step != self.num_timesteps and time.perf_counter() - logged_at >= self.log_every_seconds

    def _offline_locals(self) -> dict[str, Any]:
        """What callbacks find in ``self.locals`` after an offline gradient step: no episode ends."""
        n_envs = self.n_envs
        return {"dones": np.zeros(n_envs, dtype=bool), "infos": [{} for _ in range(n_envs)]}

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """SB3's online update: ``gradient_steps`` steps on replay-buffer batches."""
        assert self.replay_buffer is not None
        for _ in range(gradient_steps):
            self._gradient_step(self.replay_buffer.sample(batch_size, env=self._vec_normalize_env))
        for name, value in self._monitor.means.items():
            self.logger.record(f"train/{name}", value)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        named = self.policy.optimizers()
        names = named if self.scheduled_optimizers is None else self.scheduled_optimizers
        return [named[name] for name in names]

    def _gradient_step(self, batch: Any) -> None:
        self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
        self._update_learning_rate(self._scheduled_optimizers())
        if not self.policy.training:  # predict() (e.g. an EvalCallback) switched to eval mode
            self.policy.set_training_mode(True)
        with step_autocast(self.precision, self.device):
            stats = self.train_step(self._prepare_batch(batch))
        self._n_updates += 1
        self._monitor.record(stats, self._n_updates)
        self.step_statistics = stats

    def _prepare_batch(self, batch: Any) -> Any:
        """Flattened, normalised observations and scaled rewards; actions are already in [-1, 1]."""
        return ReplayBufferSamples(
            self.policy.features(batch.observations),
            batch.actions,
            self.policy.features(batch.next_observations),
            batch.dones,
            self.reward_scale * batch.rewards + self.reward_bias,  # type: ignore[operator]
        )

    @abstractmethod
    def train_step(self, batch: Any) -> dict[str, Tensor]:
        """One gradient step on a prepared batch; returns detached statistics (no ``.item()``)."""

    def _dump_offline_logs(self, started: float, start_step: int) -> None:
        self._monitor.flush()
        for name, value in self._monitor.means.items():
            self.logger.record(f"train/{name}", value)
        elapsed = max(time.perf_counter() - started, 1e-9)
        self.logger.record("time/gradient_steps_per_second", (self.num_timesteps - start_step) / elapsed)
        self.logger.record("time/total_gradient_steps", self.num_timesteps)
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([info["r"] for info in self.ep_info_buffer]))
        self.logger.dump(step=self.num_timesteps)
        self._last_log = (time.perf_counter(), self.num_timesteps)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if not (progress_bar and self._learning_offline):
            return super()._init_callback(callback, progress_bar)
        callback = super()._init_callback(callback, progress_bar=False)
        combined = CallbackList([callback, StepProgressBar()])  # tqdm, in steps (SB3's rich bar: 0 it/s)
        combined.init_callback(self)
        return combined

    def _load_named_dataset_for_buffer(self) -> None:
        """Before a loaded model's first online call: its named dataset, else a warning that the buffer
        starts empty (a zoo model's data need not be on this machine)."""
        if self.replay_buffer is not None or self._offline is not None or not isinstance(self.dataset, str):
            return
        try:
            self.set_dataset(self.dataset)
        except (OSError, ValueError, KeyError) as error:
            warnings.warn(
                f"{type(self).__name__}: online fine-tuning starts with an empty replay buffer: the model's "
                f"dataset {self.dataset!r} could not be loaded ({error}); call set_dataset(...) first to "
                "keep learning from it too",
                UserWarning,
                stacklevel=3,
            )

    def _prepare_replay_buffer(self, online_steps: int) -> None:
        """A replay buffer holding the whole dataset, with room for ``buffer_size`` new steps."""
        if self.replay_buffer is not None:
            return
        offline = self._offline
        if isinstance(offline, MappedBatches):
            raise ValueError(
                "online fine-tuning copies the dataset into SB3's in-memory replay buffer, so it cannot "
                "start from a memory-mapped dataset (dataset_in_memory=False): construct or load the model "
                "with dataset_in_memory=True for learn(..., online=True)"
            )
        stored = offline.size if offline is not None else 0
        buffer_class = self.replay_buffer_class or (
            DictReplayBuffer if isinstance(self.observation_space, spaces.Dict) else ReplayBuffer
        )
        rows = (
            (stored + self.n_envs - 1) // self.n_envs + max(self.buffer_size, online_steps) // self.n_envs + 1
        )
        self.replay_buffer = buffer_class(
            rows * self.n_envs,  # SB3's buffers hold buffer_size // n_envs rows of n_envs transitions
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            **self.replay_buffer_kwargs,
        )
        if offline is not None:
            self._copy_dataset_into(self.replay_buffer, offline)

    def _copy_dataset_into(self, buffer: ReplayBuffer | DictReplayBuffer, offline: OfflineBatches) -> None:
        """Write the dataset row-major across the buffer's env slots (already-scaled actions)."""
        usable = offline.size - offline.size % self.n_envs
        rows = usable // self.n_envs

        def layout(tensor: Tensor, shape: tuple[int, ...]) -> np.ndarray:
            return tensor[:usable].cpu().numpy().reshape(rows, self.n_envs, *shape)

        def store(target: np.ndarray | dict[str, np.ndarray], flat: Tensor) -> None:
            if not isinstance(target, dict):
                target[:rows] = layout(flat, target.shape[2:])
                return
            start = 0  # Dict observations were flattened key by key, in the space's order
            for key, space in self.observation_space.spaces.items():  # type: ignore[attr-defined]
                if not isinstance(space, spaces.Box):
                    raise NotImplementedError(
                        f"online fine-tuning with a non-Box Dict entry {key!r}: {space}"
                    )
                size = spaces.flatdim(space)
                target[key][:rows] = layout(flat[:, start : start + size], space.shape)
                start += size

        store(buffer.observations, offline.observations)
        store(buffer.next_observations, offline.next_observations)
        buffer.actions[:rows] = layout(offline.actions, (buffer.action_dim,))
        buffer.rewards[:rows] = layout(offline.rewards, ())
        buffer.dones[:rows] = layout(offline.dones, ())
        buffer.pos = rows

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike, exclude: Any = None, include: Any = None) -> None:  # type: ignore[override]
        """Write one zip (see :mod:`diffgym.serialization`); an existing file is replaced atomically.

        A ``learning_rate`` schedule (a callable) is code, which a model file never holds: the file
        records its value at progress 1 (the start of training) as a constant ``learning_rate``,
        and a ``UserWarning`` says so. The optimizers' current rates are saved with their state.
        """
        members = {
            "policy": self.policy.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.policy.optimizers().items()},
            "generators": self.generator_states(),
        }
        save_model_file(path, self.manifest(), members)

    def manifest(self) -> dict[str, Any]:
        """What rebuilds this model, as JSON: class, hyperparameters, spaces, counters, seed, dataset id,
        sampler (the ``diffgym.json`` of a model file; :meth:`from_parts` reads it back)."""
        return {
            "algorithm": type(self).__name__,
            "diffgym_version": diffgym.__version__,
            "hyperparameters": self._saved_hyperparameter_values(),
            "policy_kwargs": self.policy_kwargs,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "num_timesteps": self.num_timesteps,
            "n_updates": self._n_updates,
            "seed": self.seed,
            "dataset": self.dataset if isinstance(self.dataset, str) else None,  # the Minari id
            "sampler": sampler_config(sampler)
            if (sampler := getattr(self.policy, "sampler", None))
            else None,
            "provenance": self.provenance,
        }

    def generator_states(self) -> dict[str, Tensor]:
        """The states of the training and the sampling generator (byte tensors)."""
        return {
            "training": self.generator.get_state(),
            "sampling": self.policy.sampling_generator.get_state(),  # type: ignore[union-attr]
        }

    def _saved_hyperparameter_values(self) -> dict[str, Any]:
        """``saved_hyperparameters`` by name; a learning-rate schedule as its value at progress 1."""
        values = {name: getattr(self, name) for name in self.saved_hyperparameters}
        if not callable(self.learning_rate):
            values["learning_rate"] = float(self.learning_rate)
            return values
        values["learning_rate"] = start = float(self.learning_rate(1.0))
        warnings.warn(
            f"{type(self).__name__}.save: the learning_rate schedule {self.learning_rate!r} is code and is "
            f"not saved; the file records its value at progress 1, {start:.6g}, as a constant learning "
            "rate (pass learning_rate=... to load() to train the loaded model on a schedule again)",
            UserWarning,
            stacklevel=3,
        )
        return values

    def get_parameters(self) -> dict[str, Any]:
        """The policy's and the optimizers' state, the groups of the model file:
        ``{"policy": state_dict, "optimizers": {name: state_dict}}`` (for :meth:`set_parameters`)."""
        return {
            "policy": self.policy.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.policy.optimizers().items()},
        }

    def set_parameters(  # type: ignore[override]
        self,
        load_path_or_dict: str | os.PathLike | Mapping[str, Any],
        exact_match: bool = True,
        device: torch.device | str = "auto",
    ) -> None:
        """Load the policy's and the optimizers' state in place, as SB3's ``set_parameters``.

        Args:
            load_path_or_dict: a model file of this algorithm (:meth:`save`; read without executing
                anything), or a dict as :meth:`get_parameters` returns. SB3's layout (attribute
                names such as ``"policy"`` -> state dicts) works too. ``"optimizers"`` may be left
                out. Generators, step counters and hyperparameters stay as they are (``load``
                restores those).
            exact_match: the policy's state must hold exactly the policy's keys, and
                ``"optimizers"``, when given, every optimizer.
            device: as in SB3 (states are copied onto the model's device in any case).

        Raises:
            ModelFileError: the file is not a valid model of this algorithm, or does not fit it.
            ValueError: the dict lacks the policy's state or names unknown optimizers.
        """
        if isinstance(load_path_or_dict, Mapping):
            self._load_parameters(dict(load_path_or_dict), exact_match, device)
            return
        path = load_path_or_dict
        parameters = self._parameters_in_file(path)
        try:
            self._load_parameters(parameters, exact_match, device)
        except (RuntimeError, ValueError) as error:
            raise ModelFileError(
                f"{path}: saved state does not fit this {type(self).__name__} ({error})"
            ) from error

    def _parameters_in_file(self, path: str | os.PathLike) -> dict[str, Any]:
        """The ``policy`` and ``optimizers`` members of a model file of this algorithm."""
        manifest, members = load_model_file(path)
        if manifest.get("algorithm") != type(self).__name__:
            raise ModelFileError(
                f"{path} holds a {manifest.get('algorithm')!r} model, not {type(self).__name__}"
            )
        missing = sorted({"policy", "optimizers"} - set(members))
        if missing:
            raise ModelFileError(f"{path} has no {', '.join(missing)} member")
        return {"policy": members["policy"], "optimizers": members["optimizers"]}

    def _load_parameters(
        self, parameters: dict[str, Any], exact_match: bool, device: torch.device | str
    ) -> None:
        """``set_parameters`` on a dict: the optimizers by name, the rest by SB3."""
        optimizers = parameters.pop("optimizers", None)
        if exact_match and "policy" not in parameters:
            raise ValueError(
                f"the parameters hold no 'policy' state (keys {sorted(parameters)}); pass exact_match=False "
                "to load part of a model"
            )
        if optimizers is not None:
            self._check_optimizer_names(optimizers, exact_match)
        super().set_parameters(parameters, exact_match, device)  # type: ignore[arg-type]
        for name, state in (optimizers or {}).items():
            self.policy.optimizers()[name].load_state_dict(state)

    def _check_optimizer_names(self, states: Mapping[str, Any], exact_match: bool) -> None:
        named = sorted(self.policy.optimizers())
        unknown, missing = sorted(set(states) - set(named)), sorted(set(named) - set(states))
        if unknown or (exact_match and missing):
            raise ValueError(
                f"the parameters' optimizers {sorted(states)} do not match {type(self).__name__}'s {named}"
            )

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``. Without a replay buffer (offline, or just loaded) the model takes any
        number of envs; once online learning has laid out its buffer, SB3's rule holds (the same
        number)."""
        wrapped = self._wrap_env(env, self.verbose)
        if self.replay_buffer is None:
            self.n_envs = wrapped.num_envs
        super().set_env(wrapped, force_reset)

    def save_replay_buffer(self, path: str | pathlib.Path | Any) -> None:
        """SB3's: pickle the online replay buffer (the dataset plus new experience).

        Raises:
            ValueError: there is none yet. Offline learning samples the dataset itself (the model
                file names it); ``learn(..., online=True)`` creates the buffer.
        """
        if self.replay_buffer is None:
            raise ValueError(
                f"{type(self).__name__} has no replay buffer to save: offline learning samples the dataset "
                f"({self.dataset!r}, named in the model file) directly; a replay buffer exists once "
                "learn(..., online=True) has run"
            )
        super().save_replay_buffer(path)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfAlgorithm],
        path: str | os.PathLike,
        env: GymEnv | None = None,
        device: torch.device | str = "auto",
        dataset: DatasetLike | None = None,
        **kwargs: Any,
    ) -> SelfAlgorithm:
        """Load a model saved by :meth:`save`; nothing in the file is executed.

        Args:
            path: the zip (``.zip`` may be left out).
            env: an environment with the model's spaces (needed to keep learning or evaluate).
            device: where to put the networks.
            dataset: a dataset to keep learning from offline (optional).
            kwargs: constructor arguments that override the saved ones (e.g. ``verbose``);
                ``policy_kwargs`` are merged over the saved ones, so ``policy_kwargs={"sampler":
                "ddim"}`` changes how the model acts and keeps the rest (keys that shape the
                networks cannot change: the saved weights would not fit).

        Raises:
            ModelFileError: the file is not a (valid, untampered) model of this algorithm.
        """
        manifest, members = load_model_file(path)
        return cls.from_parts(manifest, members, env, device, dataset, source=str(path), **kwargs)

    @classmethod
    def from_parts(
        cls: type[SelfAlgorithm],
        manifest: Mapping[str, Any],
        members: Mapping[str, Any],
        env: GymEnv | None = None,
        device: torch.device | str = "auto",
        dataset: DatasetLike | None = None,
        source: str = "the model",
        **kwargs: Any,
    ) -> SelfAlgorithm:
        """A model rebuilt from its :meth:`manifest` and its tensors (what :meth:`load` and the zoo share).

        Args:
            manifest: as :meth:`manifest` returns.
            members: ``"policy"`` (the policy's state dict), optionally ``"optimizers"`` (name ->
                state dict; fresh optimizers without it) and ``"generators"`` (as
                :meth:`generator_states`; seeded from the manifest without it).
            env, device, dataset, kwargs: as in :meth:`load`.
            source: the file the parts come from, for error messages.

        Raises:
            ModelFileError: the parts do not describe a model of this class, or do not fit it.
        """
        if manifest.get("algorithm") != cls.__name__:
            raise ModelFileError(f"{source} holds a {manifest.get('algorithm')!r} model, not {cls.__name__}")
        with as_model_file_error(f"{source}: its manifest does not describe a {cls.__name__} model"):
            observation_space = space_from_json(manifest["observation_space"])
            action_space = space_from_json(manifest["action_space"])
            overrides = kwargs.pop("policy_kwargs", None) or {}
            policy_kwargs = {**manifest["policy_kwargs"], **overrides}
            arguments = {**manifest["hyperparameters"], "policy_kwargs": policy_kwargs, **kwargs}
            num_timesteps, n_updates = int(manifest["num_timesteps"]), int(manifest["n_updates"])
        if env is not None:  # a wrong env is the caller's error, not the file's
            check_for_correct_spaces(env, observation_space, action_space)  # type: ignore[arg-type]
        with as_model_file_error(f"{source}: hyperparameters do not fit {cls.__name__}"):
            policy = "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy"
            model = cls(
                policy, env, device=device, seed=manifest["seed"], _init_setup_model=False, **arguments
            )
            model.observation_space, model.action_space = observation_space, action_space
            model._setup_model()
        unfit = f"{source}: the policy's saved state does not fit {cls.__name__}"
        if overrides:
            unfit += (
                f" built with policy_kwargs {overrides} (those that shape networks cannot change at load)"
            )
        with as_model_file_error(unfit):
            model.policy.load_state_dict(members["policy"])
        if "optimizers" in members:
            with as_model_file_error(f"{source}: the optimizers' saved state does not fit {cls.__name__}"):
                for name, optimizer in model.policy.optimizers().items():
                    optimizer.load_state_dict(members["optimizers"][name])
        if "generators" in members:
            with as_model_file_error(f"{source}: the saved generator states do not fit {cls.__name__}"):
                model.generator.set_state(members["generators"]["training"])
                model.policy.sampling_generator.set_state(members["generators"]["sampling"])  # type: ignore[union-attr]
        model.dataset = manifest.get("dataset")  # loaded lazily, if learning continues offline
        model.provenance = dict(manifest.get("provenance") or {})
        model.num_timesteps, model._n_updates = num_timesteps, n_updates
        if dataset is not None:
            model.set_dataset(dataset)
        return model
