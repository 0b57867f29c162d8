"""Optional dependencies (``pip install 'diffgym[EXTRA]'``): one message for every missing one.

A package that only one task family needs is an extra in ``pyproject.toml``; it is imported on first
use, and a missing one raises :class:`MissingExtraError` naming the ``pip install`` command:

>>> print(missing_extra_message("mpe2", "the PettingZoo env 'mpe2.simple_spread_v3'"))
mpe2 is not installed, the PettingZoo env 'mpe2.simple_spread_v3' needs pip install 'diffgym[mpe]'
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import NamedTuple

__all__ = [
    "EXTRAS",
    "Extra",
    "MissingExtraError",
    "import_extra",
    "is_installed",
    "missing_extra_message",
    "missing_module",
]


class Extra(NamedTuple):
    """An optional package: its name on PyPI and the diffgym extra that installs it."""

    package: str
    extra: str

    @property
    def command(self) -> str:
        """``pip install 'diffgym[<extra>]'``."""
        return f"pip install 'diffgym[{self.extra}]'"

    def message(self, needed_by: str, plural: bool = False) -> str:
        """``"<package> is not installed, <needed_by> needs pip install 'diffgym[<extra>]'"``."""
        return f"{self.package} is not installed, {needed_by} {'need' if plural else 'needs'} {self.command}"


#: top-level module -> the package and extra that provide it
EXTRAS = {
    "gymnasium_robotics": Extra("gymnasium-robotics", "maze"),
    "mpe2": Extra("mpe2", "mpe"),
    "metaworld": Extra("Meta-World", "metaworld"),
}


class MissingExtraError(ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that installs it."""


def missing_extra_message(module: str, needed_by: str, plural: bool = False) -> str | None:
    """:meth:`Extra.message` of the extra whose top-level module is ``module``, or None when there is
    none (a missing *submodule* of an installed package is a wrong name, not a missing install)."""
    found = EXTRAS.get(module)
    return None if found is None else found.message(needed_by, plural)


def import_extra(module: str, needed_by: str) -> ModuleType:
    """Import ``module``; when its extra's package is missing, raise :class:`MissingExtraError`.

    Args:
        module: a module of an optional package (``"mpe2.simple_spread_v3"``).
        needed_by: what needs it, for the message (``"diffgym.tasks.mazes"``).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        message = missing_extra_message(error.name or module, needed_by)
        if message is None:
            raise
        raise MissingExtraError(message, name=error.name) from error


def missing_module(error: BaseException) -> str | None:
    """The module an error (or an error it was raised from) could not find, else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            return current.name
        current = current.__cause__ or current.__context__
    return None


def is_installed(module: str) -> bool:
    """Whether the top-level ``module`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
