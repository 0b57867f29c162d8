"""The agent registry: every algorithm diffgym offers, by short name, in one place.

The facade (``from diffgym import DiffusionQL``), the command line (``diffgym train dql``), the
conformance test and the benchmarks all read this registry, so adding an agent is its folder under
``agents/`` plus one :class:`AgentSpec` in ``agents/registry.py``.

The core never imports an agent: the registry learns about agents from the Python entry-point group
``diffgym.agents`` (diffgym's own ``pyproject.toml`` points it at ``diffgym.agents.registry:AGENTS``;
another package can add its agents the same way), and from :func:`register` at run time. An entry's
class is imported only when it is first used.

>>> spec = AgentSpec("toy", "collections:OrderedDict", tasks=("offline",))
>>> register(spec)
>>> get("toy").load().__name__, get("OrderedDict") is spec
('OrderedDict', True)
>>> unregister("toy")
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "diffgym.agents"

#: what an agent can be used for; ``diffgym train`` and the conformance test read ``"team"``
TASKS = frozenset({"offline", "online", "planning", "imitation", "goal", "team"})


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """One agent: its command-line name, where its class lives, and what it is for.

    Args:
        name: the short name of the command line, hyperparameter files and zoo names (``"dql"``).
        target: the class, or ``"module:ClassName"`` imported on first use.
        tasks: what it supports, from :data:`TASKS`: ``"offline"`` (learns from a dataset),
            ``"online"`` (``learn(..., online=True)`` fine-tunes in the env), ``"planning"`` (plans
            trajectories), ``"imitation"`` (clones demonstrations), ``"goal"`` (goal-conditioned
            Dict observations), ``"team"`` (a PettingZoo team of agents).
        hyperparams: the stem of its file ``zoo/hyperparams/<stem>.yml`` (default: ``name``).
        baseline: a non-diffusion method kept to measure the diffusion agents against.
        kwargs: constructor arguments this entry fixes (e.g. a mode of a shared class).
    """

    name: str
    target: type | str
    tasks: tuple[str, ...] = ("offline",)
    hyperparams: str | None = None
    baseline: bool = False
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - TASKS
        if unknown:
            raise ValueError(f"agent {self.name!r}: unknown tasks {sorted(unknown)}; known: {sorted(TASKS)}")
        if isinstance(self.target, str) and ":" not in self.target:
            raise ValueError(f"agent {self.name!r}: target must be a class or 'module:ClassName'")

    @property
    def class_name(self) -> str:
        """The name ``from diffgym import ...`` gives the class."""
        return self.target.__name__ if isinstance(self.target, type) else self.target.partition(":")[2]

    @property
    def hyperparams_name(self) -> str:
        return self.hyperparams or self.name

    @property
    def team(self) -> bool:
        return "team" in self.tasks

    def load(self) -> type:
        """The agent's class (imported on first use)."""
        if isinstance(self.target, type):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    def make(self, *args: Any, **kwargs: Any) -> Any:
        """A new agent: the class called with this entry's fixed ``kwargs`` and the given ones."""
        return self.load()(*args, **{**self.kwargs, **kwargs})

    @property
    def policies(self) -> tuple[str, ...]:
        """The policy aliases the class accepts (``"MlpPolicy"``, ``"MultiInputPolicy"``, ...)."""
        return tuple(getattr(self.load(), "policy_aliases", {}))


_agents: dict[str, AgentSpec] = {}
_plugins_loaded = False


def register(spec: AgentSpec, replace: bool = False) -> None:
    """Add an agent.

    Raises:
        ValueError: the name (or the class name, for the facade) is taken and ``replace`` is False.
    """
    _load_plugins()
    _add(spec, replace)


def unregister(name: str) -> None:
    """Remove an agent by its short name (tests and plugins that replace one)."""
    _load_plugins()
    _agents.pop(name)


def registered() -> dict[str, AgentSpec]:
    """Every agent by short name, in registration order."""
    _load_plugins()
    return dict(_agents)


def get(name: str) -> AgentSpec:
    """An agent by its short name (``"dql"``) or its class name (``"DiffusionQL"``).

    Raises:
        KeyError: no such agent; the message lists the known ones.
    """
    agents = registered()
    if name in agents:
        return agents[name]
    for spec in agents.values():
        if spec.class_name == name:
            return spec
    raise KeyError(f"no agent named {name!r}; known agents: {', '.join(agents)}")


def facade_names() -> dict[str, AgentSpec]:
    """Class name -> entry, for ``from diffgym import ClassName`` (the first entry of a class wins)."""
    names: dict[str, AgentSpec] = {}
    for spec in registered().values():
        names.setdefault(spec.class_name, spec)
    return names


def _add(spec: AgentSpec, replace: bool) -> None:
    if not replace and spec.name in _agents:
        raise ValueError(f"an agent named {spec.name!r} is already registered ({_agents[spec.name].target})")
    _agents[spec.name] = spec


def _load_plugins() -> None:
    """Register the agents that installed packages list under :data:`ENTRY_POINT_GROUP` (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        specs: Iterable[AgentSpec] = entry.load()
        for spec in specs:
            _add(spec, replace=False)
