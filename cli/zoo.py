"""``diffgym zoo list|info|download|export|add|reevaluate|redescribe|check`` and ``diffgym enjoy NAME``: the pretrained models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffgym.cli.envs import ENV_KWARGS_HELP, env_kwargs

__all__ = ["add_enjoy_command", "add_zoo_commands"]

REGISTRY_HELP = "the registry file (default: $DIFFGYM_ZOO_REGISTRY, else the one shipped with diffgym)"


def add_zoo_commands(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym zoo ...``: list, describe, fetch and export pretrained models; add and check them (maintainers)."""
    zoo = subparsers.add_parser(
        "zoo",
        help="pretrained models: list, info, download, export (and add, check for maintainers)",
        description="Pretrained diffgym models by name (algo/env-dataset). Loading one in Python: "
        "from diffgym import zoo; model = zoo.load(NAME).",
    )
    commands = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    listing = commands.add_parser("list", help="every model with its score and where its files are")
    listing.add_argument(
        "--markdown",
        action="store_true",
        help="the results README's table instead: each diffusion model against the best baseline model",
    )
    info = commands.add_parser("info", help="a model's registry entry, and its card when its files are local")
    info.add_argument("name")
    download = commands.add_parser(
        "download",
        help="make a model's verified files local (shipped files stay where they are; remote ones go to the cache)",
    )
    download.add_argument("names", nargs="+", metavar="NAME")
    export = commands.add_parser(
        "export", help="copy a model's verified files into DIR (to upload to a Hub repo)"
    )
    export.add_argument("name")
    export.add_argument("dir", type=Path)
    add = commands.add_parser(
        "add",
        help="make a zoo model of a benchmark run (record + saved model), or of the best of its seeds, and add it "
        "to the registry",
        description="Maintainers: turn a run of `diffgym benchmark SUITE ... --save-models` into a zoo model "
        "(safetensors weights, config.json, results.json, model card) in <registry folder>/models/NAME/ and "
        "write its registry entry. Given the records of several seeds of one run, the best seed's model is "
        "published, with every seed's final score and their mean ± std on its card.",
    )
    add.add_argument(
        "records",
        type=Path,
        nargs="+",
        metavar="RECORD",
        help="the run's JSON record (OUT/SUITE/RUN.json), or those of its seeds (OUT/SUITE/AGENT_DATASET_s*.json)",
    )
    add.add_argument(
        "--model",
        type=Path,
        help="the (best) run's model file (default: OUT/SUITE/models/RUN.zip beside its record; a .zip given "
        "among the records is taken as this)",
    )
    add.add_argument(
        "--generator",
        action="store_true",
        help="publish the SynthER transition model of a synther run instead: RECORDs are its agent's seeds on "
        "the synthetic data (OUT/synther/AGENT_DATASET-synther_s*.json); the name defaults to synther/DATASET",
    )
    add.add_argument("--name", help="the zoo name (default: AGENT/DATASET of the record)")
    add.add_argument("--env", help="the env id users make for it (default: the one the run's suite names)")
    add.add_argument("--env-kwargs", metavar="YAML", help=ENV_KWARGS_HELP)
    again = commands.add_parser(
        "reevaluate",
        help="maintainers: evaluate a model again and make that its card's final evaluation (weights unchanged)",
        description="For a card that no longer replays because diffgym computes the same networks with other "
        "rounding: evaluate the model over all its card's episodes with its suite's protocol and make that the "
        "card's final evaluation. The previous one stays in results.json and on the card, with --why.",
    )
    again.add_argument("name")
    again.add_argument("--why", required=True, help="why the card is re-evaluated (kept on the card)")
    again.set_defaults(func=zoo_reevaluate)
    describe = commands.add_parser(
        "redescribe",
        help="maintainers: describe a model's data again from the very file it was trained on (weights unchanged)",
        description="For cards written before the recipe was read from the data file: each card's dataset "
        "description becomes what its file's metadata says made it, and whether zoo/datasets.json lists that "
        "file. The file is looked up by name in the --data-dir folders and must have the card's SHA-256.",
    )
    describe.add_argument("names", nargs="*", metavar="NAME", help="default: every model")
    describe.add_argument(
        "--data-dir", type=Path, action="append", required=True, help="a folder of data files (repeatable)"
    )
    describe.set_defaults(func=zoo_redescribe)
    check = commands.add_parser(
        "check",
        help="evaluate models again with their suite's protocol and compare with their cards",
        description="Replay each model's card evaluation (same env seeds, deterministic as the card) on the CPU: "
        "'identical' on the hardware that made it, 'within spread' when every return is within the card's standard "
        "deviation (another CPU may round differently); exits 1 if any model differs more.",
    )
    check.add_argument("names", nargs="*", metavar="NAME", help="default: every model")
    check.add_argument("--episodes", type=int, help="replay only the card's first N episodes")
    for parser in (listing, info, download, export, add, again, describe, check):
        parser.add_argument("--registry", type=Path, help=REGISTRY_HELP)
    listing.set_defaults(func=zoo_list)
    info.set_defaults(func=zoo_info)
    download.set_defaults(func=zoo_download)
    export.set_defaults(func=zoo_export)
    add.set_defaults(func=zoo_add)
    check.set_defaults(func=zoo_check)


