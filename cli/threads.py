"""``--threads N|auto`` for the commands that train (``diffgym train``, ``diffgym data make-d4rl``)."""

from __future__ import annotations

import argparse

from diffgym.cpu_threads import available_cores, choose_threads, parse_threads

__all__ = ["add_threads_option", "use_threads"]


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads``: a positive count, or ``auto`` (the default: the cores no other process is using)."""
    parser.add_argument(
        "--threads",
        type=_threads,
        default="auto",
        help="torch threads, or 'auto': the cores no other process is using (default: %(default)s)",
    )


def use_threads(args: argparse.Namespace) -> int:
    """Set torch's thread count from ``--threads`` (saying what ``auto`` chose); returns it."""
    import torch

    threads = choose_threads() if args.threads is None else args.threads
    torch.set_num_threads(threads)
    if args.threads is None:
        print(f"torch threads: {threads} (the idle cores of {available_cores()}; --threads N to choose)")
    return threads


def _threads(value: str) -> int | None:
    try:
        return parse_threads(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
