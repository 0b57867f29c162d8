"""The zoo's model format: a folder a user can read, and load without anything in it being executed.

A zoo model is a folder of four files (the layout of Hugging Face Hub model repos, as LeRobot and
rl-zoo3 use it):

- ``model.safetensors``: the inference weights: the policy's state that acts (EMA networks, the
  critics that rank candidates, normaliser statistics) and whatever cannot be rebuilt (e.g. IDQL's
  value network) under ``policy.<key>``, and the sampling generator's state under
  ``generators.sampling``, so that seeded stochastic actions reproduce too. The networks being
  trained are left out where an acting copy stands in for them (``derived_state`` of the policy:
  Diffusion-QL's online actor is its EMA, its critic the target critic; a planner's model its EMA):
  a loaded model starts them as copies, which changes no action, and fine-tunes from there with
  fresh optimizers, as after SB3's ``set_parameters``. This halves most files.
- ``config.json``: what rebuilds the agent (``derived_state``: the state left out, and its source) (the ``manifest`` of :meth:`OfflineAlgorithm.manifest
  <diffgym.algorithm.OfflineAlgorithm.manifest>`: class, every hyperparameter, spaces, seed, the
  sampler and step count it acts with), the environment (Gymnasium id and kwargs), the dataset (id,
  file, sha256, how it was made), the training (gradient steps, hyperparameter file and key, hardware,
  time), the library versions, and a copy of the normaliser statistics for readers (the weights are
  authoritative).
- ``results.json``: the evaluation (returns of every episode, mean, std, normalised score, seeds,
  last vs best, the learning curve, hardware).
- ``README.md``: the model card, with YAML metadata as the Hub and rl-zoo3 write it.

Loading reads JSON and safetensors only (never pickle), checks each file's size and SHA-256 against
the registry before reading it when the caller has them (:mod:`diffgym.zoo.store` always does), and
raises :class:`~diffgym.serialization.ModelFileError` naming the file for anything it cannot trust.
A model converted from :meth:`save <diffgym.algorithm.OfflineAlgorithm.save>`'s zip and loaded back
predicts exactly what the original does (``tests/zoo/test_zoo.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import get_device

import diffgym
from diffgym import registry
from diffgym.serialization import ModelFileError, as_model_file_error, atomic_file
from diffgym.zoo.download import file_sha256, verify_file

if TYPE_CHECKING:
    from diffgym.wrappers.synther import TransitionDiffusion

WEIGHTS, CONFIG, RESULTS, CARD = "model.safetensors", "config.json", "results.json", "README.md"
#: the files of every zoo model, in the order they are written
MODEL_FILES = (WEIGHTS, CONFIG, RESULTS, CARD)
FORMAT = "diffgym-zoo/1"
#: ``config.json``'s ``kind`` of a transition generator (an agent's config has no ``kind``), and its ``agent``
GENERATOR_KIND, GENERATOR_AGENT = "generator", "synther"
POLICY_PREFIX, SAMPLING_GENERATOR = "policy.", "generators.sampling"
#: normaliser tensors up to this many entries are copied into config.json for readers
_READABLE_STATISTICS = 4096


@dataclass(frozen=True)
class FileEntry:
    """A file as the registry records it: its SHA-256 (hex) and size in bytes."""

    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        """The entry of an existing file."""
        return cls(file_sha256(path), path.stat().st_size)

    @classmethod
    def of_bytes(cls, content: bytes) -> FileEntry:
        """The entry a file holding ``content`` will have."""
        return cls(hashlib.sha256(content).hexdigest(), len(content))


def write_model_folder(
    model: Any,
    folder: Path,
    *,
    name: str,
    env: Mapping[str, Any],
    dataset: Mapping[str, Any],
    training: Mapping[str, Any],
    results: Mapping[str, Any],
) -> dict[str, FileEntry]:
    """Write ``model`` as the zoo folder ``folder`` (created; files replaced atomically one by one).

    A SynthER transition model (:class:`~diffgym.wrappers.TransitionDiffusion`) is written as the same
    four files: ``config.json`` of kind ``"generator"`` (its ``model`` is the generator's
    :meth:`~diffgym.wrappers.TransitionDiffusion.manifest`), the weights its
    :meth:`~diffgym.wrappers.TransitionDiffusion.sampling_state`, ``results`` what an agent trained on
    its data scored.

    Args:
        model: a trained diffgym agent, or a fitted transition model.
        folder: where the four files go.
        name: the zoo name, ``algo/env-dataset``.
        env: ``{"id": gymnasium id, "kwargs": {...}}`` of the environment it acts in.
        dataset: at least ``{"id": ...}``; the file, its sha256 and recipe where known.
        training: the budget and how it was run (gradient steps, seed, hyperparameter file and key,
            the command, hardware, seconds).
        results: the evaluation, as :func:`results_summary` reads it: ``final`` (``returns``,
            ``mean_return``, ``score``), optionally ``best``, ``curve``, ``seeds``, ``hardware``.

    Returns:
        file name -> :class:`FileEntry`, what the registry records.
    """
    from diffgym.wrappers.synther import TransitionDiffusion

    if isinstance(model, TransitionDiffusion):
        weights = model.sampling_state()
        return _write_folder(
            folder, weights, _generator_config(model, weights, name, env, dataset, training), results
        )
    state, derived = inference_state(model.policy)
    tensors = {POLICY_PREFIX + key: _plain(value) for key, value in state.items()}
    tensors[SAMPLING_GENERATOR] = model.policy.sampling_generator.get_state()
    config = {
        "format": FORMAT,
        "name": name,
        "agent": registry.get(type(model).__name__).name,
        "model": model.manifest(),
        "env": dict(env),
        "dataset": dict(dataset),
        "training": dict(training),
        "versions": _versions(),
        "normalizers": _readable_normalizers(state),
        "derived_state": derived,
    }
    return _write_folder(folder, tensors, config, results)


def _generator_config(
    generator: TransitionDiffusion,
    weights: Mapping[str, torch.Tensor],
    name: str,
    env: Mapping[str, Any],
    dataset: Mapping[str, Any],
    training: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": GENERATOR_KIND,
        "name": name,
        "agent": GENERATOR_AGENT,
        "model": {"algorithm": "SynthER transition model", **generator.manifest()},
        "env": dict(env),
        "dataset": dict(dataset),
        "training": dict(training),
        "versions": _versions(),
        "normalizers": _readable_normalizers(weights),
    }


def _write_folder(
    folder: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any], results: Mapping[str, Any]
) -> dict[str, FileEntry]:
    """The four files of a zoo folder, each replaced atomically; their registry entries."""
    folder.mkdir(parents=True, exist_ok=True)
    if not _holds(folder / WEIGHTS, tensors):  # safetensors' header order varies: rewrite only changes
        with atomic_file(folder / WEIGHTS) as file:
            file.write(_safetensors_bytes(tensors))
    _write_json(folder / RESULTS, dict(results))
    return rewrite_config(folder, config)


def rewrite_config(folder: Path, config: dict[str, Any]) -> dict[str, FileEntry]:
    """Replace a zoo folder's ``config.json`` and ``README.md`` (the card, made from the config and
    ``results.json``), each atomically; the weights and results are untouched. Returns the folder's
    registry entries."""
    for name, content in _config_files(folder, config).items():
        with atomic_file(folder / name) as file:
            file.write(content)
    return {file: FileEntry.of(folder / file) for file in MODEL_FILES}


def rewritten_entries(folder: Path, config: dict[str, Any]) -> dict[str, FileEntry]:
    """The registry entries ``folder`` will have once :func:`rewrite_config` has written ``config``
    into it (nothing is written)."""
    written = {name: FileEntry.of_bytes(content) for name, content in _config_files(folder, config).items()}
    return {file: written.get(file) or FileEntry.of(folder / file) for file in MODEL_FILES}


def _config_files(folder: Path, config: dict[str, Any]) -> dict[str, bytes]:
    """What :func:`rewrite_config` writes: ``config.json`` and the card made from it and the results."""
    return {CONFIG: _json_bytes(config), CARD: model_card(config, read_results(folder)).encode()}


def _versions() -> dict[str, str]:
    return {"diffgym": diffgym.__version__, "torch": torch.__version__, "python": platform.python_version()}


def read_model_folder(
    folder: Path,
    entries: Mapping[str, FileEntry] | None = None,
    env: GymEnv | Any | None = None,
    device: torch.device | str = "auto",
    **kwargs: Any,
) -> Any:
    """The agent (or, for a folder of kind ``"generator"``, the fitted
    :class:`~diffgym.wrappers.TransitionDiffusion`) stored in a zoo folder; nothing in it is executed.

    Args:
        folder: a folder written by :func:`write_model_folder`.
        entries: file name -> expected :class:`FileEntry`; every listed file is checked (size, then
            SHA-256) before anything is read from it.
        env: an environment with the model's spaces (a PettingZoo ``ParallelEnv`` for team agents);
            a generator needs none.
        device: where to put the networks.
        kwargs: constructor arguments that override the saved ones (e.g. ``verbose``); a generator
            takes none.

    Raises:
        ModelFileError: a file is missing, differs from its entry, or does not describe a model.
    """
    if entries is not None and set(entries) != set(MODEL_FILES):
        raise ModelFileError(
            f"{folder}: the checksums given cover {sorted(entries)}, not every file {list(MODEL_FILES)}"
        )
    for file, entry in (entries or {}).items():
        verify_entry(folder / file, entry)
    config = read_config(folder)
    tensors = _read_safetensors(folder / WEIGHTS)
    if config.get("kind") == GENERATOR_KIND:
        return _generator(folder, config, tensors, device, {"env": env, **kwargs})
    policy = {
        key[len(POLICY_PREFIX) :]: value for key, value in tensors.items() if key.startswith(POLICY_PREFIX)
    }
    with as_model_file_error(f"{folder / CONFIG}: its derived_state does not fit its weights"):
        policy = with_derived_state(policy, dict(config.get("derived_state") or {}))
    members: dict[str, Any] = {"policy": policy}
    if SAMPLING_GENERATOR in tensors:
        members["generators"] = {
            "training": torch.Generator().manual_seed(int(config["model"].get("seed") or 0)).get_state(),
            "sampling": tensors[SAMPLING_GENERATOR],
        }
    with as_model_file_error(f"{folder / CONFIG}: names no known agent"):
        cls: Any = registry.get(str(config["agent"])).load()  # an OfflineAlgorithm subclass
    return cls.from_parts(config["model"], members, env, device, source=str(folder), **kwargs)


def _generator(
    folder: Path,
    config: Mapping[str, Any],
    tensors: dict[str, torch.Tensor],
    device: torch.device | str,
    kwargs: Mapping[str, Any],
) -> TransitionDiffusion:
    from diffgym.wrappers.synther import TransitionDiffusion  # numpy, minari: only when a generator loads

    given = sorted(key for key, value in kwargs.items() if value is not None)
    if given:
        raise ValueError(f"{config['name']} is a transition generator: it takes no {', '.join(given)}")
    with as_model_file_error(f"{folder}: does not hold the transition model its config describes"):
        generator = TransitionDiffusion.from_parts(dict(config["model"]), tensors)
    return generator.to(get_device(device))


def inference_state(policy: Any) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The policy's state less what its acting copies can rebuild (``policy.derived_state``), and the
    ``{target prefix: source prefix}`` pairs left out. A pair is left out only when every key under the
    target has its counterpart under the source (a Diffuser without a value keeps what it has)."""
    state = policy.state_dict()
    derived: dict[str, str] = {}
    for target, source in getattr(policy, "derived_state", {}).items():
        targets = [key for key in state if key.startswith(target)]
        if targets and all(source + key[len(target) :] in state for key in targets):
            derived[target] = source
            for key in targets:
                del state[key]
    return state, derived


