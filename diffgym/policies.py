"""Policy bases: :class:`AgentPolicy` (what every diffgym policy shares) and
:class:`CandidateSelectionPolicy` (agents that act by sampling candidate actions).

Diffusion-QL and IDQL both act the same way: draw ``num_candidates`` actions from a diffusion
model for each observation (one batched call), score them with a critic, and keep one.
``deterministic=True`` draws the candidates from a fixed noise seed and keeps the best score, so
the same observation always gets the same action (the survey's "no deterministic diffusion
action" limitation); ``deterministic=False`` draws fresh noise and samples a candidate in
proportion to ``softmax(score)``.

Subclasses build their networks in ``_build`` and implement ``sample_actions`` and
``score_actions``; observations arrive flattened (Dict spaces concatenate their keys in the
space's order) and normalised by ``obs_normalizer``, whose statistics travel in the state dict.

Every policy refuses observations with NaN or inf entries in ``predict`` (a ``ValueError`` naming
them), and takes SB3's ``net_arch`` where its networks are stacks of equal hidden layers
(:attr:`AgentPolicy.net_arch_parts`).
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import Tensor, nn

from diffgym.diffusion import GaussianDiffusion
from diffgym.ema import EMA
from diffgym.networks import StateActionCritic
from diffgym.normalizers import DEFAULT_EPS, GaussianNormalizer, Normalizer, fit_in_chunks
from diffgym.rl import twin_critic
from diffgym.samplers import Randomness, Sampler, TiledNoise, make_sampler
from diffgym.schedules import NoiseSchedule

#: non-finite observation entries listed by name in the error (the rest are counted)
LISTED_ENTRIES = 8


class NetArchPart(NamedTuple):
    """Where one part of SB3's ``net_arch`` goes: the ``_build`` argument its width sets, and its
    depth: the network's fixed number of hidden layers, or the ``_build`` argument that sets it."""

    width: str
    depth: int | str


