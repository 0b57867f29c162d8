"""The ``diffgym`` command line: above everything else (it may import the zoo, the agents, the
wrappers and the core; nothing imports it). Agents come from the registry (:mod:`diffgym.registry`).

``build_parser()`` returns the top-level parser; each command group adds itself to its
``subparsers`` through an ``add_<group>_commands(subparsers)`` function, and every command is one
function ``(args) -> exit code`` set as the parser's ``func`` default. Add a group by writing such a
function and calling it in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import diffgym
from diffgym import registry

__all__ = ["add_benchmark_command", "add_data_commands", "add_train_command", "build_parser", "main"]

#: benchmark name -> "module:function" taking the parsed extra arguments
BENCHMARKS = {
    "core": "diffgym.zoo.benchmarks.core:main",
    "d4rl": "diffgym.zoo.benchmarks.d4rl:main",
    "madiff": "diffgym.zoo.benchmarks.madiff:main",
    "metaworld": "diffgym.zoo.benchmarks.metaworld:main",
    "planning": "diffgym.zoo.benchmarks.planning:main",
    "synther": "diffgym.zoo.benchmarks.synther:main",
    "train_speed": "diffgym.zoo.benchmarks.train_speed:main",
}

_SB3_ALGOS = ("a2c", "ddpg", "dqn", "ppo", "sac", "td3")


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
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"diffgym: error: {error}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- data


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym data make | import | info``."""
    data = subparsers.add_parser(
        "data",
        help="make, import and inspect Minari datasets",
        description="Make, import and inspect datasets.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    make = commands.add_parser(
        "make",
        help="roll out a policy into a new Minari dataset",
        description="Roll out a policy in a Gymnasium env and store the episodes as a local Minari dataset.",
    )
    make.add_argument("--env", required=True, help="Gymnasium env id, e.g. Pendulum-v1")
    make.add_argument(
        "--policy",
        default="random",
        help="'random' (default) or ALGO:PATH of a saved Stable-Baselines3 model, e.g. sac:models/sac.zip "
        f"(ALGO one of {', '.join(_SB3_ALGOS)})",
    )
    make.add_argument("--steps", type=int, help="number of transitions to collect")
    make.add_argument("--episodes", type=int, help="number of episodes to collect")
    make.add_argument(
        "--id", required=True, dest="dataset_id", help="new Minari id, e.g. test/pendulum/random-v0"
    )
    make.add_argument("--seed", type=int, default=0, help="seed of the first reset and of random actions")
    make.add_argument("--deterministic", action="store_true", help="deterministic SB3 actions")
    make.add_argument("--overwrite", action="store_true", help="replace a local dataset with the same id")
    make.set_defaults(func=data_make)

    imp = commands.add_parser(
        "import",
        help="import a D4RL-layout HDF5 file into Minari",
        description="Import a D4RL-layout HDF5 file (observations, actions, rewards, terminals, timeouts, ...) "
        "into the local Minari store.",
    )
    imp.add_argument("file", help="the .hdf5 file")
    imp.add_argument("--id", dest="dataset_id", help="Minari id (default: imported/<name>-<hash>-v0)")
    imp.add_argument("--env", dest="env_id", help="env id for the spaces (default: the file's metadata)")
    imp.set_defaults(func=data_import)

    info = commands.add_parser(
        "info",
        help="describe a dataset",
        description="Spaces, episodes, transitions, returns and reference returns of a dataset.",
    )
    info.add_argument("dataset", help="Minari id, Minari dataset directory or D4RL-layout .hdf5 file")
    info.set_defaults(func=data_info)


def _load_policy(spec: str) -> Any:
    """'random', or ``ALGO:PATH`` loaded with the Stable-Baselines3 class of that name."""
    if spec == "random":
        return "random"
    algo, sep, path = spec.partition(":")
    if not sep or algo.lower() not in _SB3_ALGOS:
        raise ValueError(f"--policy must be 'random' or ALGO:PATH with ALGO in {_SB3_ALGOS}, not {spec!r}")
    import stable_baselines3

    return getattr(stable_baselines3, algo.upper()).load(path, device="cpu")