def with_derived_state(state: dict[str, torch.Tensor], derived: dict[str, str]) -> dict[str, torch.Tensor]:
    """``state`` with each left-out target rebuilt as a copy of its source (see :func:`inference_state`)."""
    full = dict(state)
    for target, source in derived.items():
        copies = {
            target + key[len(source) :]: value.clone()
            for key, value in state.items()
            if key.startswith(source)
        }
        if not copies:
            raise ValueError(f"no weights under {source!r} to rebuild {target!r} from")
        full |= copies
    return full


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a zoo folder, checked for the format and the keys loading needs."""
    config = _read_json(folder / CONFIG)
    if config.get("format") != FORMAT:
        raise ModelFileError(f"{folder / CONFIG}: format {config.get('format')!r} is not {FORMAT!r}")
    missing = [key for key in ("name", "agent", "model", "env") if key not in config]
    if missing or not isinstance(config["model"], dict):
        raise ModelFileError(f"{folder / CONFIG}: lacks {', '.join(missing) or 'a model manifest'}")
    return config


def read_results(folder: Path) -> dict[str, Any]:
    """``results.json`` of a zoo folder."""
    return _read_json(folder / RESULTS)


def verify_entry(path: Path, entry: FileEntry) -> None:
    """Raise :class:`ModelFileError` unless ``path`` has the entry's size and SHA-256."""
    if not path.is_file():
        raise ModelFileError(f"{path}: missing")
    verify_file(path, entry.sha256, entry.size)


