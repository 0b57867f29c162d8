"""diffgym: diffusion models for reinforcement learning with the SB3 / Gymnasium / Minari API."""

__version__ = "0.1.0"
