"""``diffgym train ALGO --env ENV --dataset D``: train an agent offline with its hyperparameter file,
evaluate it and save it."""

from __future__ import annotations

import argparse
import json
import shlex
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from diffgym import registry
from diffgym.cli.envs import add_env_options, env_kwargs
from diffgym.cli.threads import add_threads_option, use_threads
from diffgym.tasks.extras import EXTRAS
from diffgym.zoo.hyperparameters import DEFAULT_KEY, HYPERPARAMS_DIR, resolve_hyperparams, split_config

__all__ = ["add_train_command", "train_agent"]


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym train ALGO --env ENV --dataset DATASET [--hyperparams KEY] [--set key=value ...]``.

    One sub-parser per agent, so that ``diffgym train ALGO --help`` shows that agent's hyperparameter
    file and its ``default`` entry, a comment on every field.
    """
    train = subparsers.add_parser(
        "train",
        help="train an agent offline on a dataset, evaluate it and save it",
        description="Train an agent offline (gradient steps on a dataset) with its hyperparameters from "
        "zoo/hyperparams/ALGO.yml, then evaluate and save it. `diffgym train ALGO --help` lists ALGO's "
        "hyperparameters and what each one means.",
    )
    agents = train.add_subparsers(dest="algo", metavar="ALGO", required=True)
    for name, spec in registry.registered().items():
        parser = agents.add_parser(
            name,
            help=spec.class_name,
            description=_agent_description(spec),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_train_options(parser)
        parser.set_defaults(func=train_agent)


def _agent_description(spec: registry.AgentSpec) -> str:
    """What ``diffgym train ALGO --help`` says about the agent: its class, its hyperparameter file
    (keys and the ``default`` entry as written, comments included) and how to override a field."""
    head = f"Train {spec.class_name} offline (gradient steps on a dataset), evaluate it and save it."
    if spec.team:
        head += (
            "\nA team agent: its env is a PettingZoo ParallelEnv (MPE's, e.g. mpe2.simple_spread_v3, "
            f"need {EXTRAS['mpe2'].command})."
        )
    path = HYPERPARAMS_DIR / f"{spec.hyperparams_name}.yml"
    if not path.exists():
        return (
            f"{head}\n\n{spec.class_name} has no hyperparameter file ({path.name}): it trains with its class "
            "defaults, and --set KEY=VALUE passes constructor arguments."
        )
    lines = path.read_text().splitlines()
    keys = [line.split(":", 1)[0] for line in lines if line[:1] not in ("", " ", "#") and ":" in line]
    usage = textwrap.fill(
        "--hyperparams KEY picks one (default: the key that fits the dataset's name, else the env id, else "
        "'default'); every key is merged over 'default', and --set KEY=VALUE overrides any field (nested "
        "keys joined by '.'). The 'default' entry:",
        width=100,
    )
    entry = "\n".join(_entry_lines(lines, DEFAULT_KEY))
    return f"{head}\n\nIts hyperparameters: {path}\n  keys: {', '.join(keys)}\n{usage}\n\n{entry}"


def _entry_lines(lines: list[str], key: str) -> list[str]:
    """The lines of a top-level entry of a YAML file as written: ``key:`` and its indented block (none
    when the file has no such line)."""
    start = next((index for index, line in enumerate(lines) if line.startswith(f"{key}:")), None)
    if start is None:
        return []
    after = (index for index in range(start + 1, len(lines)) if lines[index][:1] not in ("", " "))
    return [line for line in lines[start : next(after, len(lines))] if line.strip()]


def _add_train_options(train: argparse.ArgumentParser) -> None:
    """The options of ``diffgym train ALGO``."""
    add_env_options(
        train,
        "Gymnasium env id, e.g. Hopper-v5 or Meta-World/MT1 (with --env-kwargs '{env_name: reach-v3}'); "
        "for team agents (madiff) a PettingZoo parallel env such as mpe2.simple_spread_v3 (default: the "
        "one the dataset records)",
    )
    train.add_argument("--dataset", required=True, help="Minari id, Minari directory or D4RL-layout .hdf5")
    train.add_argument(
        "--hyperparams",
        metavar="KEY",
        help="key of its hyperparameter file (default: the key that fits the dataset's name, else the env "
        "id, else 'default')",
    )
    train.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter, values read as YAML; nested keys joined by '.', e.g. "
        "--set eta=0.5 policy_kwargs.n_plans=4",
    )
    train.add_argument("--steps", type=int, help="gradient steps (default: the hyperparameters' n_timesteps)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument(
        "--eval-episodes", type=int, default=10, help="evaluation episodes (default: %(default)s)"
    )
    train.add_argument("--save", help="where to save the model zip (default: ALGO_ENV.zip)")
    train.add_argument("--tensorboard", help="TensorBoard log directory")
    add_threads_option(train)
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def train_agent(args: argparse.Namespace) -> int:
    """``diffgym train``: read the hyperparameters, learn, evaluate (deterministic actions), report, save."""

    from diffgym.data import iterate_episodes, load_dataset
    from diffgym.data.d4rl import explain_cached_import
    from diffgym.progress import StepProgressBar
    from diffgym.serialization import model_path
    from diffgym.tasks.envs import make_env

    use_threads(args)
    spec = registry.get(args.algo)
    if spec.team:
        dataset = load_dataset(args.dataset, download=True)
        env, evaluate = _team_env(args, dataset)
    elif args.env is None:
        raise ValueError(f"diffgym train {args.algo}: --env is required")
    else:  # the env first: a D4RL-layout file is imported with its spaces
        env, evaluate = make_env(args.env, env_kwargs(args)), _single_agent_evaluation(args)
        reference = (env.observation_space, env.action_space)
        dataset = load_dataset(args.dataset, download=True, reference_spaces=reference)
    names = [_dataset_name(args.dataset), dataset.id, args.env or ""]
    key, config = resolve_hyperparams(spec.hyperparams_name, names, key=args.hyperparams, overrides=args.set)
    n_timesteps, policy, kwargs = split_config(config)
    steps = args.steps or n_timesteps
    if not steps:
        raise ValueError(f"diffgym train {args.algo}: give --steps (no n_timesteps in its hyperparameters)")
    source = "no file: the class defaults" if key is None else f"key {key!r}"
    print(f"hyperparameters: zoo/hyperparams/{spec.hyperparams_name}.yml, {source}: {json.dumps(config)}")
    behaviour = np.mean([episode.rewards.sum() for episode in iterate_episodes(dataset)])
    print(f"dataset {dataset.id}: {dataset.total_steps} transitions, mean episode return {behaviour:.1f}")
    try:
        with explain_cached_import(dataset):  # its spaces are checked against the env's
            model = spec.make(
                policy, env, dataset=dataset, seed=args.seed, tensorboard_log=args.tensorboard, **kwargs
            )
    except TypeError as error:  # a key of the file or of --set that the class does not take
        raise ValueError(f"{spec.class_name} does not take these hyperparameters: {error}") from error
    model.provenance = {
        "hyperparams": {"file": f"{spec.hyperparams_name}.yml", "key": key, "values": config},
        "command": shlex.join(["diffgym", *args.argv]),
        "gradient_steps": steps,
    }
    started = time.perf_counter()
    model.learn(steps, callback=None if args.no_progress else StepProgressBar())
    seconds = time.perf_counter() - started
    print(f"trained {spec.class_name}: {steps} gradient steps in {seconds:.0f} s ({steps / seconds:.1f}/s)")
    returns = evaluate(model)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print(
        f"evaluation over {args.eval_episodes} episodes: return {mean:.1f} ± {std:.1f} (dataset: {behaviour:.1f})"
    )
    _print_score(dataset, mean)
    path = model_path(args.save or f"{args.algo}_{(args.env or dataset.id).replace('/', '_')}")
    model.save(path)
    print(f"saved {path}")
    return 0


def _dataset_name(dataset: str) -> str:
    """A file's or folder's name without its suffix; a Minari id as it is."""
    path = Path(dataset)
    return path.stem if path.suffix == ".hdf5" or path.is_dir() else dataset


def _print_score(dataset: Any, mean_return: float) -> None:
    """The normalised score of ``mean_return``, if the dataset's task has reference returns."""
    from diffgym.scores import get_reference, normalized_score

    try:
        reference = get_reference(dataset)
    except KeyError:
        return
    score = normalized_score(dataset, mean_return, reference=reference)
    print(f"normalised score {score:.1f} (references: {reference.source})")


def _single_agent_evaluation(args: argparse.Namespace) -> Callable[[Any], list[float]]:
    """Episode returns of ``args.eval_episodes`` deterministic episodes in a fresh ``args.env`` (made
    with ``--env-kwargs``)."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    from diffgym.tasks.envs import make_env

    def evaluate(model: Any) -> list[float]:
        eval_env = Monitor(make_env(args.env, env_kwargs(args)))
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

    env = make_parallel_env(args.env, env_kwargs(args)) if args.env else recover_parallel_env(dataset)

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