class AgentPolicy(BasePolicy):
    """What every diffgym policy shares: flattened, normalised observations, a seeded sampling
    generator, named optimizers, and actions in [-1, 1] inside the networks
    (``squash_output=True``: SB3 rescales them to the action space's bounds in ``predict``).

    ``predict`` raises ``ValueError`` naming the entries (index, and key for Dict observations) of
    an observation that holds NaN or inf, which would otherwise give a NaN action.

    Stochastic actions (``deterministic=False``) draw from ``sampling_generator``, which the
    algorithm seeds (``seed=``, ``model.set_random_seed``) and saves. SB3's global
    ``set_random_seed`` reaches it too: when torch's global RNG was seeded or drawn from since the
    generator was set or last reseeded, the next stochastic ``predict`` reseeds it with a draw from
    the global RNG, so the same global seed gives the same actions.

    ``policy_kwargs=dict(net_arch=...)`` is SB3's: a list of hidden-layer widths for every network,
    or ``dict(pi=[...], qf=[...])`` for the actor (``pi``) and the critics and value (``qf``).
    diffgym's networks have one width each, so every entry of a part must be the same;
    :attr:`net_arch_parts` says which ``_build`` argument a part's width sets and what its length
    must be (a fixed depth) or sets (a depth argument). Policies with other networks (U-Nets)
    refuse ``net_arch`` with the arguments to use instead.

    Args:
        observation_space, action_space, lr_schedule: as for every SB3 policy.
        deterministic_seed: seed of the fixed noise used by ``deterministic=True``.
        normalize_observations: standardise observations with the dataset's mean and std.
        network_kwargs: passed to the subclass's ``_build`` (``net_arch`` translated first).
    """

    #: SB3's ``net_arch`` parts (``"pi"``, ``"qf"``) this policy takes; empty: it takes none
    net_arch_parts: ClassVar[dict[str, NetArchPart]] = {}
    #: state a copy of other state can stand in for without changing any action: ``{target prefix:
    #: source prefix}`` of state-dict keys (the networks being trained, rebuilt from the averaged or
    #: target copies that act). A zoo model leaves the targets out (inference weights only); loaded,
    #: they start as copies of their sources, as after SB3's ``set_parameters`` of acting weights.
    derived_state: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        deterministic_seed: int = 0,
        normalize_observations: bool = True,
        **network_kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        self._check_action_space(action_space)
        self.obs_dim = spaces.flatdim(observation_space)
        self.action_dim = spaces.flatdim(action_space)
        self.deterministic_seed = deterministic_seed
        self.normalize_observations = normalize_observations
        self.obs_normalizer: Normalizer = GaussianNormalizer(self.obs_dim)
        self.sampling_generator = None  # seeded by the algorithm
        self._build(lr_schedule, **self._with_net_arch(network_kwargs))

    def _check_action_space(self, action_space: spaces.Space) -> None:
        """Refuse action spaces the policy cannot produce (here: anything but a ``Box``)."""
        if not isinstance(action_space, spaces.Box):
            raise TypeError(f"diffusion policies need a continuous (Box) action space, got {action_space}")

    @abstractmethod
    def _build(self, lr_schedule: Schedule, *args: Any, **network_kwargs: Any) -> None:
        """Create the networks and their optimizers."""

    # ------------------------------------------------------------------ net_arch

    def _with_net_arch(self, network_kwargs: dict[str, Any]) -> dict[str, Any]:
        """``network_kwargs`` with SB3's ``net_arch`` (if given) replaced by ``_build`` arguments."""
        if "net_arch" not in network_kwargs:
            return network_kwargs
        kwargs = dict(network_kwargs)
        translated = self._net_arch_arguments(kwargs.pop("net_arch"))
        both = sorted(set(translated) & set(kwargs))
        if both:
            raise ValueError(
                f"policy_kwargs gives both net_arch and {', '.join(both)}: pass one way of sizing "
                f"{type(self).__name__}'s networks"
            )
        return {**kwargs, **translated}

    def _net_arch_arguments(self, net_arch: Any) -> dict[str, int]:
        """SB3's ``net_arch`` as ``_build`` arguments (see :attr:`net_arch_parts`)."""
        name, parts = type(self).__name__, self.net_arch_parts
        if not parts:
            raise ValueError(
                f"{name} does not take net_arch (its networks are not stacks of equal hidden layers); "
                f"size them with its own policy_kwargs: {', '.join(self._build_arguments())}"
            )
        arguments: dict[str, int] = {}
        for part, layers in _net_arch_layers(net_arch, tuple(parts), name).items():
            for argument, value in self._part_arguments(part, layers).items():
                if arguments.setdefault(argument, value) != value:
                    raise ValueError(
                        f"{name} sizes all its networks with one {argument}: net_arch's parts must agree, "
                        f"got {net_arch!r}"
                    )
        return arguments

    def _build_arguments(self) -> list[str]:
        """The names of ``_build``'s network arguments (what ``policy_kwargs`` may hold)."""
        parameters = inspect.signature(self._build).parameters.values()
        return [p.name for p in parameters if p.name != "lr_schedule" and p.kind is p.POSITIONAL_OR_KEYWORD]

    def _part_arguments(self, part: str, layers: list[int]) -> dict[str, int]:
        """One part's widths (all equal) -> its width argument, and its depth argument if it has one."""
        target = self.net_arch_parts[part]
        what = f"{type(self).__name__}'s " + ("actor ('pi') has" if part == "pi" else "critics ('qf') have")
        if len(set(layers)) != 1:
            raise ValueError(f"{what} one width for all hidden layers; net_arch gives {layers}")
        if isinstance(target.depth, int) and len(layers) != target.depth:
            raise ValueError(
                f"{what} {target.depth} hidden layers; net_arch gives {len(layers)} ({layers}): "
                f"pass [{layers[0]}] * {target.depth}"
            )
        arguments = {target.width: layers[0]}
        if isinstance(target.depth, str):
            arguments[target.depth] = len(layers)
        return arguments

    # ------------------------------------------------------------------ predict

    @property
    def sampling_generator(self) -> torch.Generator | None:
        """Where stochastic actions draw their noise (see the class doc)."""
        return self._sampling_generator

    @sampling_generator.setter
    def sampling_generator(self, generator: torch.Generator | None) -> None:
        self._sampling_generator = generator
        self._global_rng_mark = torch.random.get_rng_state()

    def follow_global_seed(self) -> None:
        """Reseed the sampling generator with a draw from torch's global RNG."""
        seed = int(torch.randint(0, 2**62, ()).item())
        device = self._sampling_generator.device if self._sampling_generator is not None else self.device
        self.sampling_generator = torch.Generator(device=device).manual_seed(seed)

    def _before_acting(self, deterministic: bool) -> None:
        """What every ``predict`` does first: for stochastic actions, follow torch's global RNG if it
        was seeded (or drawn from) since the sampling generator was set."""
        if deterministic:
            return
        if self._sampling_generator is None or not torch.equal(
            torch.random.get_rng_state(), self._global_rng_mark
        ):
            self.follow_global_seed()

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; raises ``ValueError`` naming NaN or inf observation entries."""
        self._before_acting(deterministic)
        return super().predict(observation, state, episode_start, deterministic)

    def obs_to_tensor(self, observation: np.ndarray | dict[str, np.ndarray]) -> tuple[PyTorchObs, bool]:
        """SB3's conversion (shape checks included), then the NaN / inf check."""
        tensor, vectorized = super().obs_to_tensor(observation)
        check_finite_observation(tensor, vectorized)
        return tensor, vectorized

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer, by name (saved and restored with the model)."""

    def fit_normalizer(self, flat_observations: Tensor, eps: float = DEFAULT_EPS) -> None:
        """Set the observation statistics from the dataset: (N, obs_dim); ``eps`` floors each
        feature's spread (standard deviation or half-range)."""
        if self.normalize_observations:
            fitted = type(self.obs_normalizer).fit(flat_observations, eps=eps)
            self.obs_normalizer.load_state_dict(fitted.state_dict())

    def fit_normalizer_in_chunks(self, chunks: Iterable[Tensor], eps: float = DEFAULT_EPS) -> None:
        """:meth:`fit_normalizer` over the rows of ``chunks`` ((rows, obs_dim) each), see
        :func:`~diffgym.normalizers.fit_in_chunks`."""
        if self.normalize_observations:
            fitted = fit_in_chunks(type(self.obs_normalizer), chunks, eps=eps)
            self.obs_normalizer.load_state_dict(fitted.state_dict())

    def features(self, observation: PyTorchObs) -> Tensor:
        """Flatten (Dict keys in order) and normalise: -> (B, obs_dim) float."""
        if isinstance(observation, dict):
            parts = [observation[key].float().flatten(1) for key in self.observation_space.spaces]  # type: ignore[attr-defined]
            flat = torch.cat(parts, dim=1)
        else:
            flat = observation.float().flatten(1)
        return self.obs_normalizer.normalize(flat)

    def _fixed_noise(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.deterministic_seed)


