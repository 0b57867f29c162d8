"""``diffgym data make | import | info``: make, import and inspect Minari datasets."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from diffgym.cli.envs import add_env_options, env_kwargs
from diffgym.cli.threads import add_threads_option, use_threads
from diffgym.data.recipe import KINDS as _RECIPE_KINDS

__all__ = ["add_data_commands", "data_import", "data_info", "data_make"]

_SB3_ALGOS = ("a2c", "ddpg", "dqn", "ppo", "sac", "td3")


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym data make | import | info | make-d4rl | make-metaworld | fetch``."""
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
    add_env_options(make, "Gymnasium env id, e.g. Pendulum-v1 or Meta-World/MT1", required=True)
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
    add_env_options(
        imp,
        "env id for the spaces, e.g. Meta-World/MT1 with --env-kwargs '{env_name: reach-v3}' (default: the "
        "file's metadata)",
        dest="env_id",
    )
    imp.add_argument(
        "--overwrite", action="store_true", help="replace a local dataset with the same id (import afresh)"
    )
    imp.set_defaults(func=data_import)

    info = commands.add_parser(
        "info",
        help="describe a dataset",
        description="Spaces, episodes, transitions, returns and reference returns of a dataset.",
    )
    info.add_argument("dataset", help="Minari id, Minari dataset directory or D4RL-layout .hdf5 file")
    info.set_defaults(func=data_info)

    recipe = commands.add_parser(
        "make-d4rl",
        help="D4RL's recipe: train SAC, then write random / medium / medium-replay / expert sets",
        description="Make D4RL-style datasets the way D4RL (and our shared datasets) did: train Stable-Baselines3's "
        "SAC with checkpoints, take the checkpoint nearest a third of the expert reference return as 'medium' and "
        "the last as 'expert', roll each out with stochastic actions, keep SAC's replay buffer up to 'medium' as "
        "'medium-replay', and uniform actions as 'random'. Writes OUT/<env>-<kind>.hdf5 in D4RL's flat layout "
        "(what `diffgym data import` and `diffgym benchmark --data-dir` read). With the defaults, Hopper-v5 took "
        "30 minutes on one CPU core, rollouts included (zoo/results/make_d4rl/).",
    )
    add_env_options(recipe, "Gymnasium env id, e.g. Hopper-v5", required=True)
    recipe.add_argument("--out", required=True, type=Path, help="folder of the .hdf5 files")
    recipe.add_argument(
        "--train-steps", type=int, default=150_000, help="SAC env steps (default: %(default)s)"
    )
    recipe.add_argument(
        "--checkpoint-every",
        type=int,
        default=10_000,
        help="env steps between checkpoints (default: %(default)s)",
    )
    recipe.add_argument(
        "--transitions", type=int, default=100_000, help="rows of each rolled-out set (default: %(default)s)"
    )
    recipe.add_argument(
        "--medium-return",
        type=float,
        help="the return 'medium' aims at (default: a third of the expert reference)",
    )
    recipe.add_argument(
        "--kinds", nargs="+", default=list(_RECIPE_KINDS), choices=_RECIPE_KINDS, help="which sets"
    )
    recipe.add_argument(
        "--seed", type=int, default=0, help="SAC's and the rollouts' seed (default: %(default)s)"
    )
    add_threads_option(recipe)
    recipe.set_defaults(func=data_make_d4rl)

    demos = commands.add_parser(
        "make-metaworld",
        help="Meta-World demonstrations: each task's scripted expert, written as OUT/metaworld-<task>.hdf5",
        description="Make the Meta-World benchmark's data: each task's scripted policy (metaworld.policies, actions "
        "clipped to [-1, 1], no noise) for --episodes episodes of --horizon steps, fresh object and goal "
        "positions each episode (episode i seeded SEED + i), in D4RL's flat layout with the per-step success "
        "flag under infos/success (what `diffgym benchmark metaworld --data-dir OUT` reads); the same command on "
        "the same build makes the same bytes. Needs 'diffgym[metaworld]'.",
    )
    demos.add_argument(
        "tasks", nargs="+", metavar="TASK", help="Meta-World tasks, e.g. reach-v3 pick-place-v3"
    )
    demos.add_argument("--out", required=True, type=Path, help="folder of the .hdf5 files")
    demos.add_argument("--episodes", type=int, default=50, help="episodes per task (default: %(default)s)")
    demos.add_argument(
        "--horizon",
        type=int,
        default=500,
        help="steps per episode, at most Meta-World's 500 (default: %(default)s)",
    )
    demos.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: %(default)s)")
    demos.add_argument("--overwrite", action="store_true", help="replace files that exist")
    demos.set_defaults(func=data_make_metaworld)

    fetch = commands.add_parser(
        "fetch",
        help="get a dataset of diffgym's registry (verified) into the Minari store",
        description="Get the D4RL-layout files our benchmarks and zoo models were trained on, by name "
        "(zoo/datasets.json: sha256, size, env, sources): verified into the cache, then imported into the "
        "local Minari store. Prints the Minari id to pass as dataset=.",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="dataset names, e.g. hopper-medium")
    fetch.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="DIR_OR_URL",
        help="also look in this folder or HTTP(S) folder first, e.g. a mirror or a folder of the files (repeatable)",
    )
    fetch.add_argument("--list", action="store_true", help="list the registry's datasets")
    fetch.add_argument(
        "--registry", help="the dataset registry (default: $DIFFGYM_DATASET_REGISTRY, else the shipped one)"
    )
    fetch.set_defaults(func=data_fetch)


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
    from diffgym.data import collect_dataset
    from diffgym.tasks.envs import make_env

    if args.steps is None and args.episodes is None:
        raise ValueError("give --steps, --episodes or both")
    _make_room(args.dataset_id, args.overwrite)
    env = make_env(args.env, env_kwargs(args))
    try:
        dataset = collect_dataset(
            env,
            _load_policy(args.policy),
            args.dataset_id,
            n_steps=args.steps,
            n_episodes=args.episodes,
            seed=args.seed,
            deterministic=args.deterministic,
        )
    finally:
        env.close()
    print(f"created {dataset.id}: {dataset.total_episodes} episodes, {dataset.total_steps} transitions")
    print(f"stored in {dataset.storage.data_path}")
    return 0