def add_enjoy_command(subparsers: argparse._SubParsersAction) -> None:
    """``diffgym enjoy NAME [--episodes N] [--video out.mp4]``."""
    enjoy = subparsers.add_parser(
        "enjoy",
        help="watch a zoo model act: episodes, returns, score, and a video",
        description="Load a zoo model, play episodes in its env (the first ones replay its card's evaluation), "
        "print their returns and score, and with --video write them as an MP4. MuJoCo envs "
        "render without a display through OSMesa (apt install libosmesa6) or EGL.",
    )
    enjoy.add_argument("name", help="the zoo name (see diffgym zoo list)")
    enjoy.add_argument("--episodes", type=int, default=5, help="episodes to play (default: %(default)s)")
    enjoy.add_argument("--video", type=Path, help="write the episodes to this .mp4 (team agents: also .gif)")
    enjoy.add_argument(
        "--plans", type=Path, help="Diffuser on a maze: draw 8 of its plans from a start (PNG)"
    )
    enjoy.add_argument("--seed", type=int, help="the first reset's seed (default: the card's)")
    enjoy.add_argument("--stochastic", action="store_true", help="sample actions (default: deterministic)")
    enjoy.add_argument("--registry", type=Path, help=REGISTRY_HELP)
    enjoy.set_defaults(func=enjoy_model)


