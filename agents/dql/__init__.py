"""Diffusion-QL (Wang, Hunt & Zhou, ICLR 2023)."""

from diffgym.agents.dql.dql import DiffusionQL
from diffgym.agents.dql.policies import DiffusionQLPolicy

__all__ = ["DiffusionQL", "DiffusionQLPolicy"]
