"""The ``diffgym`` command line: above everything else (it may import the zoo, the agents, the
wrappers and the core; nothing imports it). Agents come from the registry (:mod:`diffgym.registry`).

``build_parser()`` returns the top-level parser; each command group adds itself to its
``subparsers`` through an ``add_<group>_commands(subparsers)`` function of its module
(:mod:`~diffgym.cli.data`, :mod:`~diffgym.cli.train`, :mod:`~diffgym.cli.benchmark`), and every
command is one function ``(args) -> exit code`` set as the parser's ``func`` default. Add a group by
writing such a module and calling its function in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import sys

import diffgym
from diffgym.cli.benchmark import add_benchmark_command
from diffgym.cli.data import add_data_commands
from diffgym.cli.train import add_train_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``diffgym`` parser with every command group."""
    parser = argparse.ArgumentParser(
        prog="diffgym", description="Diffusion models for reinforcement learning: datasets, training, zoo."
    )
    parser.add_argument("--version", action="version", version=f"diffgym {diffgym.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_data_commands(subparsers)
    add_train_command(subparsers)
    add_benchmark_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (``diffgym`` exits with it)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"diffgym: error: {message}", file=sys.stderr)
        return 1
