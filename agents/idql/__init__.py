"""IDQL (Hansen-Estruch, Kostrikov, Janner, Kuba & Levine, 2023)."""

from diffgym.agents.idql.idql import IDQL
from diffgym.agents.idql.policies import IDQLPolicy

__all__ = ["IDQL", "IDQLPolicy"]