def _net_arch_layers(net_arch: Any, parts: tuple[str, ...], name: str) -> dict[str, list[int]]:
    """SB3's ``net_arch`` (a list for every part, or a dict by part) -> the widths of each part."""
    if isinstance(net_arch, list | tuple):
        layers = {part: list(net_arch) for part in parts}
    elif isinstance(net_arch, Mapping):
        unknown, missing = set(net_arch) - set(parts), set(parts) - set(net_arch)
        if unknown:
            raise ValueError(
                f"{name} has no {sorted(unknown)} network in net_arch; its parts are {list(parts)}"
            )
        if missing:
            raise ValueError(
                f"net_arch={dict(net_arch)!r} needs {', '.join(map(repr, sorted(missing)))} too for {name} "
                "(a list sizes every part)"
            )
        layers = {part: list(net_arch[part]) for part in parts}
    else:
        raise ValueError(
            f"net_arch must be a list of hidden-layer widths or dict(pi=[...], qf=[...]), got {net_arch!r}"
        )
    for part, widths in layers.items():
        if not widths or not all(isinstance(w, int | np.integer) and w > 0 for w in widths):
            raise ValueError(f"net_arch's {part!r} must be positive integer widths, got {widths!r}")
    return {part: [int(w) for w in widths] for part, widths in layers.items()}


def check_finite_observation(observation: Tensor | Mapping[str, Tensor], vectorized: bool) -> None:
    """Raise ``ValueError`` naming the NaN / inf entries of a batched observation.

    ``observation`` is ``(B, ...)`` (or a dict of such, by key); entries are named
    ``observation[key][index]``, the batch index included only when ``vectorized``.
    """
    items = observation.items() if isinstance(observation, Mapping) else [(None, observation)]
    named: list[str] = []
    total = 0
    for key, tensor in items:
        bad = ~torch.isfinite(tensor) if torch.is_floating_point(tensor) else None
        count = 0 if bad is None else int(bad.sum())
        if bad is None or not count:
            continue
        total += count
        prefix = "observation" if key is None else f"observation[{key!r}]"
        for index in torch.nonzero(bad)[: LISTED_ENTRIES - len(named)].tolist():
            position = index if vectorized else index[1:]
            named.append(f"{prefix}{position if position else ''} = {tensor[tuple(index)].item()}")
    if total:
        more = f" and {total - len(named)} more" if total > len(named) else ""
        raise ValueError(
            f"the observation holds {total} NaN or inf {'entry' if total == 1 else 'entries'}, which would "
            f"give a NaN action: {', '.join(named)}{more}. Check the environment (SB3's VecCheckNan finds "
            "where they appear)"
        )


