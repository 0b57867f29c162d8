"""diffgym: diffusion models for reinforcement learning with the SB3 / Gymnasium / Minari API.

The agents live in ``diffgym.agents`` (one folder each); the names below are a facade so that
``from diffgym import DiffusionQL`` works. They are resolved on first access, so importing the
core (``diffgym.diffusion``, ``diffgym.data``, …) never imports an agent.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_AGENTS = {
    "DiffusionQL": "diffgym.agents.dql",
    "IDQL": "diffgym.agents.idql",
    "DiffuserPlanner": "diffgym.agents.diffuser",
    "DiffusionPolicy": "diffgym.agents.diffusion_policy",
    "MADiff": "diffgym.agents.madiff",
}

__all__ = [*_AGENTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _AGENTS:
        return getattr(importlib.import_module(_AGENTS[name]), name)
    raise AttributeError(f"module 'diffgym' has no attribute {name!r}")
