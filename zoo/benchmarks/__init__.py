"""Benchmark suites, run with ``diffgym benchmark NAME`` through :mod:`diffgym.zoo.benchmarks.harness`.

Each module ``diffgym.zoo.benchmarks.<name>`` defines ``SUITE``, imported only when that suite runs
(some need optional packages: Meta-World, mpe2, gymnasium-robotics).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.harness import Suite

__all__ = ["SUITES", "load_suite"]

#: the suites ``diffgym benchmark`` knows, by name (each a module of this package)
SUITES = ("core", "d4rl", "planning", "synther", "metaworld", "madiff", "train_speed")


def load_suite(name: str) -> Suite:
    """The ``SUITE`` of ``diffgym.zoo.benchmarks.<name>``.

    Raises:
        KeyError: no such suite; the message lists them.
    """
    if name not in SUITES:
        raise KeyError(f"no benchmark suite {name!r}; suites: {', '.join(SUITES)}")
    suite: Suite = importlib.import_module(f"diffgym.zoo.benchmarks.{name}").SUITE
    return suite
