"""``diffgym benchmark SUITE``: run a benchmark suite (on purpose, never in CI) through the harness."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from diffgym.zoo.benchmarks import SUITES
from diffgym.zoo.benchmarks.ray_runs import LOCAL

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.harness import Session

__all__ = ["add_benchmark_command", "run_benchmark"]

#: the data folder when --data-dir is not given: $DIFFGYM_DATA_DIR, else ./datasets
DATA_DIR_VARIABLE = "DIFFGYM_DATA_DIR"
#: the budget fields an option replaces (option dest = field name)
#: trials of a search when --trials is not given
_TRIALS = 20
_BUDGET_OPTIONS = (
    "seeds", "steps", "eval_every", "eval_episodes", "final_episodes", "checkpoint_every", "until_flat"
)  # fmt: skip


def add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym benchmark SUITE [--agents ...] [--seeds N] [--steps N] [--data-dir DIR] [--out DIR] [--set ...]``."""
    bench = subparsers.add_parser(
        "benchmark",
        help="run a benchmark suite: one JSON record per run and a Markdown report",
        description="Run a benchmark suite on real-size data: every (agent, dataset, seed) of its matrix with the "
        "hyperparameters of zoo/hyperparams/, one JSON record per run under OUT/SUITE/, and OUT/SUITE.md and "
        "OUT/SUITE.json built from every record there. Budget options replace the suite's defaults.",
    )
    bench.add_argument("suite", choices=SUITES, help="which suite")
    bench.add_argument(
        "--agents", nargs="+", default=[], metavar="AGENT", help="only these agents of the suite"
    )
    bench.add_argument("--datasets", nargs="+", default=[], metavar="DATASET", help="only these datasets")
    bench.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 per (agent, dataset)")
    bench.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="gradient steps of every agent (default: each one's n_timesteps)",
    )
    bench.add_argument(
        "--eval-every", type=int, metavar="N", help="gradient steps between evaluations (0: final only)"
    )
    bench.add_argument(
        "--eval-episodes", type=int, metavar="N", help="episodes per evaluation during training"
    )
    bench.add_argument("--final-episodes", type=int, metavar="N", help="episodes of the final evaluation")
    bench.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run the matrix as Ray tasks, one CPU each: on a Ray instance started here, or on the "
        "cluster at ADDRESS (needs 'diffgym[ray]')",
    )
    bench.add_argument(
        "--tune",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=SPACE",
        help="search hyperparameters of one agent (--agents NAME) instead of running the matrix: SPACE is "
        "uniform(LOW, HIGH), loguniform(LOW, HIGH), int(LOW, HIGH) or choice(A, B, ...); each trial runs the "
        "chosen datasets x seeds; on Ray Tune with --ray",
    )
    bench.add_argument(
        "--trials", type=int, help=f"trials of an optuna search (with --tune; default: {_TRIALS})"
    )
    bench.add_argument(
        "--searcher",
        help="with --tune, optuna: TPE for --trials trials; grid: every combination of the choices (default: "
        "optuna)",
    )
    bench.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="checkpoint each run every N gradient steps; the same command resumes an interrupted run",
    )
    bench.add_argument(
        "--until-flat",
        type=int,
        metavar="WINDOW",
        help="train until the loss flattens, --steps at most: stop once two windows of WINDOW gradient steps "
        "in a row have not brought the mean loss 1%% below the best earlier window's (agents with one loss, "
        "such as diffusion_policy and bc; the record keeps each window's mean)",
    )
    bench.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get(DATA_DIR_VARIABLE, "datasets")),
        help=f"folder of the data files (default: ${DATA_DIR_VARIABLE}, else ./datasets)",
    )
    bench.add_argument(
        "--out",
        type=Path,
        default=Path("diffgym-results"),
        help="results folder: records in OUT/SUITE/, the report in OUT/SUITE.md (default: ./diffgym-results)",
    )
    bench.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="[TARGET:]KEY=VALUE",
        help="override a hyperparameter of every agent (KEY=VALUE), of one agent (AGENT:KEY=VALUE), or a "
        "setting of the suite (suite:KEY=VALUE); values read as YAML, nested keys joined by '.'",
    )
    bench.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    bench.add_argument("--save-models", action="store_true", help="also save each model to OUT/SUITE/models/")
    bench.add_argument(
        "--report", action="store_true", help="only rebuild the report from the records in OUT"
    )
    bench.add_argument(
        "--zoo",
        action="store_true",
        help="evaluate the suite's zoo models (trained by it) with its protocol instead of training: each "
        "card's evaluation replayed (as `diffgym zoo check`)",
    )
    bench.set_defaults(func=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> int:
    """``diffgym benchmark``: run the chosen part of the suite's matrix, then print its report."""
    import torch

    from diffgym.zoo.benchmarks import load_suite
    from diffgym.zoo.benchmarks.harness import Session, run_suite

    torch.set_num_threads(args.threads)
    _check_search_options(args)
    if args.zoo:
        return _evaluate_zoo_models(args)
    suite = load_suite(args.suite)
    chosen = {name: getattr(args, name) for name in _BUDGET_OPTIONS if getattr(args, name) is not None}
    session = Session(
        suite,
        data_dir=args.data_dir,
        out=args.out,
        budget=dataclasses.replace(suite.budget, **chosen),
        overrides=tuple(args.set),
        save_models=args.save_models,
        ray_address=args.ray,
    )
    if args.tune:
        path = _search(session, args)
    else:
        path = run_suite(session, agents=args.agents, datasets=args.datasets, report_only=args.report)
    if path is not None:
        print(path.read_text())
    return 0


def _check_search_options(args: argparse.Namespace) -> None:
    """``--tune`` with one agent and neither --report nor --zoo; --trials and --searcher only with it."""
    if args.tune and (len(args.agents) != 1 or args.report or args.zoo):
        raise ValueError(
            "--tune searches one agent's hyperparameters: give --agents NAME (and not --report/--zoo)"
        )
    if not args.tune and (args.trials is not None or args.searcher is not None):
        raise ValueError("--trials and --searcher set a hyperparameter search: give --tune KEY=SPACE ...")


def _search(session: Session, args: argparse.Namespace) -> Path:
    """``--tune``: a hyperparameter search of the one agent named by ``--agents``."""
    from diffgym.zoo.benchmarks.search import Dimension, run_search

    space = [Dimension.parse(text) for text in args.tune]
    trials = _TRIALS if args.trials is None else args.trials
    return run_search(session, args.agents[0], space, args.datasets, trials, args.searcher or "optuna")


def _evaluate_zoo_models(args: argparse.Namespace) -> int:
    """``--zoo``: replay the card of every zoo model the suite trained (filtered by --agents, --datasets)."""
    import numpy as np

    from diffgym import zoo
    from diffgym.cli.zoo import generator_check_text
    from diffgym.zoo.publish import check

    chosen = [
        name
        for name in zoo.list()
        if (card := zoo.info(name).get("results", {}).get("evaluation", {})).get("suite") == args.suite
        and (not args.agents or card.get("agent") in args.agents)
        and (not args.datasets or card.get("dataset") in args.datasets)
    ]
    if not chosen:
        print(f"no zoo model of the {args.suite} suite matches")
        return 0
    print("| model | card's mean return (same episodes) | measured mean return | episodes | verdict |")
    print("| --- | --- | --- | --- | --- |")
    failed = 0
    for name in chosen:
        result = check(name, episodes=args.final_episodes)
        failed += result["verdict"] == "differs"
        if result.get("kind") == "generator":
            print(f"| {name} | - | - | - | {result['verdict']}: {generator_check_text(result)} |")
            continue
        print(
            f"| {name} | {np.mean(result['expected_returns']):.1f} | {result['measured_mean_return']:.1f} "
            f"| {len(result['measured_returns'])} | {result['verdict']} |"
        )
    return 1 if failed else 0
