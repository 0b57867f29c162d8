"""``compile_networks=True``: every network of a policy through ``torch.compile``.

What is compiled (in place, ``nn.Module.compile``; state-dict keys do not change): the denoiser of
every :class:`~diffgym.diffusion.GaussianDiffusion` (actors, planners, their EMA copies), the
critics and value networks (:class:`~diffgym.networks.StateActionCritic`,
:class:`~diffgym.networks.EnsembleMLP`, :class:`~diffgym.denoisers.TemporalValueNet`) and
inverse-dynamics models. The diffusion chain around the denoiser, the losses and the optimisers stay
eager. On CPU, TorchInductor fuses each network's bias additions, activations and normalisations
into a few C++ loops around the matrix products (a C++ compiler is needed); the first calls at each
new batch shape compile (seconds to a minute; cached on disk for later processes).
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from diffgym.denoisers.value import TemporalValueNet
from diffgym.diffusion import GaussianDiffusion
from diffgym.networks import EnsembleMLP, InverseDynamics, StateActionCritic

__all__ = ["compile_networks", "networks_to_compile"]

NETWORK_TYPES = (StateActionCritic, EnsembleMLP, InverseDynamics, TemporalValueNet)
CXX_COMPILERS = ("g++", "c++", "clang++")


def networks_to_compile(root: nn.Module) -> dict[str, nn.Module]:
    """The outermost networks of ``root`` by name: denoisers of diffusion models and value networks."""
    found: dict[str, nn.Module] = {}
    for name, module in root.named_modules():
        if any(name.startswith(f"{outer}.") for outer in found):
            continue
        if isinstance(module, GaussianDiffusion):
            found[f"{name}.denoiser" if name else "denoiser"] = module.denoiser
        elif isinstance(module, NETWORK_TYPES):
            found[name] = module
    return found


def compile_networks(root: nn.Module, device: torch.device) -> list[str]:
    """Compile every network of ``root`` in place; returns their names.

    Raises:
        RuntimeError: on CPU without a C++ compiler, which TorchInductor needs.
    """
    if device.type == "cpu" and not any(shutil.which(cxx) for cxx in CXX_COMPILERS):
        raise RuntimeError(
            "compile_networks=True on CPU needs a C++ compiler (g++ or clang++), as torch.compile "
            "does; install one (e.g. apt install g++) or leave compile_networks=False"
        )
    networks = networks_to_compile(root)
    for network in networks.values():
        network.compile()
    return list(networks)
