"""The package list, computed from the four source folders (see DESIGN.md, "Layout").

``pyproject.toml`` holds everything else. The folders install as one namespace through
``package_dir``; listing every package with an ``__init__.py`` here means a new agent folder ships
without editing a hand-kept list, and CI imports each of them from the built wheel.
"""

from pathlib import Path

from setuptools import setup

#: installed package prefix -> source folder
ROOTS = {
    "diffgym": "diffgym",
    "diffgym.agents": "agents",
    "diffgym.wrappers": "wrappers",
    "diffgym.zoo": "zoo",
    "diffgym.cli": "cli",
}


def packages(prefix: str, folder: str) -> list[str]:
    """``prefix`` and every package below ``folder``: directories whose chain of parents up to
    ``folder`` all hold an ``__init__.py``."""
    root = Path(__file__).parent / folder
    found = []
    for init in sorted(root.rglob("__init__.py")):
        parts = init.parent.relative_to(root).parts
        if all((root.joinpath(*parts[:depth]) / "__init__.py").exists() for depth in range(len(parts))):
            found.append(".".join((prefix, *parts)))
    return found


setup(
    packages=sorted({name for prefix, folder in ROOTS.items() for name in packages(prefix, folder)}),
    package_dir=ROOTS,
)
