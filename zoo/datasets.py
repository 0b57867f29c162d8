"""The datasets our benchmarks and zoo models were trained on, obtainable the way models are.

``zoo/datasets.json`` lists each D4RL-layout file by name (``hopper-medium``) with its SHA-256, size,
env and sources (the kinds of :mod:`diffgym.zoo.catalog`: a local folder, a Hugging Face Hub
dataset repo at a pinned commit, an HTTPS folder). :func:`fetch` puts the verified file in the
cache (``$DIFFGYM_HOME/datasets/<name>/``; downloads stream to a ``.part`` file, resume, and are
used only once size and SHA-256 match); :func:`load` then imports it into the Minari store (once;
afterwards the store's copy is used) and returns the ``MinariDataset`` every agent takes.
``extra_sources`` (``diffgym data fetch NAME --from DIR_OR_URL``) adds a mirror or a folder that
already holds the files, e.g. the shared datasets folder of the development machine.

>>> sources = parse_sources(["/data/d4rl", "https://example.org/d4rl"])
>>> [(source.kind, source.location) for source in sources]
[('package', '/data/d4rl'), ('url', 'https://example.org/d4rl/')]
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minari import MinariDataset

from diffgym.serialization import ModelFileError
from diffgym.zoo.catalog import Source, file_entry
from diffgym.zoo.format import FileEntry
from diffgym.zoo.store import diffgym_home, locate_files

SHIPPED_DATASETS = Path(__file__).parent / "datasets.json"
DATASETS_VARIABLE = "DIFFGYM_DATASET_REGISTRY"
DATASETS_FORMAT = "diffgym-datasets/1"
#: a dataset's name and file name: one path component that cannot lead elsewhere
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the registry: its file, the env it was collected in, and where it lives."""

    name: str
    file: str
    checksum: FileEntry
    env_id: str
    description: str
    sources: tuple[Source, ...]
    base: Path  # the registry file's folder (relative folder sources start there)

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any], base: Path) -> DatasetEntry:
        where = f"dataset {name!r}"
        file = str(data.get("file", ""))
        if not (_PLAIN_NAME.fullmatch(name) and _PLAIN_NAME.fullmatch(file)):
            raise ValueError(f"{where}: a name and its file are plain file names (letters, digits, _ . -)")
        try:
            return cls(
                name=name,
                file=file,
                checksum=file_entry(data, where),
                env_id=str(data["env_id"]),
                description=str(data.get("description", "")),
                sources=tuple(
                    Source.from_json(s, f"{where}, source {i}") for i, s in enumerate(data["sources"])
                ),
                base=base,
            )
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"{where}: malformed registry entry ({type(error).__name__}: {error})"
            ) from error


def registry_path(registry: str | os.PathLike | None = None) -> Path:
    """``registry``, else ``$DIFFGYM_DATASET_REGISTRY``, else the shipped ``zoo/datasets.json``."""
    return Path(registry or os.environ.get(DATASETS_VARIABLE) or SHIPPED_DATASETS)


def read_datasets(registry: str | os.PathLike | None = None) -> dict[str, DatasetEntry]:
    """Every dataset of a registry file, by name.

    Raises:
        ModelFileError: the file is missing, unreadable, of another format, or has a malformed entry.
    """
    path = registry_path(registry)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != DATASETS_FORMAT:
            raise ValueError(f"not a {DATASETS_FORMAT} file")
        return {
            name: DatasetEntry.from_json(name, entry, path.parent) for name, entry in data["datasets"].items()
        }
    except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError) as error:
        raise ModelFileError(f"dataset registry {path}: {error}") from error


def find(name: str, registry: str | os.PathLike | None = None) -> DatasetEntry:
    """The dataset called ``name``; ``KeyError`` listing the registry's names otherwise."""
    entries = read_datasets(registry)
    if name not in entries:
        raise KeyError(f"no dataset named {name!r} in the registry; it has: {', '.join(sorted(entries))}")
    return entries[name]


def parse_sources(texts: Sequence[str]) -> tuple[Source, ...]:
    """``--from`` values as sources: an ``http(s)://`` folder URL, else a local folder."""
    return tuple(
        Source.from_json({"kind": "url", "url": text}, text)
        if text.startswith(("http://", "https://"))
        else Source("package", str(Path(text).expanduser().resolve()))
        for text in texts
    )


def cache_folder(entry: DatasetEntry) -> Path:
    """``$DIFFGYM_HOME/datasets/<name>`` (default ``~/.cache/diffgym/datasets/<name>``)."""
    return diffgym_home() / "datasets" / entry.name


def fetch(
    name: str,
    registry: str | os.PathLike | None = None,
    extra_sources: Sequence[Source] = (),
    timeout: float = 30.0,
) -> Path:
    """The verified file of dataset ``name``: from the cache, a folder source, or downloaded.

    Raises:
        KeyError: no such dataset.
        ZooUnavailableError: no source had the file (the message says what each one answered).
    """
    entry = find(name, registry)
    sources = (*extra_sources, *entry.sources)
    hint = "" if sources else "; pass a folder or mirror that holds it: --from DIR_OR_URL (extra_sources=)"
    folder = locate_files(
        f"dataset {name!r}{hint}",
        {entry.file: entry.checksum},
        sources,
        cache_folder(entry),
        entry.base,
        timeout,
    )
    return folder / entry.file


def load(
    name: str,
    registry: str | os.PathLike | None = None,
    extra_sources: Sequence[Source] = (),
    timeout: float = 30.0,
) -> MinariDataset:
    """:func:`fetch`, then the file in the Minari store (imported once; the store's copy afterwards)."""
    from diffgym.data import load_dataset

    return load_dataset(str(fetch(name, registry, extra_sources, timeout)))