def _make_room(dataset_id: str, overwrite: bool) -> None:
    """Remove the local dataset ``dataset_id`` if ``overwrite``, else refuse (naming ``--overwrite``)."""
    from minari.storage import get_dataset_path

    directory = get_dataset_path(dataset_id)
    if not directory.exists():
        return
    if not overwrite:
        raise ValueError(
            f"a local dataset {dataset_id} already exists ({directory}): pass --overwrite to replace it, "
            "or choose another --id"
        )
    shutil.rmtree(directory)


def data_import(args: argparse.Namespace) -> int:
    """``diffgym data import``."""
    from diffgym.data import import_d4rl, imported_dataset_id
    from diffgym.data.d4rl import check_hdf5_file

    dataset_id = args.dataset_id or imported_dataset_id(check_hdf5_file(args.file))
    _make_room(dataset_id, args.overwrite)
    dataset = import_d4rl(args.file, dataset_id=dataset_id, env_id=args.env_id, env_kwargs=env_kwargs(args))
    print(
        f"imported {args.file} as {dataset.id}: {dataset.total_episodes} episodes, {dataset.total_steps} transitions"
    )
    print(f"stored in {dataset.storage.data_path}")
    return 0


def data_info(args: argparse.Namespace) -> int:
    """``diffgym data info``."""
    from diffgym.data import iterate_episodes, load_dataset
    from diffgym.scores import get_reference

    dataset = load_dataset(args.dataset)
    returns = np.array([episode.rewards.sum() for episode in iterate_episodes(dataset)])
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


def data_fetch(args: argparse.Namespace) -> int:
    """``diffgym data fetch``."""
    from diffgym.zoo import datasets

    if args.list or not args.names:
        for name, entry in datasets.read_datasets(args.registry).items():
            where = ", ".join(source.describe() for source in entry.sources) or "no public source yet"
            print(f"{name:36} {entry.checksum.size / 2**20:6.1f} MiB  {entry.env_id:38} {where}")
        return 0
    extra = datasets.parse_sources(args.sources)
    for name in args.names:
        dataset = datasets.load(name, args.registry, extra)
        print(
            f"{name}: Minari id {dataset.id} ({dataset.total_episodes} episodes, {dataset.total_steps} transitions)"
        )
    return 0


def data_make_metaworld(args: argparse.Namespace) -> int:
    """``diffgym data make-metaworld``: every task checked and no file overwritten unasked, before any rollout."""
    from diffgym.tasks.metaworld import check_task, make_demonstrations

    paths = {task: args.out / f"metaworld-{task}.hdf5" for task in args.tasks}
    for task in paths:
        check_task(task)
    for path in paths.values():
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    for task, path in paths.items():
        made = make_demonstrations(task, path, args.episodes, args.seed, args.horizon)
        first = made["first_success_step"]
        print(
            f"{path}: {made['episodes']} episodes, {made['steps']} steps, success rate {made['success_rate']:.2f}, "
            f"first success at step {'-' if first is None else round(first['mean'], 1)} on average, {made['seconds']} s"
        )
    return 0


def data_make_d4rl(args: argparse.Namespace) -> int:
    """``diffgym data make-d4rl``."""
    from diffgym.data.recipe import D4RLRecipe, make_d4rl_datasets

    use_threads(args)
    recipe = D4RLRecipe(
        args.env,
        env_kwargs=env_kwargs(args) or {},
        train_steps=args.train_steps,
        checkpoint_every=args.checkpoint_every,
        transitions=args.transitions,
        medium_return=args.medium_return,
        seed=args.seed,
    )
    make_d4rl_datasets(recipe, args.out, args.kinds)
    return 0
