"""Diffuser (Janner et al., ICML 2022) and Decision Diffuser (Ajay et al., ICLR 2023) planners."""

from diffgym.agents.diffuser.diffuser import DecisionDiffuser, DiffuserPlanner
from diffgym.agents.diffuser.policies import DecisionDiffuserPolicy, DiffuserPolicy, SingleAgentPlanner

__all__ = [
    "DecisionDiffuser",
    "DecisionDiffuserPolicy",
    "DiffuserPlanner",
    "DiffuserPolicy",
    "SingleAgentPlanner",
]
