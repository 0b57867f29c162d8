"""Model files: one zip that is safe to load.

A diffgym model file holds ``diffgym.json`` (format version, class name, hyperparameters, spaces,
counters — plain JSON) and one ``<name>.pt`` member per group of tensors (state dicts), each
loaded with ``torch.load(weights_only=True)``: nothing in the file is ever executed, unlike
pickle-based formats. The JSON lists every member's SHA-256, so a corrupt, truncated or edited
file is refused with an error naming the member. Saving writes a temporary file beside the
target and renames it over the target only when complete, so a crash never leaves a
half-written file in place of a good one.

>>> import gymnasium as gym
>>> space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "id": gym.spaces.Discrete(3)})
>>> space_from_json(space_to_json(space)) == space
True
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from gymnasium import spaces

FORMAT_VERSION = 1
MANIFEST = "diffgym.json"


class ModelFileError(ValueError):
    """A model file that cannot be trusted: not a zip, missing parts, corrupt or tampered."""


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a Gymnasium space (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(sub) for sub in space.spaces]}
    raise TypeError(f"cannot save a space of type {type(space).__name__}")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_json`."""
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        low, high = np.array(data["low"], dtype=dtype), np.array(data["high"], dtype=dtype)
        return spaces.Box(low, high, tuple(data["shape"]), dtype=dtype)  # type: ignore[arg-type]
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({key: space_from_json(sub) for key, sub in data["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(sub) for sub in data["spaces"]])
    raise ModelFileError(f"unknown space type {kind!r} in model file")


def model_path(path: str | os.PathLike) -> Path:
    """SB3's convention: ``save("name")`` writes ``name.zip``."""
    path = Path(path)
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only once it is completely written and synced.

    It is written beside ``path`` under a temporary name; if anything fails before the end, the
    partial file is removed and whatever was at ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def save_model_file(path: str | os.PathLike, manifest: dict[str, Any], members: dict[str, Any]) -> Path:
    """Write ``manifest`` (JSON-able) and ``members`` (name -> tensors / state dicts) atomically."""
    target = model_path(path)
    blobs = {f"{name}.pt": _torch_bytes(value) for name, value in members.items()}
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "checksums": {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()},
    }
    with atomic_file(target) as file, zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
        for name, blob in blobs.items():
            archive.writestr(name, blob)
    return target


def load_model_file(
    path: str | os.PathLike, map_location: torch.device | str = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify a model file: ``(manifest, members)``; raises :class:`ModelFileError`."""
    target = model_path(path)
    if not target.exists():
        raise FileNotFoundError(f"no model file at {target}")
    try:
        with zipfile.ZipFile(target) as archive:
            manifest = _read_manifest(archive, target)
            members = {
                name.removesuffix(".pt"): _read_member(archive, name, digest, target, map_location)
                for name, digest in manifest["checksums"].items()
            }
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{target} is not a diffgym model file (not a valid zip: {error})") from error
    except (zlib.error, EOFError) as error:  # a flipped byte inside a compressed member
        raise ModelFileError(f"{target} is corrupt: a member does not decompress ({error})") from error
    return manifest, members


def _torch_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _read_manifest(archive: zipfile.ZipFile, target: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError as error:
        raise ModelFileError(f"{target} has no {MANIFEST}: not a diffgym model file") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{target}: {MANIFEST} is not valid JSON ({error})") from error
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{target}: unsupported model format version {version!r} (expected {FORMAT_VERSION})"
        )
    if not isinstance(manifest.get("checksums"), dict):
        raise ModelFileError(f"{target}: {MANIFEST} lists no member checksums")
    return manifest


def _read_member(
    archive: zipfile.ZipFile, name: str, digest: str, target: Path, map_location: torch.device | str
) -> Any:
    try:
        blob = archive.read(name)
    except KeyError as error:
        raise ModelFileError(f"{target}: member {name} is missing") from error
    except zipfile.BadZipFile as error:  # a member whose compressed data or CRC is damaged
        raise ModelFileError(f"{target}: member {name} is corrupt ({error})") from error
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ModelFileError(f"{target}: member {name} does not match its checksum (corrupt or tampered)")
    try:
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ModelFileError(
            f"{target}: member {name} holds something other than tensors ({error})"
        ) from error
