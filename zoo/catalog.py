"""The zoo's registry file: every pretrained model by name, its files' SHA-256 and sizes, and where they live.

Names follow rl-zoo3: ``algo/env-dataset`` (``dql/hopper-medium``). ``zoo/registry.json`` ships
with the library; ``$DIFFGYM_ZOO_REGISTRY`` (or ``registry=`` in :mod:`diffgym.zoo`'s functions)
points at another file of the same format. Each model lists its sources, tried in order after the
local cache:

- ``{"kind": "package", "path": "models/dql/hopper-medium"}``: files shipped with the library
  (a path relative to the registry file's folder, or absolute);
- ``{"kind": "hf", "repo_id": "org/name", "revision": "<40-hex commit>"}``: a Hugging Face Hub
  model repo at a pinned revision (``HF_ENDPOINT`` is honoured; ``"repo_type": "dataset"`` for a
  dataset repo);
- ``{"kind": "url", "url": "https://host/folder/"}``: plain HTTP(S), each file at ``url + name``.

>>> entry = ZooEntry.from_json("dql/toy", {
...     "agent": "dql", "env": {"id": "Pendulum-v1"}, "dataset": "toy",
...     "files": {"config.json": {"sha256": "0" * 64, "size": 2}},
...     "sources": [{"kind": "url", "url": "https://example.org/dql-toy/"}]})
>>> entry.sources[0].kind, entry.files["config.json"].size
('url', 2)
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffgym.serialization import ModelFileError
from diffgym.zoo.format import MODEL_FILES, FileEntry

#: the registry file that ships with the library
SHIPPED_REGISTRY = Path(__file__).parent / "registry.json"
REGISTRY_VARIABLE = "DIFFGYM_ZOO_REGISTRY"
REGISTRY_FORMAT = "diffgym-zoo-registry/1"
SOURCE_KINDS = ("package", "hf", "url")
KINDS = ("agent", "generator")  # what a registry entry holds (an entry without "kind": an agent)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class ZooUnavailableError(OSError):
    """No source could provide a model's files; the message says what each source answered."""


@dataclass(frozen=True)
class Source:
    """Where a model's files live (see the module docstring for the kinds)."""

    kind: str
    location: str  # package: a folder; hf: the repo id; url: the base URL
    revision: str | None = None  # hf: the pinned commit
    repo_type: str = "model"  # hf: "model" or "dataset"

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Source:
        kind = data.get("kind")
        if kind == "package":
            return cls(kind, str(data["path"]))
        if kind == "hf":
            revision = str(data.get("revision", ""))
            if not _COMMIT.fullmatch(revision):
                raise ValueError(f"{where}: a Hub source needs a pinned 40-hex commit, not {revision!r}")
            return cls(kind, str(data["repo_id"]), revision, str(data.get("repo_type", "model")))
        if kind == "url":
            url = str(data["url"])
            return cls(kind, url if url.endswith("/") else url + "/")
        raise ValueError(f"{where}: source kind {kind!r} is not one of {', '.join(SOURCE_KINDS)}")

    def describe(self) -> str:
        if self.kind == "hf":
            return f"Hugging Face Hub {self.location}@{self.revision}"
        return f"{'shipped files' if self.kind == 'package' else 'URL'} {self.location}"


