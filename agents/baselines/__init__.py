"""Baselines the diffusion agents are measured against, as first-class agents: TD3+BC, IQL,
behaviour cloning with an observation history, and per-agent behaviour cloning for teams."""

from diffgym.agents.baselines.history_bc import HistoryBC, HistoryBCPolicy
from diffgym.agents.baselines.iql import IQL, IQLPolicy
from diffgym.agents.baselines.td3bc import TD3BC, TD3BCPolicy
from diffgym.agents.baselines.team_bc import TeamBC, TeamBCPolicy

__all__ = [
    "IQL",
    "TD3BC",
    "HistoryBC",
    "HistoryBCPolicy",
    "IQLPolicy",
    "TD3BCPolicy",
    "TeamBC",
    "TeamBCPolicy",
]
