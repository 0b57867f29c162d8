"""Diffusion Policy (Chi et al., RSS 2023): action chunks denoised from an observation history."""

from diffgym.agents.diffusion_policy.diffusion_policy import DiffusionPolicy
from diffgym.agents.diffusion_policy.policies import DiffusionPolicyNet

__all__ = ["DiffusionPolicy", "DiffusionPolicyNet"]
