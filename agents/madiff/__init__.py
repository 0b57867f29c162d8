"""MADiff (Zhu et al. 2023): multi-agent trajectory diffusion for PettingZoo teams."""

from diffgym.agents.madiff.madiff import MADiff
from diffgym.agents.madiff.policies import MADiffPolicy

__all__ = ["MADiff", "MADiffPolicy"]