def data_make(args: argparse.Namespace) -> int:
    """``diffgym data make``."""
    import minari

    from diffgym.data import collect_dataset

    if args.steps is None and args.episodes is None:
        raise ValueError("give --steps, --episodes or both")
    if args.overwrite and args.dataset_id in minari.list_local_datasets():
        minari.delete_dataset(args.dataset_id)
    dataset = collect_dataset(
        args.env,
        _load_policy(args.policy),
        args.dataset_id,
        n_steps=args.steps,
        n_episodes=args.episodes,
        seed=args.seed,
        deterministic=args.deterministic,
    )
    print(f"created {dataset.id}: {dataset.total_episodes} episodes, {dataset.total_steps} transitions")
    print(f"stored in {dataset.storage.data_path}")
    return 0


def data_import(args: argparse.Namespace) -> int:
    """``diffgym data import``."""
    from diffgym.data import import_d4rl

    dataset = import_d4rl(args.file, dataset_id=args.dataset_id, env_id=args.env_id)
    print(
        f"imported {args.file} as {dataset.id}: {dataset.total_episodes} episodes, {dataset.total_steps} transitions"
    )
    print(f"stored in {dataset.storage.data_path}")
    return 0


def data_info(args: argparse.Namespace) -> int:
    """``diffgym data info``."""
    from diffgym.data import load_dataset
    from diffgym.scores import get_reference

    dataset = load_dataset(args.dataset)
    returns = np.array([episode.rewards.sum() for episode in dataset.iterate_episodes()])
    lines = [
        ("id", dataset.id),
        ("path", str(dataset.storage.data_path)),
        ("env", dataset.env_spec.id if dataset.env_spec is not None else "-"),
        ("observation space", str(dataset.observation_space)),
        ("action space", str(dataset.action_space)),
        ("episodes", str(dataset.total_episodes)),
        ("transitions", str(dataset.total_steps)),
        ("return mean / min / max", f"{returns.mean():.2f} / {returns.min():.2f} / {returns.max():.2f}"),
    ]
    try:
        reference = get_reference(dataset)
        lines.append(
            ("reference random / expert", f"{reference.random:g} / {reference.expert:g} ({reference.source})")
        )
    except KeyError:
        lines.append(("reference random / expert", "none"))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}")
    return 0


