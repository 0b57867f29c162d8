"""Maintainers' side of the zoo: a benchmark run becomes a zoo model, and a zoo model is checked.

A zoo model is made by the benchmark harness (``diffgym benchmark SUITE --agents A --datasets D
--save-models``), which trains with ``zoo/hyperparams/``, evaluates, and writes the run's record
and model file. :func:`publish` turns that pair into a zoo folder under ``zoo/models/`` and its
registry entry; :func:`check` evaluates a zoo model again with the suite's own protocol (same env,
seeds and episode count as its card), which reproduces the card's returns exactly on the same
hardware and build, because the model acts deterministically from the same env seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

import diffgym
from diffgym import registry as agents
from diffgym.data.d4rl import file_metadata
from diffgym.serialization import ModelFileError
from diffgym.zoo.benchmarks.checkpoints import record_identity
from diffgym.zoo.benchmarks.report import now, ranking_value, read_json
from diffgym.zoo.catalog import (
    Source,
    ZooEntry,
    check_name,
    find,
    read_registry,
    registry_path,
    write_registry,
)
from diffgym.zoo.datasets import SHIPPED_DATASETS, read_datasets
from diffgym.zoo.download import verify_file
from diffgym.zoo.format import (
    CONFIG,
    GENERATOR_AGENT,
    GENERATOR_KIND,
    RESULTS,
    WEIGHTS,
    FileEntry,
    read_config,
    read_model_folder,
    read_results,
    results_summary,
    rewrite_config,
    rewritten_entries,
    seeds_text,
    verify_entry,
    write_model_folder,
)
from diffgym.zoo.hyperparameters import HYPERPARAMS_DIR, resolve_hyperparams
from diffgym.zoo.store import locate

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.harness import Suite

#: where the shared datasets are published, for the cards of models trained on them
SHARED_DATA_SOURCE = (
    "zoo/datasets.json lists the file with its sha256 (diffgym data fetch NAME), and the README of the "
    "shared datasets folder gives the recipe"
)


#: a zoo model loads on any machine and acts without a compiler: whatever the run trained with (its
#: card's command and hyperparameters say), the model is published in float32 and uncompiled
PORTABLE_SETTINGS: dict[str, Any] = {"precision": "fp32", "compile_networks": False, "linear_backend": "aten"}


def publish_best_seed(
    record_paths: Sequence[str | os.PathLike],
    model_path: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    name: str | None = None,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> ZooEntry:
    """Publish the best of runs that differ only in their seed: its model, with every seed's final
    score (and their mean ± std) on its card and registry entry. "Best" is the highest final score
    under the suite's metric (the mean return where there is none), the lowest seed on a tie.

    Args:
        record_paths: the runs' records; one record publishes that run.
        model_path: the best run's model file (default: ``models/<run>.zip`` beside its record, where
            ``diffgym benchmark --save-models`` writes it).
        registry, name, env_id, env_kwargs: as :func:`publish`.

    Raises:
        ValueError: no record, two records of one seed, or records of different runs (the message
            names what differs).
        FileNotFoundError: the best run's model file is missing.
    """
    if not record_paths:
        raise ValueError("give at least one run's record")
    records = {Path(path): json.loads(Path(path).read_text()) for path in record_paths}
    _check_seeds_of_one_run(records)
    best_path = max(
        records,
        key=lambda path: (ranking_value(_final_value(records[path])), -records[path]["config"]["seed"]),
    )
    best = records[best_path]
    if model_path is not None and len(records) > 1 and Path(model_path).stem != best["run"]:
        raise ValueError(
            f"the best seed is {best['run']} (final {_final_value(best)}), but the model given is {model_path}: "
            "give its model, or leave the model out to use the one saved beside its record"
        )
    model = Path(model_path) if model_path is not None else best_path.parent / "models" / f"{best['run']}.zip"
    if not model.is_file():
        raise FileNotFoundError(
            f"{model}: the model of the best seed ({best['run']}) is not there; run the benchmark with "
            "--save-models, or give its file"
        )
    others = [record for path, record in records.items() if path != best_path]
    return publish(best_path, model, registry, name, env_id, env_kwargs, seed_records=others)


def publish_generator(
    record_paths: Sequence[str | os.PathLike],
    registry: str | os.PathLike | None = None,
    name: str | None = None,
) -> ZooEntry:
    """Publish the transition model of a ``synther`` suite run (SynthER's offline recipe) as zoo model
    ``synther/<dataset>``.

    The records are one agent's runs (its seeds) on the synthetic dataset; they name the generator
    file the suite saved beside them (``--save-models``). The card's returns and score are theirs
    (every seed's final episodes), next to the same agent's runs on the real data with the same
    budget and seeds (records in the same folder), the data's own score, how close the transitions
    are to the simulator's (the suite's quality study), and a fingerprint of its samples that
    ``zoo check`` regenerates.

    Raises:
        ValueError: no record, records of different runs, records that name no generator file, or no
            record on the real data for one of their seeds.
        FileNotFoundError: the generator file is missing.
        ModelFileError: the generator file is not the one the records name (size, SHA-256).
    """
    from diffgym.wrappers.synther import TransitionDiffusion

    if not record_paths:
        raise ValueError("give at least one run's record")
    records = {Path(path): json.loads(Path(path).read_text()) for path in record_paths}
    _check_seeds_of_one_run(records)
    runs = sorted(records.values(), key=lambda record: record["config"]["seed"])
    generators = {json.dumps(run["data"].get("generator"), sort_keys=True) for run in runs}
    if len(generators) != 1 or runs[0]["data"].get("generator") is None:
        raise ValueError(
            f"{', '.join(map(str, records))}: not runs on one saved generator's data (a synther run with "
            "--save-models names its generator file)"
        )
    folder = next(iter(records)).parent
    generator_file = folder / "models" / runs[0]["data"]["generator"]["file"]
    if not generator_file.is_file():
        raise FileNotFoundError(f"{generator_file}: the generator the records name is not there")
    verify_file(generator_file, runs[0]["data"]["generator"]["sha256"], generator_file.stat().st_size)
    generator = TransitionDiffusion.load(generator_file)
    real = _real_data_runs(folder, runs)
    source = real[0]["config"]["dataset"]
    name = name or f"{GENERATOR_AGENT}/{source}"
    check_name(name)
    results = _generator_results(runs, real, generator, folder)
    summary = {
        **results_summary(results),
        "gradient_steps": generator.config.train_steps,
        "seeds": results["seeds"],
        "data_score": results["data_score"],
        "baseline": results["baseline"],
        "agent_steps": runs[0]["budget"]["gradient_steps"],
    }
    written = ZooEntry(name, GENERATOR_AGENT, "", source, {}, (), summary=summary, kind=GENERATOR_KIND)
    return _add_to_registry(
        generator,
        written,
        _zoo_env(real[0]),
        _dataset_description(source, real[0]["data"]),
        _generator_training(runs, generator),
        results,
        registry,
    )


def _add_to_registry(
    model: Any,
    entry: ZooEntry,
    env: dict[str, Any],
    dataset: dict[str, Any],
    training: dict[str, Any],
    results: dict[str, Any],
    registry: str | os.PathLike | None,
) -> ZooEntry:
    """Write ``model``'s zoo folder under ``<registry folder>/models/<name>/`` and its registry entry
    (``entry``'s name, agent, dataset, summary and kind, with the env, files and source filled in)."""
    relative = Path("models", *entry.name.split("/"))
    path = registry_path(registry)
    files = write_model_folder(
        model,
        path.parent / relative,
        name=entry.name,
        env=env,
        dataset=dataset,
        training=training,
        results=results,
    )
    added = dataclasses.replace(
        entry,
        env_id=env["id"],
        env_kwargs=env["kwargs"],
        files=files,
        sources=(Source("package", relative.as_posix()),),
        base=path.parent,
    )
    entries = read_registry(path) if path.exists() else {}
    write_registry({**entries, entry.name: added}, path)
    return added


def _real_data_runs(folder: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records in ``folder`` of each run's twin on the real data (same agent, budget, seed)."""
    records = [record for record in map(read_json, sorted(folder.glob("*.json"))) if isinstance(record, dict)]
    twins = []
    for run in runs:
        wanted = {**record_identity(run), "dataset": None}
        found = [
            other
            for other in records
            if other.get("config", {}).get("dataset") == _source_name(run)
            and {**record_identity(other), "dataset": None} == wanted
        ]
        if not found:
            raise ValueError(
                f"{folder}: no record of {run['config']['agent']} on the real {_source_name(run)} with "
                f"seed {run['config']['seed']} and the same budget, which the card compares with"
            )
        twins.append(found[0])
    return twins


def _source_name(run: dict[str, Any]) -> str:
    """The real dataset a synthetic dataset of the synther suite was made from."""
    from diffgym.zoo.benchmarks.synther import SUFFIX

    return str(run["config"]["dataset"]).removesuffix(SUFFIX)


def _generator_results(
    runs: list[dict[str, Any]], real: list[dict[str, Any]], generator: Any, folder: Path
) -> dict[str, Any]:
    """``results.json`` of a generator: its agents' final episodes, the real-data twins, quality."""
    returns = [float(value) for run in runs for value in run["final"]["returns"]]
    key = _metric(runs[0]["suite"])["key"]
    agent_finals, real_finals = ({str(run["config"]["seed"]): _finite(run["final"].get(key)) for run in group}
                                 for group in (runs, real))  # fmt: skip
    quality = (
        read_json(folder / "studies" / "quality.json")
        if (folder / "studies" / "quality.json").is_file()
        else {}
    )
    return {
        "final": {
            "step": runs[0]["final"]["step"],
            "returns": returns,
            "mean_return": float(np.mean(returns)),
            key: _mean_of(list(agent_finals.values())),
        },
        "seeds": [run["config"]["seed"] for run in runs],
        "evaluation": {
            "suite": runs[0]["suite"],
            "agent": runs[0]["config"]["agent"],
            "dataset": runs[0]["config"]["dataset"],
            "seeds": [run["config"]["seed"] for run in runs],
            "episodes": len(returns),
            "deterministic": runs[0]["config"]["deterministic"],
        },
        "metric": _metric(runs[0]["suite"]),
        "agent_finals": agent_finals,
        "baseline": {
            "name": f"{real[0]['config']['agent']} on the real data",
            "dataset": real[0]["config"]["dataset"],
            "gradient_steps": real[0]["budget"]["gradient_steps"],
            "finals": real_finals,
            "score": _mean_of(list(real_finals.values())),
        },
        "data_score": real[0]["data"].get("score"),
        "quality": (quality.get("result") or {}).get(runs[0]["config"]["dataset"]),
        "fingerprint": generator_fingerprint(generator),
        "hardware": runs[0]["hardware"],
    }


def _mean_of(values: list[float | None]) -> float | None:
    finite = [value for value in values if value is not None]
    return float(np.mean(finite)) if finite else None


def _generator_training(runs: list[dict[str, Any]], generator: Any) -> dict[str, Any]:
    run = runs[0]
    budget, data = run["budget"], run["data"]
    return {
        "gradient_steps": generator.config.train_steps,
        "seed": data["synthesis"]["seed"],
        "hyperparams": {"file": None, "key": None},
        "command": (
            f"diffgym benchmark synther --agents {run['config']['agent']} --datasets {_source_name(run)} "
            f"{run['config']['dataset']} --seeds {max(other['config']['seed'] for other in runs) + 1} "
            f"--steps {budget['gradient_steps']} --eval-every {budget['eval_every']} --final-episodes "
            f"{budget['final_episodes']} --set suite:synthetic={data['transitions']} "
            f"suite:diffusion_steps={generator.config.train_steps} --data-dir DATA_DIR --save-models"
        ),
        "suite": run["suite"],
        "date": run["date"],
        "hardware": run["hardware"],
        "seconds": data["synthesis"]["fit_seconds"],
    }


#: rows and seed of a generator's fingerprint: the mean and std of every column of its samples
FINGERPRINT_ROWS, FINGERPRINT_SEED = 1000, 0


def generator_fingerprint(
    generator: Any, rows: int = FINGERPRINT_ROWS, seed: int = FINGERPRINT_SEED
) -> dict[str, Any]:
    """Mean and std of each column ``[s, a, r, s', done]`` of ``rows`` samples drawn with ``seed``."""
    import torch

    from diffgym.wrappers.synther import join_transitions

    sample = join_transitions(*generator.generate(rows, torch.Generator().manual_seed(seed))).double()
    return {"rows": rows, "seed": seed, "mean": sample.mean(0).tolist(), "std": sample.std(0).tolist()}


def _check_generator(name: str, folder: Path) -> dict[str, Any]:
    """Regenerate a generator's fingerprint and compare it with its card's, in units of each column's std."""
    expected = read_results(folder)["fingerprint"]
    measured = generator_fingerprint(
        read_model_folder(folder, device="cpu"), expected["rows"], expected["seed"]
    )
    scale = np.maximum(np.asarray(expected["std"]), 1e-6)
    gaps = [np.abs(np.subtract(expected[key], measured[key])) / scale for key in ("mean", "std")]
    difference = float(max(gap.max() for gap in gaps))
    verdict = "identical" if difference == 0.0 else "within spread" if difference <= 1e-3 else "differs"
    return {"name": name, "kind": GENERATOR_KIND, "rows": expected["rows"], "max_difference_in_std": difference,
            "verdict": verdict}  # fmt: skip


def _check_seeds_of_one_run(records: dict[Path, dict[str, Any]]) -> None:
    """Raise unless the records are of one configuration, each of its own seed."""
    seeds = [record["config"]["seed"] for record in records.values()]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"two records of the same seed among {[str(path) for path in records]}")
    (first_path, first), *rest = records.items()
    expected = {**record_identity(first), "seed": None}
    for path, record in rest:
        identity = {**record_identity(record), "seed": None}
        if identity != expected:
            differing = sorted(key for key in expected if identity.get(key) != expected[key])
            raise ValueError(
                f"{path} is not a seed of the run of {first_path}: its {', '.join(differing)} differ"
            )


def _final_value(record: dict[str, Any]) -> float | None:
    """The record's final score under its suite's metric (the mean return where it has none)."""
    value = record["final"].get(_metric(record["suite"])["key"])
    return record["final"].get("mean_return") if value is None else value


def publish(
    record_path: str | os.PathLike,
    model_path: str | os.PathLike,
    registry: str | os.PathLike | None = None,
    name: str | None = None,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    seed_records: Sequence[dict[str, Any]] = (),
) -> ZooEntry:
    """Make the zoo model of one benchmark run and add it to ``registry`` (replacing one of that name).

    Args:
        record_path: the run's JSON record (``OUT/SUITE/<run>.json``).
        model_path: its model file (``OUT/SUITE/models/<run>.zip``), read without executing anything.
        registry: the registry file to update (default: the one in use, see :mod:`diffgym.zoo.catalog`).
        name: the zoo name (default ``<agent>/<dataset>`` of the record).
        env_id: the env id users make for it (default: the one its suite names, see
            :attr:`Suite.zoo_env <diffgym.zoo.benchmarks.harness.Suite.zoo_env>`).
        env_kwargs: arguments added to (or replacing) that env's kwargs.
        seed_records: the records of the same run with other seeds (see :func:`publish_best_seed`):
            their final scores go on the card beside this one's.

    Returns:
        the new registry entry; its files are in ``<registry folder>/models/<name>/``.
    """
    record = json.loads(Path(record_path).read_text())
    record["seed_records"] = list(seed_records)
    config, data = record["config"], record["data"]
    spec = agents.get(config["registry_name"])
    algorithm: Any = spec.load()  # an OfflineAlgorithm subclass
    model = algorithm.load(model_path, **PORTABLE_SETTINGS)
    name = name or f"{config['agent']}/{config['dataset']}"
    check_name(name)
    env: dict[str, Any] = _zoo_env(record) if env_id is None else {"id": env_id, "kwargs": {}}
    env["kwargs"] = {**env["kwargs"], **(env_kwargs or {})}
    agent = config["agent"] if config["agent"] in agents.registered() else spec.name
    entry = ZooEntry(name, agent, "", config["dataset"], {}, (), summary=_summary(record))
    described = _dataset_description(config["dataset"], data)
    return _add_to_registry(
        model, entry, env, described, _training_description(record), _results(record), registry
    )


def check(
    name: str,
    registry: str | os.PathLike | None = None,
    episodes: int | None = None,
    suite: Suite | None = None,
) -> dict[str, Any]:
    """Evaluate zoo model ``name`` with its suite's protocol (on the CPU, as the cards were made) and
    compare with its card.

    Args:
        name: the zoo name.
        registry: the registry file.
        episodes: replay the card's first ``episodes`` episodes (default: all of them).
        suite: the suite it came from (default: the registered suite its results name).

    Returns:
        the card's and the measured returns, their largest difference, and ``verdict``:
        ``"identical"``, ``"within spread"`` (every difference within the card's standard deviation
        of returns: another CPU may round differently) or ``"differs"``. A transition generator
        (``kind: "generator"``) regenerates its card's fingerprint instead: ``max_difference_in_std``
        of the columns' means and stds, within spread up to 1e-3 (``episodes`` does not apply).

    Raises:
        ValueError: ``episodes`` is not between 1 and the card's number of episodes.
    """
    entry = find(name, registry)
    folder = locate(entry)
    if not entry.acts:
        return _check_generator(name, folder)
    config, results = read_config(folder), read_results(folder)
    expected = [float(value) for value in results["final"]["returns"]]
    episodes = len(expected) if episodes is None else episodes
    if not 1 <= episodes <= len(expected):
        raise ValueError(
            f"{name}: its card has {len(expected)} episodes; replay 1 to {len(expected)} of them"
        )
    point = _card_evaluation(folder, config, results, episodes, suite)
    measured = [float(value) for value in point["returns"]]
    difference = float(np.max(np.abs(np.subtract(expected[:episodes], measured))))
    spread = results_summary(results)["std_return"]
    verdict = "identical" if difference == 0.0 else "within spread" if difference <= spread else "differs"
    return {
        "name": name,
        "expected_returns": expected[:episodes],
        "measured_returns": measured,
        "max_abs_difference": difference,
        "verdict": verdict,
        "expected": results_summary(results),
        "measured_mean_return": float(np.mean(measured)),
        "measured_score": point.get("score"),
    }


def reevaluate(
    name: str, why: str, registry: str | os.PathLike | None = None, suite: Suite | None = None
) -> ZooEntry:
    """Evaluate zoo model ``name`` again, over all its card's episodes with its suite's protocol, and
    make that its card's final evaluation; the weights are unchanged. For a card that no longer
    replays because diffgym computes the same networks with other rounding (``zoo check`` says
    "differs"). The previous final evaluation is kept in ``results.json`` under ``reevaluations``
    with the date, the diffgym version and ``why``; the card shows it.

    Raises:
        ValueError: ``why`` is empty.
    """
    if not why.strip():
        raise ValueError("say why the card is re-evaluated (it is kept on the card)")
    entry = find(name, registry)
    if not entry.acts:
        raise ValueError(
            f"{name} is a transition {entry.kind}: it has no evaluation to redo (zoo check compares its samples)"
        )
    folder = locate(entry)
    config, results = read_config(folder), read_results(folder)
    point = _card_evaluation(folder, config, results, len(results["final"]["returns"]), suite)
    final = {**point, "step": results["final"]["step"]}
    metric = (results.get("metric") or {}).get("key", "score")
    previous = {"date": now(), "diffgym": diffgym.__version__, "why": why.strip(), "final": results["final"]}
    candidates = [*results.get("curve", []), final]
    best = max(candidates, key=lambda point: ranking_value(point.get(metric)))
    updated = {**results, "final": final, "best": {"step": best["step"], metric: best.get(metric)},
               "reevaluations": [*results.get("reevaluations", []), previous]}  # fmt: skip
    files = write_model_folder(
        read_model_folder(folder, device="cpu"),  # as published: its sampling generator untouched
        folder,
        name=name,
        env=config["env"],
        dataset=config["dataset"],
        training=config["training"],
        results=updated,
    )
    renewed = dataclasses.replace(entry, files=files, summary={**entry.summary, **results_summary(updated)})
    path = registry_path(registry)
    write_registry({**read_registry(path), name: renewed}, path)
    return renewed


def redescribe_data(
    name: str, data_dirs: Sequence[str | os.PathLike], registry: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Describe zoo model ``name``'s data again from the very file it was trained on, as
    :func:`publish` does today: the card's recipe becomes what the file's metadata says made it, and
    whether ``zoo/datasets.json`` lists that file. For cards written before the recipe was read from
    the file. Weights and results are unchanged and verified first, and ``config.json`` against the
    registry, which may already list what the rewrite makes of it: the registry entry is renewed
    first and the folder's files after, so a run stopped between the two is finished by running
    again, and a ``config.json`` that differs in anything but its data description is refused.

    Args:
        name: the zoo name of a model whose files ship with the registry (a package source).
        data_dirs: folders searched in order for the card's data file (same name, same SHA-256).

    Returns:
        the new dataset description.

    Raises:
        KeyError: no model of that name.
        ModelFileError: a file of the model's folder is not the one the registry lists.
        ValueError: the model's files are not (only) in a local folder, or its card names no data
            file with its SHA-256, or the file found is not the one it was trained on.
        FileNotFoundError: no folder has the data file.
    """
    entry = find(name, registry)
    folder = _shipped_folder(entry)
    for file in (WEIGHTS, RESULTS):
        verify_entry(folder / file, entry.files[file])
    config = read_config(folder)
    card = config.get("dataset") or {}
    data = _training_data(name, card, data_dirs)
    described = _dataset_description(
        card["id"], {**(card.get("info") or {}), "file": str(data)}, card["sha256"]
    )
    renewed = {**config, "dataset": described}
    files = rewritten_entries(folder, renewed)
    if files[CONFIG] != entry.files[CONFIG]:  # equal: done already, or stopped after the registry
        verify_entry(folder / CONFIG, entry.files[CONFIG])
    path = registry_path(registry)
    write_registry({**read_registry(path), name: dataclasses.replace(entry, files=files)}, path)
    rewrite_config(folder, renewed)
    return described


def _shipped_folder(entry: ZooEntry) -> Path:
    """The one local (package) folder that holds ``entry``'s files."""
    if [source.kind for source in entry.sources] != ["package"]:
        raise ValueError(
            f"{entry.name}: its files are not only in a local folder ({', '.join(s.kind for s in entry.sources)}); "
            "rewriting them here would not change what the other sources serve: republish it there"
        )
    return entry.package_folder(entry.sources[0])


def _training_data(name: str, described: dict[str, Any], data_dirs: Sequence[str | os.PathLike]) -> Path:
    """The card's data file in the first of ``data_dirs`` that has it, checked by its SHA-256."""
    if "file" not in described or "sha256" not in described:
        raise ValueError(f"{name}: its card names no data file with its sha256 to describe")
    found = next(
        (Path(d) / described["file"] for d in data_dirs if (Path(d) / described["file"]).is_file()), None
    )
    if found is None:
        raise FileNotFoundError(f"{name}: {described['file']} is in none of {', '.join(map(str, data_dirs))}")
    sha256 = FileEntry.of(found).sha256
    if sha256 != described["sha256"]:
        raise ValueError(
            f"{name}: {found} (sha256 {sha256}) is not the file it was trained on (sha256 {described['sha256']})"
        )
    return found


def _card_evaluation(
    folder: Path, config: dict[str, Any], results: dict[str, Any], episodes: int, suite: Suite | None
) -> dict[str, Any]:
    """The first ``episodes`` episodes of the card's evaluation, run again (its suite's protocol, CPU)."""
    from diffgym.zoo.benchmarks import load_suite
    from diffgym.zoo.benchmarks.harness import Budget, Dataset, Run, Session

    evaluation = results["evaluation"]
    suite = suite or load_suite(evaluation["suite"])
    dataset = Dataset(evaluation["dataset"], None, dict(config["dataset"].get("info") or {}))
    session = Session(suite, data_dir=Path("."), out=Path("."), budget=Budget(final_episodes=episodes))
    run = Run(session, suite.contender(evaluation["agent"]), dataset, int(evaluation["seed"]))
    point: dict[str, Any] = run.assess(read_model_folder(folder, device="cpu"), episodes)
    return point


def _zoo_env(record: dict[str, Any]) -> dict[str, Any]:
    """The env its suite names for the record's dataset (the dataset's env id for unknown suites)."""
    from diffgym.zoo.benchmarks import SUITES, load_suite
    from diffgym.zoo.benchmarks.harness import Dataset

    dataset = Dataset(record["config"]["dataset"], None, record["data"])
    if record["suite"] not in SUITES:
        return {"id": record["data"]["env_id"], "kwargs": {}}
    return load_suite(record["suite"]).zoo_env(dataset)


def _dataset_description(name: str, data: dict[str, Any], sha256: str | None = None) -> dict[str, Any]:
    """The card's ``dataset``: ``data``'s file described by its metadata (``sha256``: the file's, when
    the caller has just checked it; hashed here otherwise)."""
    file = Path(str(data.get("file", "")))
    if sha256 is None and file.is_file():
        sha256 = FileEntry.of(file).sha256
    described: dict[str, Any] = {
        "id": name,
        "info": {**data, "file": file.name},
        "recipe": f"made by {_made_by(file)}; {_where_published(name, sha256)}",
    }
    if sha256 is not None:
        described |= {"file": file.name, "sha256": sha256, "size": file.stat().st_size}
    return described


def _made_by(file: Path) -> str:
    """What made the data, as its file's metadata says (``made_by``, with the seed and the episodes)."""
    if not file.is_file():
        return "an unrecorded recipe (the file was not found when the model was published)"
    with h5py.File(file, "r") as handle:
        metadata = file_metadata(handle) or dict(
            handle.attrs
        )  # ours: one JSON attribute; older files: plain ones
    details = ", ".join(f"{key} {metadata[key]}" for key in ("seed", "episodes") if key in metadata)
    return str(metadata.get("made_by", "an unrecorded recipe")) + (f" ({details})" if details else "")


def _where_published(name: str, sha256: str | None) -> str:
    """The shared datasets' source where ``zoo/datasets.json`` lists this very file (same SHA-256)."""
    try:
        listed = read_datasets(SHIPPED_DATASETS).get(name)
    except ModelFileError:
        listed = None
    if sha256 is not None and listed is not None and listed.checksum.sha256 == sha256:
        return SHARED_DATA_SOURCE
    return "not in zoo/datasets.json" + ("; the sha256 identifies the file" if sha256 else "")


def _training_description(record: dict[str, Any]) -> dict[str, Any]:
    config, budget = record["config"], record["budget"]
    settings = _set_options(config)
    command = (
        f"diffgym benchmark {record['suite']} --agents {config['agent']} --datasets {config['dataset']} "
        f"--seeds {config['seed'] + 1} --steps {budget['gradient_steps']} --eval-every {budget['eval_every']} "
        f"--eval-episodes {budget['eval_episodes']} --final-episodes {budget['final_episodes']} "
        + (f"--until-flat {budget['until_flat']} " if budget.get("until_flat") else "")
        + "--data-dir DATA_DIR --save-models"
        + (f" --set {' '.join(settings)}" if settings else "")
    )
    return {
        "gradient_steps": budget["gradient_steps"],
        "seed": config["seed"],
        "hyperparams": config["hyperparams"],
        "command": command,
        "suite": record["suite"],
        "date": record["date"],
        "hardware": record["hardware"],
        "seconds": record["wall_time"].get("train_seconds"),
    }


def _set_options(config: dict[str, Any]) -> list[str]:
    """The ``--set AGENT:KEY=VALUE`` options that turn the hyperparameter file's values (at the run's
    key) into the run's own (``shlex``-quoted): the overrides it was run with, or the file's changes
    since."""
    hyperparams = config["hyperparams"]
    stem = Path(hyperparams.get("file") or "").stem
    if not stem or hyperparams.get("key") is None or not (HYPERPARAMS_DIR / f"{stem}.yml").exists():
        return []
    _, listed = resolve_hyperparams(stem, [], key=hyperparams["key"])
    used, listed = _leaves_of(hyperparams.get("values") or {}), _leaves_of(listed)
    return [
        shlex.quote(f"{config['agent']}:{key}={json.dumps(value)}")
        for key, value in used.items()
        if key not in listed or listed[key] != value
    ]


def _leaves_of(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"a.b": value}``."""
    leaves: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            leaves |= _leaves_of(value, f"{prefix}{key}.")
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def _across_seeds(record: dict[str, Any]) -> dict[str, Any] | None:
    """Every seed's final score (raw, under ``metric``; None where it is missing or not finite), mean
    and std over the finite ones, and the seed published; None for a run published alone."""
    if not record.get("seed_records"):
        return None
    runs = sorted([record, *record["seed_records"]], key=lambda run: run["config"]["seed"])
    finals = {str(run["config"]["seed"]): _finite(_final_value(run)) for run in runs}
    key = _metric(record["suite"])["key"]
    metric = key if record["final"].get(key) is not None else "mean_return"
    values = [value for value in finals.values() if value is not None]
    mean, std = (float(np.mean(values)), float(np.std(values))) if values else (None, None)
    return {"metric": metric, "finals": finals, "mean": mean, "std": std,
            "published_seed": record["config"]["seed"]}  # fmt: skip


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _seeds(record: dict[str, Any]) -> list[int]:
    return sorted(run["config"]["seed"] for run in [record, *record.get("seed_records", [])])


def _results(record: dict[str, Any]) -> dict[str, Any]:
    config = record["config"]
    return {
        "final": record["final"],
        "best": record.get("best"),
        "curve": record.get("curve", []),
        "seeds": _seeds(record),
        "across_seeds": _across_seeds(record),
        "evaluation": {
            "suite": record["suite"],
            "agent": config["agent"],
            "dataset": config["dataset"],
            "seed": config["seed"],
            "episodes": len(record["final"]["returns"]),
            "deterministic": config["deterministic"],
        },
        "metric": _metric(record["suite"]),
        "data_score": record["data"].get("score"),
        "reference": config.get("reference"),
        "latency": record.get("latency"),
        "hardware": record["hardware"],
    }


def _metric(suite: str) -> dict[str, Any]:
    """The suite's headline metric (key, label, display scale); the normalised score for unknown suites."""
    from diffgym.zoo.benchmarks import SUITES, load_suite
    from diffgym.zoo.format import DEFAULT_METRIC

    if suite not in SUITES:
        return dict(DEFAULT_METRIC)
    metric = load_suite(suite).metric
    return {"key": metric.key, "label": metric.label, "scale": metric.scale}


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    headline = results_summary(_results(record))
    return {
        **headline,
        "gradient_steps": record["budget"]["gradient_steps"],
        "seeds": _seeds(record),
        "data_score": record["data"].get("score"),
    }


def markdown_table(entries: dict[str, ZooEntry]) -> str:
    """Every zoo model of a diffusion agent: its score, the best baseline model on the same data (with
    its budget: a suite may give a baseline more steps, as the Meta-World one gives BC), and the
    data's own score (the results README's table)."""
    rows = [
        "| model | metric | score (final) | best baseline on the same data (its budget) | data's own score | budget | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in sorted(entries.items()):
        if entry.acts and agents.get(entry.agent).baseline:
            continue
        summary = entry.summary
        rival_text = _rival_text(entry, entries)
        seeds = summary.get("seeds_score")
        label = "" if seeds is None or seeds["label"] == summary.get("metric") else f", {seeds['label']}"
        score = _number(summary.get("score")) + (
            "" if seeds is None else f" (seeds{label}: {seeds_text(seeds)})"
        )
        rows.append(
            f"| {name} | {summary.get('metric', 'normalised score')} | {score} | {rival_text} "
            f"| {_number(summary.get('data_score'))} | {_budget_text(entry)} | {len(summary.get('seeds', []))} |"
        )
    return "\n".join(rows) + "\n"


def _rival_text(entry: ZooEntry, entries: dict[str, ZooEntry]) -> str:
    """The best baseline's score and budget; for a generator, its agent's on the real data (same run)."""
    if not entry.acts:
        baseline = entry.summary["baseline"]
        return f"{_number(baseline['score'])} ({baseline['name']}, {baseline['gradient_steps']} steps)"
    rival = _best_baseline(entry, entries)
    if rival is None:
        return "-"
    return f"{_number(rival.summary.get('score'))} ({rival.name}, {rival.summary.get('gradient_steps', '?')} steps)"


def _budget_text(entry: ZooEntry) -> str:
    steps = f"{entry.summary.get('gradient_steps', '?')} steps"
    if entry.acts:
        return steps
    return f"{steps} (generator); its agent {entry.summary.get('agent_steps', '?')} steps"


def _best_baseline(entry: ZooEntry, entries: dict[str, ZooEntry]) -> ZooEntry | None:
    rivals = [
        other
        for other in entries.values()
        if other.acts
        and agents.get(other.agent).baseline
        and other.dataset == entry.dataset
        and other.summary.get("metric") == entry.summary.get("metric")
        and other.summary.get("score") is not None
    ]
    return max(rivals, key=lambda other: other.summary["score"], default=None)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
