"""Diffusion agents, one folder per algorithm (installed as ``diffgym.agents``)."""