#: how a score is read from an evaluation when ``results.json`` names no metric: D4RL's normalised score
DEFAULT_METRIC: dict[str, Any] = {"key": "score", "label": "normalised score", "scale": 1.0}


def results_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``results.json``: mean and std of the final returns, episodes, and the
    score under the results' ``metric`` (key, label, display scale; default: the normalised score)."""
    final = results["final"]
    metric: Mapping[str, Any] = results.get("metric") or DEFAULT_METRIC
    returns = [float(value) for value in final["returns"]]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((value - mean) ** 2 for value in returns) / len(returns))

    def scaled(point: Mapping[str, Any] | None) -> float | None:
        value = (point or {}).get(metric["key"])
        return None if value is None else float(value) * float(metric["scale"])

    return {
        "mean_return": mean,
        "std_return": std,
        "episodes": len(returns),
        "metric": metric["label"],
        "score": scaled(final),
        "best_score": scaled(results.get("best")),
        "seeds_score": _seeds_score(results.get("across_seeds"), metric),
    }


def _seeds_score(across: Mapping[str, Any] | None, metric: Mapping[str, Any]) -> dict[str, Any] | None:
    """Mean and std of every seed's final score (``results.json``'s ``across_seeds``), scaled for display."""
    if not across or across["mean"] is None:  # none, or no seed with a finite score
        return None
    scale = float(metric["scale"]) if across["metric"] == metric["key"] else 1.0
    finite = [value for value in across["finals"].values() if value is not None]
    return {"mean": across["mean"] * scale, "std": across["std"] * scale, "n": len(finite),
            "of": len(across["finals"]),
            "label": metric["label"] if across["metric"] == metric["key"] else "mean return"}  # fmt: skip