def zoo_list(args: argparse.Namespace) -> int:
    from diffgym import zoo
    from diffgym.zoo.store import where

    entries = zoo.list(args.registry)
    if not entries:
        print("the zoo has no models yet")
        return 0
    if args.markdown:
        from diffgym.zoo.publish import markdown_table

        print(markdown_table(entries), end="")
        return 0
    rows = [("name", "env", "score", "metric", "return", "steps", "files")]
    for name, entry in entries.items():
        summary = entry.summary
        score = summary.get("score")
        rows.append(
            (
                name,
                entry.env_id,
                "-" if score is None else f"{score:.1f}",
                summary.get("metric", "normalised score").replace(" ", "_"),
                f"{summary.get('mean_return', float('nan')):.1f} ± {summary.get('std_return', float('nan')):.1f}",
                str(summary.get("gradient_steps", "?")),
                where(entry)
                or ("remote" if any(s.kind != "package" for s in entry.sources) else "unavailable"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def zoo_info(args: argparse.Namespace) -> int:
    from diffgym import zoo

    details = zoo.info(args.name, args.registry)
    card = Path(details["folder"], "README.md").read_text() if "folder" in details else None
    summary = {
        key: details[key] for key in ("name", "agent", "env", "dataset", "summary", "sources", "available")
    }
    print(json.dumps(summary, indent=2))
    if card is not None:
        print(card)
    return 0


def zoo_download(args: argparse.Namespace) -> int:
    from diffgym import zoo

    for name in args.names:
        print(f"{name}: {zoo.download(name, args.registry)}")
    return 0


def zoo_export(args: argparse.Namespace) -> int:
    from diffgym import zoo

    print(f"exported {args.name} to {zoo.export(args.name, args.dir, args.registry)}")
    return 0


def zoo_add(args: argparse.Namespace) -> int:
    from diffgym.zoo.format import seeds_text
    from diffgym.zoo.publish import publish_best_seed, publish_generator

    if args.generator:
        if args.model or args.env or args.env_kwargs:
            raise ValueError("--generator takes the records alone (no --model, --env or --env-kwargs)")
        entry = publish_generator(args.records, args.registry, args.name)
        baseline = entry.summary["baseline"]
        print(
            f"added {entry.name}: {baseline['name'].split()[0]} on its data scores {_score(entry.summary.get('score'))} "
            f"({baseline['name']}: {_score(baseline['score'])}), files in {entry.package_folder(entry.sources[0])}"
        )
        return 0
    models = [path for path in args.records if path.suffix == ".zip"]  # `zoo add RECORD MODEL`, as before
    given = [*models, *([args.model] if args.model else [])]
    if len(given) > 1:
        raise ValueError(f"give at most one model file; got {', '.join(map(str, given))}")
    records = [path for path in args.records if path.suffix != ".zip"]
    model = given[0] if given else None
    entry = publish_best_seed(records, model, args.registry, args.name, args.env, env_kwargs(args))
    seeds = entry.summary.get("seeds_score")
    over_seeds = "" if seeds is None else f" ({seeds_text(seeds)})"
    print(
        f"added {entry.name}: score {_score(entry.summary.get('score'))}{over_seeds}, files in "
        f"{entry.package_folder(entry.sources[0])}"
    )
    return 0


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def zoo_reevaluate(args: argparse.Namespace) -> int:
    from diffgym.zoo.publish import reevaluate

    entry = reevaluate(args.name, args.why, args.registry)
    print(
        f"{entry.name}: final mean return {entry.summary['mean_return']:.1f}, score {_score(entry.summary.get('score'))}"
    )
    return 0


def zoo_redescribe(args: argparse.Namespace) -> int:
    from diffgym import zoo
    from diffgym.zoo.publish import redescribe_data

    failed = 0
    for name in args.names or list(zoo.list(args.registry)):
        try:
            described = redescribe_data(name, args.data_dir, args.registry)
        except (KeyError, FileNotFoundError, ValueError) as error:
            failed += 1
            print(f"{name}: not redescribed: {error}")
            continue
        print(f"{name}: {described['recipe']}")
    return 1 if failed else 0


def zoo_check(args: argparse.Namespace) -> int:
    from diffgym import zoo
    from diffgym.zoo.publish import check

    failed = 0
    for name in args.names or list(zoo.list(args.registry)):
        result = check(name, args.registry, args.episodes)
        failed += result["verdict"] == "differs"
        if result.get("kind") == "generator":
            print(f"{name}: {generator_check_text(result)}")
            continue
        print(
            f"{name}: card mean return {sum(result['expected_returns']) / len(result['expected_returns']):.1f}, measured "
            f"{result['measured_mean_return']:.1f} over {len(result['measured_returns'])} episodes: "
            f"{result['verdict']} (largest difference {result['max_abs_difference']:.3g}, card's spread "
            f"{result['expected']['std_return']:.3g})"
        )
    if failed:
        print(
            "a card that differs: the files are verified, so the model acts differently here (another diffgym or "
            "torch rounds differently, or a bug); maintainers who have checked the weights: "
            "`diffgym zoo reevaluate NAME --why ...`"
        )
    return 1 if failed else 0


def generator_check_text(result: dict[str, Any]) -> str:
    """A transition generator's ``check`` in words."""
    return (
        f"the columns' means and stds of {result['rows']} rows regenerated with the card's seed: {result['verdict']} "
        f"(largest difference {result['max_difference_in_std']:.3g} column stds)"
    )


def enjoy_model(args: argparse.Namespace) -> int:
    from diffgym.zoo.play import enjoy

    played = enjoy(
        args.name, args.episodes, args.video, args.seed, not args.stochastic, args.registry, args.plans
    )
    for episode, (value, length) in enumerate(zip(played.returns, played.lengths, strict=True)):
        print(f"episode {episode}: return {value:.1f} in {length} steps")
    mean = sum(played.returns) / len(played.returns)
    score = "" if played.score is None else f", normalised score {played.score:.1f}"
    card, metric = played.card.get("score"), played.card.get("metric", "normalised score")
    print(
        f"{args.name}: mean return {mean:.1f}{score}"
        + ("" if card is None else f" (card's {metric}: {card:.1f})")
    )
    for written in (played.video, played.plans):
        if written is not None:
            print(f"wrote {written}")
    return 0
