"""Pretrained models in one line, plus the hyperparameter files and benchmarks they come from.

>>> from diffgym import zoo                                  # doctest: +SKIP
>>> model = zoo.load("dql/hopper-medium")                     # doctest: +SKIP
>>> env = zoo.make_env("dql/hopper-medium")                   # doctest: +SKIP
>>> evaluate_policy(model, Monitor(env), n_eval_episodes=5)   # doctest: +SKIP

A loaded model is a normal agent: it ``predict``s, works with SB3's ``evaluate_policy`` and keeps
learning (``learn``, offline from its dataset or ``online=True``; its optimizers start fresh).
Every function takes ``registry=`` (a registry file; default ``$DIFFGYM_ZOO_REGISTRY``, else the
shipped ``zoo/registry.json``). See :mod:`diffgym.zoo.format` for the files of a model,
:mod:`diffgym.zoo.catalog` for the registry, :mod:`diffgym.zoo.store` for where files come from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from diffgym.zoo import datasets
from diffgym.zoo.catalog import ZooEntry, ZooUnavailableError, find, read_registry
from diffgym.zoo.format import read_config, read_model_folder, read_results
from diffgym.zoo.store import copy_to, locate, where

Registry = str | os.PathLike | None


def list(registry: Registry = None) -> dict[str, ZooEntry]:
    """Every model of the registry, by name."""
    return read_registry(registry)


def info(name: str, registry: Registry = None) -> dict[str, Any]:
    """What the registry says about ``name``, where it is available now, and, when its files are
    local, its config and results."""
    entry = find(name, registry)
    available = where(entry)
    remote = any(source.kind != "package" for source in entry.sources)
    details: dict[str, Any] = {
        "name": name,
        **entry.to_json(),
        "available": available or ("remote" if remote else "unavailable"),
    }
    if available:
        folder = locate(entry)
        details |= {"folder": str(folder), "config": read_config(folder), "results": read_results(folder)}
    return details


def download(name: str, registry: Registry = None, timeout: float = 30.0) -> Path:
    """The folder with ``name``'s verified files (cache, shipped, or downloaded now)."""
    return locate(find(name, registry), timeout)


def load(
    name: str,
    env: Any = None,
    device: torch.device | str = "auto",
    registry: Registry = None,
    timeout: float = 30.0,
    dataset: Any = None,
    **kwargs: Any,
) -> Any:
    """The pretrained agent called ``name`` (for a transition generator such as
    ``"synther/hopper-medium"``: a fitted :class:`~diffgym.wrappers.TransitionDiffusion`, which takes
    no env, dataset or kwargs); nothing in its files is executed.

    Args:
        name: ``algo/env-dataset``, as :func:`list` shows.
        env: an environment with the model's spaces (optional; :func:`make_env` makes its own).
        device: where to put the networks.
        registry: the registry file.
        timeout: seconds a download may stall before it fails (it resumes on the next call).
        dataset: data to keep learning from (offline, or in the replay buffer online): e.g. its own,
            ``zoo.datasets.fetch(zoo.info(name)["dataset"])`` (see :mod:`diffgym.zoo.datasets`).
        kwargs: constructor arguments that override the saved ones (e.g. ``verbose=1``).

    Raises:
        KeyError: no such model (the message names the close ones).
        ZooUnavailableError: no source could provide verified files.
        ModelFileError: the files do not describe a model.
    """
    entry = find(name, registry)
    return read_model_folder(locate(entry, timeout), env=env, device=device, dataset=dataset, **kwargs)


def make_env(name: str, registry: Registry = None, **make_kwargs: Any) -> Any:
    """A fresh environment of the kind ``name`` was trained for (Gymnasium; a PettingZoo
    ``ParallelEnv`` for team agents), with the model's env kwargs and ``make_kwargs`` (e.g.
    ``render_mode="rgb_array"``)."""
    from diffgym import registry as agents
    from diffgym.tasks.envs import make_env as make_gym_env

    entry = find(name, registry)
    if entry.acts and agents.get(entry.agent).team:
        from diffgym.data import make_parallel_env

        return make_parallel_env(entry.env_id, {**entry.env_kwargs, **make_kwargs})
    return make_gym_env(entry.env_id, entry.env_kwargs, **make_kwargs)


def export(name: str, target: str | os.PathLike, registry: Registry = None, timeout: float = 30.0) -> Path:
    """Copy ``name``'s verified files into ``target``: the folder a maintainer uploads to a Hub repo."""
    return copy_to(find(name, registry), Path(target), timeout)


__all__ = [
    "ZooEntry",
    "ZooUnavailableError",
    "datasets",
    "download",
    "export",
    "info",
    "list",
    "load",
    "make_env",
]
