"""What TD3+BC's and IQL's policies share: one action per state from a 2-hidden-layer MLP actor."""

from __future__ import annotations

from typing import Any, ClassVar

from diffgym.policies import CandidateSelectionPolicy, NetArchPart

__all__ = ["SingleActionPolicy"]


class SingleActionPolicy(CandidateSelectionPolicy):
    """A policy whose actor gives the action itself (one candidate, nothing to select among), with
    ``hidden_dim`` the width of the actor's and every critic's 2 hidden layers (SB3's ``net_arch``
    sets it too: 2 equal widths, the same for ``pi`` and ``qf``)."""

    net_arch_parts: ClassVar[dict[str, NetArchPart]] = {
        "pi": NetArchPart("hidden_dim", 2),
        "qf": NetArchPart("hidden_dim", 2),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "num_candidates": 1})