# --------------------------------------------------------------------------- train


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym train ALGO --env ENV --dataset DATASET``."""
    train = subparsers.add_parser(
        "train",
        help="train an agent offline on a dataset, evaluate it and save it",
        description="Train a diffusion agent offline (gradient steps on a dataset), then evaluate and save it.",
    )
    train.add_argument("algo", choices=list(registry.registered()), help="the agent")
    train.add_argument(
        "--env",
        help="Gymnasium env id, e.g. Hopper-v5; for madiff a PettingZoo parallel env such as "
        "mpe2.simple_spread_v3 (default: the one the dataset records)",
    )
    train.add_argument("--env-kwargs", default="{}", help="JSON of the PettingZoo env's arguments (madiff)")
    train.add_argument("--dataset", required=True, help="Minari id, Minari directory or D4RL-layout .hdf5")
    train.add_argument("--steps", type=int, default=10_000, help="gradient steps (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument(
        "--eval-episodes", type=int, default=10, help="evaluation episodes (default: %(default)s)"
    )
    train.add_argument("--save", help="where to save the model zip (default: ALGO_ENV.zip)")
    train.add_argument("--kwargs", default="{}", help="JSON of constructor arguments, e.g. '{\"eta\": 0.5}'")
    train.add_argument("--tensorboard", help="TensorBoard log directory")
    train.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(func=train_agent)


def train_agent(args: argparse.Namespace) -> int:
    """``diffgym train``: learn, evaluate (deterministic actions), report, save."""
    import gymnasium as gym
    import torch

    from diffgym.data import load_dataset
    from diffgym.scores import get_reference
    from diffgym.serialization import model_path

    torch.set_num_threads(args.threads)
    spec = registry.get(args.algo)
    dataset = load_dataset(args.dataset, download=True)
    if spec.team:
        env, evaluate = _team_env(args, dataset)
    elif args.env is None:
        raise ValueError(f"diffgym train {args.algo}: --env is required")
    else:
        env, evaluate = gym.make(args.env), _single_agent_evaluation(args)
    behaviour = np.mean([episode.rewards.sum() for episode in dataset.iterate_episodes()])
    print(f"dataset {dataset.id}: {dataset.total_steps} transitions, mean episode return {behaviour:.1f}")
    model = spec.make(
        "MlpPolicy",
        env,
        dataset=dataset,
        seed=args.seed,
        tensorboard_log=args.tensorboard,
        **json.loads(args.kwargs),
    )
    started = time.perf_counter()
    model.learn(args.steps, progress_bar=not args.no_progress)
    seconds = time.perf_counter() - started
    print(
        f"trained {spec.class_name}: {args.steps} gradient steps in {seconds:.0f} s ({args.steps / seconds:.1f}/s)"
    )
    returns = evaluate(model)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print(
        f"evaluation over {args.eval_episodes} episodes: return {mean:.1f} ± {std:.1f} (dataset: {behaviour:.1f})"
    )
    try:
        reference = get_reference(dataset)
        score = 100 * (mean - reference.random) / (reference.expert - reference.random)
        print(f"normalised score {score:.1f} (references: {reference.source})")
    except KeyError:
        pass
    path = model_path(args.save or f"{args.algo}_{args.env or dataset.id.replace('/', '_')}")
    model.save(path)
    print(f"saved {path}")
    return 0


def _single_agent_evaluation(args: argparse.Namespace) -> Callable[[Any], list[float]]:
    """Episode returns of ``args.eval_episodes`` deterministic episodes in a fresh ``args.env``."""
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    def evaluate(model: Any) -> list[float]:
        eval_env = Monitor(gym.make(args.env))
        eval_env.reset(seed=args.seed + 1000)
        returns, _ = evaluate_policy(
            model,
            eval_env,
            n_eval_episodes=args.eval_episodes,
            deterministic=True,
            return_episode_rewards=True,
        )
        return list(returns)  # type: ignore[arg-type]

    return evaluate


def _team_env(args: argparse.Namespace, dataset: Any) -> tuple[Any, Callable[[Any], list[float]]]:
    """The PettingZoo env of a team agent (``--env`` or the dataset's) and its team-return evaluation."""
    from diffgym.data import make_parallel_env, recover_parallel_env
    from diffgym.wrappers import evaluate_team

    env = (
        make_parallel_env(args.env, json.loads(args.env_kwargs))
        if args.env
        else recover_parallel_env(dataset)
    )

    def evaluate(model: Any) -> list[float]:
        returns, _ = evaluate_team(
            model,
            env,
            args.eval_episodes,
            deterministic=True,
            seed=args.seed + 1000,
            return_episode_rewards=True,
        )
        return list(returns)  # type: ignore[arg-type]

    return env, evaluate


# --------------------------------------------------------------------------- benchmark


def add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym benchmark NAME [options]``: run on purpose, never in CI."""
    bench = subparsers.add_parser(
        "benchmark",
        help="run a benchmark (writes zoo/results/NAME.json and .md)",
        description="Run a benchmark on real-size data; results go to zoo/results/.",
    )
    bench.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    bench.add_argument(
        "options", nargs=argparse.REMAINDER, help="options passed to the benchmark (see its --help)"
    )
    bench.set_defaults(func=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> int:
    return int(_resolve(BENCHMARKS[args.name])(args.options) or 0)
