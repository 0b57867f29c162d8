"""The ``diffgym`` command line: above everything else (it may import the zoo, the agents, the
wrappers and the core; nothing imports it). Agents come from the registry (:mod:`diffgym.registry`).

``build_parser()`` returns the top-level parser; each command group adds itself to its
``subparsers`` through an ``add_<group>_commands(subparsers)`` function of its module
(:mod:`~diffgym.cli.data`, :mod:`~diffgym.cli.train`, :mod:`~diffgym.cli.benchmark`,
:mod:`~diffgym.cli.zoo`), and every
command is one function ``(args) -> exit code`` set as the parser's ``func`` default. Add a group by
writing such a module and calling its function in :func:`build_parser`.

:func:`main` reports the errors a user can fix (a bad argument or dataset, a missing extra such as
``mpe2``: ``pip install 'diffgym[mpe]'``) as one line and exit code 1, and first checks that
``diffgym`` is the installed package rather than a folder of that name in the current directory.
"""

from __future__ import annotations

import argparse
import sys

import diffgym
from diffgym.tasks.extras import MissingExtraError, missing_extra_message

__all__ = ["build_parser", "main", "namespace_shadowing"]


def build_parser() -> argparse.ArgumentParser:
    """The ``diffgym`` parser with every command group."""
    from diffgym.cli.benchmark import add_benchmark_command
    from diffgym.cli.data import add_data_commands
    from diffgym.cli.train import add_train_command
    from diffgym.cli.zoo import add_enjoy_command, add_zoo_commands

    parser = argparse.ArgumentParser(
        prog="diffgym", description="Diffusion models for reinforcement learning: datasets, training, zoo."
    )
    parser.add_argument("--version", action="version", version=f"diffgym {diffgym.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_data_commands(subparsers)
    add_train_command(subparsers)
    add_benchmark_command(subparsers)
    add_zoo_commands(subparsers)
    add_enjoy_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (``diffgym`` exits with it)."""
    shadowing = namespace_shadowing()
    if shadowing is not None:
        print(f"diffgym: error: {shadowing}", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # the command as given (train records it)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, OSError) as error:  # bad input, missing or unverifiable files
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"diffgym: error: {message}", file=sys.stderr)
        return 1
    except ImportError as error:  # an optional package (an extra) the command needs
        extra = str(error) if isinstance(error, MissingExtraError) else None
        extra = extra or missing_extra_message(error.name or "", f"diffgym {args.command}")
        if extra is None:
            raise
        print(f"diffgym: error: {extra}", file=sys.stderr)
        return 1


def namespace_shadowing() -> str | None:
    """Why ``diffgym`` is not the installed package, or None when it is.

    Run from the folder that holds a clone named ``diffgym/`` (or with it on ``PYTHONPATH``), Python
    takes that folder, which has no ``__init__.py``, for a namespace package ``diffgym`` ahead of an
    editable install; the command line still starts (its own files are in the clone), so it can say
    so. A script doing ``from diffgym import DiffusionQL`` there runs none of diffgym's code and fails
    with ``cannot import name 'DiffusionQL' from 'diffgym' (unknown location)`` (see the README).
    """
    if getattr(diffgym, "__file__", None) is not None:
        return None
    folders = ", ".join(getattr(diffgym, "__path__", []))
    return (
        f"Python imported the folder {folders} as an empty namespace package 'diffgym' instead of the "
        "installed diffgym: it has no __init__.py and is found first because the current folder (or "
        "PYTHONPATH) holds it, e.g. when run from the folder that holds a clone named diffgym. Run "
        "diffgym from another folder (inside the clone works)."
    )
