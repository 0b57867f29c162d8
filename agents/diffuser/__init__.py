"""Diffuser (Janner et al., ICML 2022) and Decision Diffuser (Ajay et al., ICLR 2023) planners."""

from diffgym.agents.diffuser.diffuser import DiffuserPlanner
from diffgym.agents.diffuser.policies import DiffuserPolicy

__all__ = ["DiffuserPlanner", "DiffuserPolicy"]