class CandidateSelectionPolicy(AgentPolicy):
    """Acts by sampling candidate actions from a diffusion model and choosing by value.

    Args:
        observation_space, action_space, lr_schedule, deterministic_seed, normalize_observations:
            see :class:`AgentPolicy`.
        num_candidates: actions sampled per observation when acting (Diffusion-QL: 50; IDQL's
            official code: 64).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        num_candidates: int = 50,
        deterministic_seed: int = 0,
        normalize_observations: bool = True,
        **network_kwargs: Any,
    ) -> None:
        self.num_candidates = num_candidates
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            deterministic_seed=deterministic_seed,
            normalize_observations=normalize_observations,
            **network_kwargs,
        )

    @abstractmethod
    def sample_actions(self, features: Tensor, generator: Randomness) -> Tensor:
        """Sample one action in [-1, 1] per row: features (B, obs_dim) -> (B, action_dim)."""

    @abstractmethod
    def score_actions(self, features: Tensor, actions: Tensor) -> Tensor:
        """Value of each (observation, action) row: (B, obs_dim), (B, action_dim) -> (B,)."""

    def select_actions(self, features: Tensor, deterministic: bool) -> Tensor:
        """Sample ``num_candidates`` actions per row and keep one: (B, obs_dim) -> (B, action_dim)."""
        batch, n = features.shape[0], self.num_candidates
        repeated = features.repeat_interleave(n, dim=0)
        if deterministic:
            candidates = self.sample_actions(repeated, TiledNoise(self._fixed_noise(), n))
            choice = self.score_actions(repeated, candidates).view(batch, n).argmax(dim=1)
        else:
            candidates = self.sample_actions(repeated, self.sampling_generator)
            scores = self.score_actions(repeated, candidates).view(batch, n)
            choice = torch.multinomial(
                torch.softmax(scores, dim=1), 1, generator=self.sampling_generator
            ).squeeze(1)
        return candidates.view(batch, n, -1)[torch.arange(batch, device=features.device), choice]

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        return self.select_actions(self.features(observation), deterministic)

    def forward(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        return self._predict(observation, deterministic)


class DiffusionActorPolicy(CandidateSelectionPolicy):
    """A candidate-selection policy whose actor is a diffusion model over actions in [-1, 1],
    with an EMA copy and twin critics with targets (what Diffusion-QL and IDQL share)."""

    actor: GaussianDiffusion
    ema_actor: EMA[GaussianDiffusion]
    sampler: Sampler
    critic: StateActionCritic
    critic_target: StateActionCritic

    def _build_actor(
        self,
        denoiser: nn.Module,
        num_timesteps: int,
        beta_schedule: str,
        sampler: str | dict[str, Any],
        ema_decay: float,
    ) -> None:
        """ε-prediction diffusion of actions given the state, x0 clipped to [-1, 1], and its EMA."""
        schedule = NoiseSchedule.make(beta_schedule, num_timesteps)
        self.actor = GaussianDiffusion(denoiser, schedule, prediction="epsilon", clip_range=(-1.0, 1.0))
        self.ema_actor = EMA(self.actor, ema_decay)
        self.sampler = make_sampler(sampler)

    def _build_twin_critic(self, **mlp_kwargs: Any) -> None:
        """Two Q networks in one ensemble, and a frozen target copy (:func:`~diffgym.rl.twin_critic`)."""
        self.critic, self.critic_target = twin_critic(self.obs_dim, self.action_dim, **mlp_kwargs)

    def sample_from(
        self,
        model: GaussianDiffusion,
        features: Tensor,
        generator: Randomness,
        differentiable: bool = False,
    ) -> Tensor:
        """One action per row from ``model`` (the actor or ``ema_actor.module``): (B, obs_dim) -> (B, A)."""
        shape = (features.shape[0], self.action_dim)
        return model.sample(
            shape, features, sampler=self.sampler, generator=generator, differentiable=differentiable
        )

    @property
    def ema_model(self) -> GaussianDiffusion:
        return self.ema_actor.module