def seeds_text(seeds_score: Mapping[str, Any]) -> str:
    """``"m ± s over n seeds"`` (``"... over n of k seeds"`` where some were not finite)."""
    n, of = seeds_score["n"], seeds_score.get("of", seeds_score["n"])
    return (
        f"{seeds_score['mean']:.1f} ± {seeds_score['std']:.1f} over {n}{'' if n == of else f' of {of}'} seeds"
    )


def model_card(config: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """The model card: YAML metadata (library, tags, ``model-index`` as rl-zoo3 writes it) and prose."""
    summary = results_summary(results)
    model, env, dataset, training = config["model"], config["env"], config["dataset"], config["training"]
    score = "n/a" if summary["score"] is None else f"{summary['score']:.1f}"
    metadata = {
        "library_name": "diffgym",
        "tags": [
            "reinforcement-learning",
            "offline-reinforcement-learning",
            "diffusion",
            "diffgym",
            env["id"],
        ],
        "model-index": [
            {
                "name": model["algorithm"],
                "results": [
                    {
                        "task": {"type": "reinforcement-learning", "name": "reinforcement-learning"},
                        "dataset": {"name": dataset.get("id", ""), "type": dataset.get("id", "")},
                        "metrics": [
                            {
                                "type": "mean_reward",
                                "value": f"{summary['mean_return']:.2f} +/- {summary['std_return']:.2f}",
                                "name": "mean_reward",
                                "verified": False,
                            },
                            {
                                "type": summary["metric"].replace(" ", "_"),
                                "value": score,
                                "name": summary["metric"],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    hyperparams = training.get("hyperparams", {})
    lines = [
        "---",
        json.dumps(metadata, indent=2),  # JSON is YAML: the Hub reads this header as it is
        "---",
        "",
        f"# {config['name']}: {model['algorithm']} on {env['id']}, trained on `{dataset.get('id', '?')}`",
        "",
        _usage(config),
        "",
        "| | |",
        "| --- | --- |",
        f"| return (final, {summary['episodes']} episodes) | {summary['mean_return']:.1f} ± {summary['std_return']:.1f} |",
        f"| {summary['metric']} (final) | {score} |",
        f"| best score during training | {_maybe(summary['best_score'])} |",
        *_seed_rows(summary, results, training),
        *(
            f"| re-evaluated | {again['date']} (diffgym {again['diffgym']}): {again['why']}; the final mean "
            f"return was {again['final']['mean_return']:.1f} |"
            for again in results.get("reevaluations", [])
        ),
        f"| budget | {training.get('gradient_steps', '?')} gradient steps, seed {training.get('seed', '?')} |",
        f"| hyperparameters | {_hyperparams_text(hyperparams)} |",
        f"| sampler | {json.dumps(model.get('sampler', model.get('config', {}).get('sampler')))} |",
        f"| hardware | {json.dumps(training.get('hardware', results.get('hardware')))} |",
        f"| dataset | {json.dumps(dataset)} |",
        "",
        "Reproduce it:",
        "",
        "```bash",
        str(training.get("command", "(not recorded)")),
        "```",
        "",
        _what_the_score_is(config),
        "",
    ]
    return "\n".join(lines)


def _hyperparams_text(hyperparams: Mapping[str, Any]) -> str:
    if hyperparams.get("file", "?") is None:
        return "the model's own settings (`config.json`, `model.config`)"
    return f"`zoo/hyperparams/{hyperparams.get('file', '?')}`, key `{hyperparams.get('key')}`"


def _usage(config: Mapping[str, Any]) -> str:
    name = config["name"]
    if config.get("kind") == GENERATOR_KIND:
        return (
            f"A diffgym transition generator (`pip install diffgym`): `from diffgym import zoo; generator = "
            f"zoo.load({name!r})`, then `generator.generate(n, torch.Generator().manual_seed(0))` or "
            "`diffgym.wrappers.synthesize_dataset(source, new_id, n, model=generator)`."
        )
    return f"A diffgym model (`pip install diffgym`): `from diffgym import zoo; model = zoo.load({name!r})`."


def _what_the_score_is(config: Mapping[str, Any]) -> str:
    if config.get("kind") == GENERATOR_KIND:
        return (
            "It does not act: the returns and the score are those of the agent trained on its synthetic data "
            "alone (every seed's final episodes, deterministic actions); `results.json` also holds the agent "
            "trained on the real data with the same budget, and how close the transitions are to the simulator's."
        )
    return (
        "The score is the mean over the final evaluation's episodes (deterministic actions); "
        "`results.json` holds every episode's return and the learning curve."
    )


def _seed_rows(
    summary: Mapping[str, Any], results: Mapping[str, Any], training: Mapping[str, Any]
) -> list[str]:
    """The card's row of the score over seeds, when the model is the best of several."""
    seeds = summary.get("seeds_score")
    if seeds is None:
        return []
    finals = ", ".join(
        f"seed {seed}: {'not finite' if value is None else f'{value:.4g}'}"
        for seed, value in results["across_seeds"]["finals"].items()
    )
    return [
        f"| {seeds['label']} (final) over seeds | {seeds_text(seeds)} (this model: seed {training.get('seed', '?')}, "
        f"the best of them; raw finals {finals}) |"
    ]


def _maybe(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy (safetensors refuses tensors that share memory)."""
    return tensor.detach().to("cpu").contiguous().clone()


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save(tensors, metadata={"format": "pt", "library": "diffgym"})


def _holds(path: Path, tensors: dict[str, torch.Tensor]) -> bool:
    """Whether ``path`` is a safetensors file of exactly ``tensors``."""
    try:
        stored = _read_safetensors(path)
    except ModelFileError:
        return False
    return stored.keys() == tensors.keys() and all(torch.equal(stored[k], tensors[k]) for k in tensors)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelFileError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, OSError) as error:
        raise ModelFileError(f"{path}: not a safetensors file ({error})") from error


def _readable_normalizers(state: Mapping[str, torch.Tensor]) -> dict[str, list[Any]]:
    return {
        key: value.detach().cpu().tolist()
        for key, value in state.items()
        if "normalizer" in key and value.numel() <= _READABLE_STATISTICS
    }


#: how strict JSON (what the Hub's and browsers' parsers accept) spells the floats it has no literal for
_NON_FINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _write_json(path: Path, value: Any) -> None:
    """Strict JSON: an unbounded space's ``inf`` is written as the string ``"-Infinity"`` (or
    ``"Infinity"``, ``"NaN"``), which :func:`_read_json` turns back into the float."""
    with atomic_file(path) as file:
        file.write(_json_bytes(value))


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(_spelled(value), indent=2, allow_nan=False) + "\n").encode()


def _spelled(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _spelled(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_spelled(item) for item in value]
    return value


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"{path}: missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"), object_hook=_unspelled_object)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: not JSON ({error})") from error
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value


def _unspelled_object(pairs: dict[str, Any]) -> dict[str, Any]:
    return {key: _unspelled(value) for key, value in pairs.items()}


def _unspelled(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_unspelled(item) for item in value]
    return value


__all__ = [
    "CARD",
    "CONFIG",
    "MODEL_FILES",
    "RESULTS",
    "WEIGHTS",
    "FileEntry",
    "model_card",
    "read_config",
    "read_model_folder",
    "read_results",
    "results_summary",
    "verify_entry",
    "write_model_folder",
]
