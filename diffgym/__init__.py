"""diffgym: diffusion models for reinforcement learning with the SB3 / Gymnasium / Minari API.

The agents live in ``diffgym.agents`` (one folder each) and are listed in the agent registry
(:mod:`diffgym.registry`); the names below are a facade over it, so that ``from diffgym import
DiffusionQL`` works. They are resolved on first access, so importing the core
(``diffgym.diffusion``, ``diffgym.data``, …) never imports an agent.
"""

from __future__ import annotations

from typing import Any

from diffgym import registry

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return [*registry.facade_names(), "__version__"]
    spec = registry.facade_names().get(name)
    if spec is None:
        raise AttributeError(f"module 'diffgym' has no attribute {name!r}")
    return spec.load()


def __dir__() -> list[str]:
    return sorted([*globals(), *registry.facade_names()])