@dataclass(frozen=True)
class ZooEntry:
    """One model of the registry."""

    name: str
    agent: str
    env_id: str
    dataset: str
    files: dict[str, FileEntry]
    sources: tuple[Source, ...]
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # score, returns, budget: what `zoo list` shows
    base: Path = Path(".")  # the registry file's folder, which package paths are relative to
    #: "agent", or "generator": a transition model (``agent`` names its kind, e.g. "synther"), which
    #: does not act; its score is that of an agent trained on its data
    kind: str = "agent"

    @property
    def acts(self) -> bool:
        """Whether the model is an agent (its ``agent`` is a registered agent's name)."""
        return self.kind == "agent"

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any], base: Path = Path(".")) -> ZooEntry:
        """An entry from its JSON; ``ValueError`` naming the model for anything malformed."""
        where = f"zoo model {name!r}"
        check_name(name)
        try:
            files = {
                file: file_entry(value, f"{where}, file {file!r}") for file, value in data["files"].items()
            }
            if set(files) != set(MODEL_FILES):  # every file is checked, and no name leads elsewhere
                raise ValueError(f"{where}: lists files {sorted(files)}, not exactly {sorted(MODEL_FILES)}")
            sources = tuple(
                Source.from_json(source, f"{where}, source {i}") for i, source in enumerate(data["sources"])
            )
            env, kind = data["env"], str(data.get("kind", "agent"))
            if kind not in KINDS:
                raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
            return cls(
                name=name,
                agent=str(data["agent"]),
                env_id=str(env["id"]),
                dataset=str(data["dataset"]),
                files=files,
                sources=sources,
                env_kwargs=dict(env.get("kwargs") or {}),
                summary=dict(data.get("summary") or {}),
                base=base,
                kind=kind,
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{where}: malformed registry entry ({type(error).__name__}: {error})"
            ) from error

    def to_json(self) -> dict[str, Any]:
        sources: list[dict[str, Any]] = []
        for source in self.sources:
            if source.kind == "package":
                sources.append({"kind": "package", "path": source.location})
            elif source.kind == "hf":
                hub = {"kind": "hf", "repo_id": source.location, "revision": source.revision}
                sources.append(hub | ({} if source.repo_type == "model" else {"repo_type": source.repo_type}))
            else:
                sources.append({"kind": "url", "url": source.location})
        return {
            **({} if self.acts else {"kind": self.kind}),
            "agent": self.agent,
            "env": {"id": self.env_id, "kwargs": self.env_kwargs},
            "dataset": self.dataset,
            "summary": self.summary,
            "files": {file: {"sha256": e.sha256, "size": e.size} for file, e in self.files.items()},
            "sources": sources,
        }

    def package_folder(self, source: Source) -> Path:
        """A package source's folder (relative paths start at the registry file's folder)."""
        return source_folder(source, self.base)


def source_folder(source: Source, base: Path) -> Path:
    """A package source's folder (a relative path starts at ``base``, the registry file's folder)."""
    path = Path(source.location)
    return path if path.is_absolute() else base / path


def check_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a zoo name: ``algo/env-dataset``, two plain path parts."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"zoo model {name!r}: a name is 'algo/env-dataset' (lowercase algo; letters, digits, _ . -; "
            "each part starting with a letter or digit)"
        )


def registry_path(registry: str | os.PathLike | None = None) -> Path:
    """The registry file in use: ``registry``, else ``$DIFFGYM_ZOO_REGISTRY``, else the shipped one."""
    return Path(registry or os.environ.get(REGISTRY_VARIABLE) or SHIPPED_REGISTRY)


def read_registry(registry: str | os.PathLike | None = None) -> dict[str, ZooEntry]:
    """Every model of a registry file, by name.

    Raises:
        ModelFileError: the file is missing, not JSON, or of another format; an entry is malformed.
    """
    path = registry_path(registry)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelFileError(f"zoo registry {path}: no such file") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"zoo registry {path}: unreadable ({error})") from error
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise ModelFileError(f"zoo registry {path}: not a {REGISTRY_FORMAT} file")
    try:
        return {name: ZooEntry.from_json(name, entry, path.parent) for name, entry in data["models"].items()}
    except ValueError as error:
        raise ModelFileError(f"zoo registry {path}: {error}") from error


def write_registry(entries: Mapping[str, ZooEntry], registry: str | os.PathLike | None = None) -> Path:
    """Write ``entries`` (sorted by name) as the registry file; atomic.

    Raises:
        ValueError: an entry would not read back (a malformed name, files other than the model's).
    """
    from diffgym.serialization import atomic_file

    path = registry_path(registry)
    models = {name: entries[name].to_json() for name in sorted(entries)}
    for name, entry in models.items():  # what is written must read back: ValueError naming the model
        ZooEntry.from_json(name, entry, path.parent)
    data = {"format": REGISTRY_FORMAT, "models": models}
    with atomic_file(path) as file:
        file.write((json.dumps(data, indent=2) + "\n").encode())
    return path


def find(name: str, registry: str | os.PathLike | None = None) -> ZooEntry:
    """The model called ``name``.

    Raises:
        KeyError: none; the message names the close names, or all of them.
    """
    entries = read_registry(registry)
    if name in entries:
        return entries[name]
    near = difflib.get_close_matches(name, list(entries), n=5, cutoff=0.5)
    listed = near or sorted(entries)
    hint = "did you mean" if near else "the zoo has"
    raise KeyError(f"no zoo model named {name!r}; {hint}: {', '.join(listed) or 'no models yet'}")


def file_entry(value: Mapping[str, Any], where: str) -> FileEntry:
    sha256, size = str(value["sha256"]), value["size"]
    if not _SHA256.fullmatch(sha256) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{where}: needs a 64-hex sha256 and a size in bytes")
    return FileEntry(sha256, size)
