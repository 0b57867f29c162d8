"""Hyperparameter files: ``zoo/hyperparams/<stem>.yml``, one per agent, keyed by task (rl-zoo3's layout).

A file maps keys (a dataset or task name such as ``hopper-medium`` or ``maze2d-umaze``, an env id
such as ``Pendulum-v1``, and ``default``) to the agent's settings, a comment on every field. A key's
settings are merged over ``default`` (nested mappings such as ``policy_kwargs`` key by key). Two
fields are not constructor arguments: ``n_timesteps`` (the gradient-step budget) and ``policy``
(the policy alias); :func:`split_config` takes them out. ``diffgym train`` and ``diffgym benchmark``
both read these files, and both take ``--set key=value`` overrides (:func:`apply_overrides`).

>>> config = apply_overrides({"policy_kwargs": {"dim": 32}}, ["policy_kwargs.dim=64", "eta=0.5"])
>>> config
{'policy_kwargs': {'dim': 64}, 'eta': 0.5}
>>> select_key(["default", "hopper-medium", "hopper-medium-replay"], ["mujoco/hopper/medium-replay-v0"])
'hopper-medium-replay'
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_KEY",
    "HYPERPARAMS_DIR",
    "apply_overrides",
    "deep_merge",
    "hyperparams_file",
    "load_hyperparams",
    "parse_override",
    "read_hyperparams",
    "read_value",
    "resolve_hyperparams",
    "select_key",
    "split_config",
]

#: the folder of the shipped files (package data of ``diffgym.zoo``)
HYPERPARAMS_DIR = Path(__file__).resolve().with_name("hyperparams")
#: the entry every other key is merged over
DEFAULT_KEY = "default"
_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def hyperparams_file(stem: str) -> Path:
    """``zoo/hyperparams/<stem>.yml``.

    Raises:
        FileNotFoundError: no such file; the message lists the shipped ones.
    """
    path = HYPERPARAMS_DIR / f"{stem}.yml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in HYPERPARAMS_DIR.glob("*.yml")))
        raise FileNotFoundError(f"no hyperparameter file {path.name} in {HYPERPARAMS_DIR}; known: {known}")
    return path


def read_hyperparams(stem: str) -> dict[str, dict[str, Any]]:
    """Every entry of ``<stem>.yml`` as written (not merged over ``default``)."""
    path = hyperparams_file(stem)
    entries = yaml.safe_load(path.read_text()) or {}
    if not isinstance(entries, dict) or DEFAULT_KEY not in entries:
        raise ValueError(f"{path} must be a mapping of keys to settings with a {DEFAULT_KEY!r} entry")
    return entries


def load_hyperparams(stem: str, key: str = DEFAULT_KEY) -> dict[str, Any]:
    """The settings of ``key`` in ``<stem>.yml``, merged over its ``default`` entry.

    Raises:
        KeyError: the file has no such key; the message lists its keys.
    """
    entries = read_hyperparams(stem)
    if key not in entries:
        raise KeyError(f"{stem}.yml has no key {key!r}; its keys: {', '.join(entries)}")
    return deep_merge(entries[DEFAULT_KEY], entries[key] or {})


def resolve_hyperparams(
    stem: str, names: Iterable[str], key: str | None = None, overrides: Iterable[str] = ()
) -> tuple[str | None, dict[str, Any]]:
    """``(key, settings)``: ``key`` if given, else the key that fits ``names`` (see :func:`select_key`),
    else ``default``; its settings merged over ``default`` with ``overrides`` applied. An agent
    without a file (a plugin's) gets ``(None, overrides)``: its class defaults apply."""
    if key is None and not (HYPERPARAMS_DIR / f"{stem}.yml").exists():
        return None, apply_overrides({}, overrides)
    if key is None:
        key = select_key(read_hyperparams(stem), [name for name in names if name]) or DEFAULT_KEY
    return key, apply_overrides(load_hyperparams(stem, key), overrides)


def select_key(keys: Iterable[str], names: Iterable[str]) -> str | None:
    """The key that fits the first of ``names`` (a dataset name, then an env id) that any key fits.

    A key fits a name when it equals the name (case aside), or when its words appear in order
    and side by side among the name's words (``hopper-medium`` fits ``mujoco/hopper/medium-v0``);
    the key with the most words wins. None when no key fits.
    """
    candidates = [key for key in keys if key != DEFAULT_KEY]
    for name in names:
        exact = [key for key in candidates if key.lower() == name.lower()]
        fitting = exact or [key for key in candidates if _contains(_words(name), _words(key))]
        if fitting:
            return max(fitting, key=lambda key: len(_words(key)))
    return None


def split_config(config: Mapping[str, Any]) -> tuple[int | None, str, dict[str, Any]]:
    """``(n_timesteps, policy, constructor kwargs)`` of a merged entry."""
    kwargs = dict(config)
    steps = kwargs.pop("n_timesteps", None)
    policy = kwargs.pop("policy", "MlpPolicy")
    return steps, policy, kwargs


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``; mappings present in both are merged key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``"policy_kwargs.n_plans=4"`` -> ``(["policy_kwargs", "n_plans"], 4)``; the value is read as
    YAML (``0.5``, ``true``, ``null``, ``[1, 2]``, ``{name: ddim, num_steps: 10}``), and ``1e-3``
    as a number too (YAML 1.1 reads exponents without a dot as strings).

    >>> parse_override("learning_rate=1e-3"), parse_override("sampler={name: ddim, num_steps: 5}")
    ((['learning_rate'], 0.001), (['sampler'], {'name': 'ddim', 'num_steps': 5}))
    """
    path, sep, text = assignment.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
        raise ValueError(f"--set takes key=value (nested keys joined by '.'), not {assignment!r}")
    try:
        return keys, read_value(text)
    except ValueError as error:
        raise ValueError(f"--set {path.strip()}: {error}") from error


def read_value(text: str) -> Any:
    """``text`` read as YAML, with ``1e-3`` a number too (YAML 1.1 reads exponents without a dot as
    strings), in lists and mappings as well.

    >>> read_value("[1e-4, 0.5, {name: ddim, eta: 1e-2}]")
    [0.0001, 0.5, {'name': 'ddim', 'eta': 0.01}]

    Raises:
        ValueError: not valid YAML.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"the value {text!r} is not valid YAML ({error})") from error
    return _numbers(value)


def _numbers(value: Any) -> Any:
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()}
    return float(value) if isinstance(value, str) and _EXPONENT.fullmatch(value) else value


def apply_overrides(config: Mapping[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``"a.b=value"`` of ``assignments`` set (see :func:`parse_override`)."""
    result = copy.deepcopy(dict(config))
    for assignment in assignments:
        keys, value = parse_override(assignment)
        node = result
        for depth, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {assignment}: {'.'.join(keys[: depth + 1])} is not a mapping")
        node[keys[-1]] = value
    return result


def _words(name: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", name.lower()) if word]


def _contains(words: list[str], part: list[str]) -> bool:
    return any(words[i : i + len(part)] == part for i in range(len(words) - len(part) + 1))
