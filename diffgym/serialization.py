"""Model files: one zip that is safe to load, and refused whole when any part of it changed.

A diffgym model file (format 2) holds

- ``diffgym.json``, the manifest: format version, class name, hyperparameters, spaces, action
  bounds, seeds, counters (plain JSON);
- one ``<name>.pt`` member per group of tensors (a state dict), read with
  ``torch.load(weights_only=True)``: nothing in the file is ever executed, unlike pickle-based
  formats;
- ``checksums.json``, the index: the SHA-256 and size of every other member, the manifest
  included.

Loading refuses, with a :class:`ModelFileError` naming the file and the member, a file that is
not a zip; that has a member the index does not list, or lacks one it lists; whose bytes do not
match the index; that does not decompress or decode; or that would expand beyond
:class:`Limits`. Sizes are checked from the zip directory before anything is decompressed, and
again while each member streams through its hash, so an archive bomb never reaches memory.
Files of format 1 (whose manifest had no checksum) are refused with an error naming the version.

What the checksums guard against, exactly: corruption (a flipped bit, a truncated copy) and any
edit by someone who does not deliberately recompute hashes: a member changed, added, removed or
swapped in with a zip tool, the manifest's action bounds changed in a text editor. There is no
secret key, so they are not a signature: whoever recomputes the SHA-256 of an edited member and
writes it into ``checksums.json`` makes a file that loads. Safety from code execution rests on
``weights_only=True`` with torch >= 2.10 (which fixed the known ways around it), not on the
checksums; the size limits hold against deliberate forgers too.

Saving writes a temporary file beside the target and renames it over the target only when
complete, so the path always holds the old or the new file; temporary files that a killed
writer left behind are removed by the next save to the same folder.

>>> import gymnasium as gym
>>> space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "id": gym.spaces.Discrete(3)})
>>> space_from_json(space_to_json(space)) == space
True
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from gymnasium import spaces

FORMAT_VERSION = 2
MANIFEST = "diffgym.json"
INDEX = "checksums.json"
MiB, GiB = 1 << 20, 1 << 30
#: the first torch whose ``weights_only=True`` loading has no known bypass (CVE-2025-32434: 2.6,
#: CVE-2026-24747: 2.10)
SAFE_TORCH = (2, 10)

_MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = MiB


class ModelFileError(ValueError):
    """A model file that cannot be trusted: not a zip, missing parts, corrupt or tampered."""


@dataclass(frozen=True)
class Limits:
    """How far a model file may expand when loaded, checked before anything is decompressed.

    Any file may expand to ``free_bytes`` (512 MiB: far above a Diffusion Policy U-Net, tens of
    MB, or the replay buffer of a 1M-step MuJoCo run with up to ~50-d observations); beyond
    that, to ``max_ratio`` times its size on disk, and never beyond ``max_total_bytes``. Trained
    weights and Adam's moments barely compress (ratio ~1.1), so real models stay far inside a
    ratio of 100, while deflate reaches ~1000 on zeros: a 5 MB file claiming to hold 1 GiB is
    refused, and the memory a file can claim grows only with the bytes its sender had to ship.
    The records inside each tensor member (torch's own zip) count against the same allowance.

    The one real file these defaults refuse is a nearly empty replay buffer with a huge capacity
    (preallocated zeros beyond 512 MiB); load it with ``load_model_file(path,
    limits=Limits(free_bytes=4 * GiB))``, or set ``diffgym.serialization.LIMITS``, the default
    every ``load`` uses. JSON members (manifest, index) are capped at ``max_json_bytes``:
    decoded JSON takes several times its size in memory.
    """

    free_bytes: int = 512 * MiB
    max_ratio: float = 100.0
    max_total_bytes: int = 8 * GiB
    max_json_bytes: int = 64 * MiB
    max_members: int = 64

    def allowance(self, file_size: int) -> int:
        """The bytes a file of ``file_size`` bytes on disk may expand to."""
        return min(self.max_total_bytes, max(self.free_bytes, int(self.max_ratio * file_size)))


#: the limits :func:`load_model_file` applies when given none
LIMITS = Limits()


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
def as_model_file_error(message: str) -> Iterator[None]:
    """Turn any exception inside into a :class:`ModelFileError` reading ``message: <the error>``.

    For code that decodes what a model file holds, where any failure means a bad file: e.g.
    ``with as_model_file_error(f"{path}: member policy.pt does not fit"): policy.load_state_dict(...)``.
    A :class:`ModelFileError` passes unchanged, and ``MemoryError`` too (the machine, not the file).
    """
    try:
        yield
    except (ModelFileError, MemoryError):
        raise
    except Exception as error:
        raise ModelFileError(f"{message} ({type(error).__name__}: {error})") from error


# ---------------------------------------------------------------------------------------- saving

#: a temporary file untouched this long is stale even if its writer's pid looks alive (reused)
STALE_AFTER_S = 600.0
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_PARTIAL = re.compile(r"\..+\.diffgym-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]+\.partial")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only once it is completely written and synced.

    It is written beside ``path`` as ``.<name>.diffgym-<host>-<pid>-<random>.partial``; if anything
    fails before the end, that file is removed and whatever was at ``path`` is left as it was. A
    writer killed outright (SIGKILL, power loss) cannot clean up: after a successful write, such
    leftovers in the folder are removed (see :func:`remove_stale_partials`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.diffgym-{_HOST}-{os.getpid()}-"
    handle, partial = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    _sync_directory(target.parent)
    with contextlib.suppress(OSError):  # the write succeeded; tidying up is best effort
        remove_stale_partials(target.parent)


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of killed writers from ``folder``; returns those removed.

    A file is stale when its writer ran on this host and its pid is gone, or when it has not
    been written for :data:`STALE_AFTER_S` (a live writer writes continuously; this also covers
    writers on other hosts sharing the folder, and reused pids). Other files are never touched.
    """
    removed = []
    for candidate in Path(folder).glob(".*.partial"):
        match = _PARTIAL.fullmatch(candidate.name)
        if match and _is_stale(candidate, match["host"], int(match["pid"])):
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                candidate.unlink()
                removed.append(candidate)
    return removed


def _is_stale(partial: Path, host: str, pid: int) -> bool:
    try:
        idle = time.time() - partial.stat().st_mtime
    except OSError:
        return False
    if idle > STALE_AFTER_S:
        return True
    return host == _HOST and pid != os.getpid() and not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # no harmless probe (signal 0 is CTRL_C_EVENT on Windows): rely on age
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True


def _sync_directory(folder: Path) -> None:
    """Make the rename durable (POSIX); a failure here does not undo the completed write."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_model_file(path: str | os.PathLike, manifest: dict[str, Any], members: dict[str, Any]) -> Path:
    """Write ``manifest`` (JSON-able) and ``members`` (name -> state dict) atomically.

    Every member, the manifest included, is listed with its SHA-256 in ``checksums.json``.
    Member names are letters, digits, ``_``, ``.`` and ``-``; each value is a dict with string
    keys (a state dict, or a dict of them). Warns when the file would need larger
    :class:`Limits` than :data:`LIMITS` to load.
    """
    target = model_path(path)
    blobs = {MANIFEST: json.dumps({**manifest, "format_version": FORMAT_VERSION}, indent=2).encode()}
    for name, value in members.items():
        _check_member(name, value)
        blobs[f"{name}.pt"] = _torch_bytes(value)
    index = {
        "format_version": FORMAT_VERSION,
        "members": {
            name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
            for name, blob in blobs.items()
        },
    }
    index_blob = json.dumps(index, indent=2).encode()
    with atomic_file(target) as file, zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(INDEX, index_blob)
        for name, blob in blobs.items():
            archive.writestr(name, blob)
    _warn_if_over_limits(target, len(index_blob) + sum(map(len, blobs.values())))
    return target


def _check_member(name: object, value: object) -> None:
    if not isinstance(name, str) or not _MEMBER.fullmatch(name):
        raise ValueError(f"model file member name {name!r}: use letters, digits, '_', '.' and '-'")
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise TypeError(
            f"model file member {name!r} must be a dict with string keys (a state dict), "
            f"not {type(value).__name__}"
        )


def _torch_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _warn_if_over_limits(target: Path, expanded: int) -> None:
    size = target.stat().st_size
    if expanded > (allowed := LIMITS.allowance(size)):
        warnings.warn(
            f"{target} expands to {expanded:,} bytes from {size:,} on disk, beyond the {allowed:,} "
            "that loading allows by default: load it with larger diffgym.serialization.Limits",
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Listed:
    """A member as the index lists it."""

    sha256: str
    size: int


def load_model_file(
    path: str | os.PathLike, map_location: torch.device | str = "cpu", limits: Limits | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify a model file: ``(manifest, members)``.

    Args:
        path: the zip (``.zip`` may be left out).
        map_location: where tensors go, as in ``torch.load``.
        limits: how far the file may expand; :data:`LIMITS` when None.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ModelFileError: the file is corrupt, edited, too large or not a diffgym model file.
        RuntimeError: the installed torch is older than :data:`SAFE_TORCH`.
    """
    _require_safe_torch()
    target = model_path(path)
    limits = limits or LIMITS
    try:
        file = target.open("rb")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no model file at {target}") from error
    with file, _open_zip(file, target) as archive:
        file_size = os.fstat(file.fileno()).st_size
        entries = _directory(archive, file_size, target, limits)
        listed = _read_index(archive, entries, target)
        manifest = _decode_manifest(
            _read_verified(archive, entries[MANIFEST], listed[MANIFEST], target), target
        )
        budget = limits.allowance(file_size) - sum(info.file_size for info in entries.values())
        members = {}
        for name in (name for name in listed if name != MANIFEST):
            blob = _read_verified(archive, entries[name], listed[name], target)
            budget -= _inner_expansion(blob, name, target, budget)
            members[name.removesuffix(".pt")] = _decode_member(blob, name, target, map_location)
    return manifest, members


def _require_safe_torch() -> None:
    found = re.match(r"(\d+)\.(\d+)", torch.__version__)
    if found and (int(found[1]), int(found[2])) < SAFE_TORCH:
        raise RuntimeError(
            f"torch {torch.__version__} can be made to run code by a file loaded with weights_only=True "
            f"(CVE-2025-32434, CVE-2026-24747): model files load only with torch >= "
            f"{'.'.join(map(str, SAFE_TORCH))}"
        )


def _open_zip(file: BinaryIO, target: Path) -> zipfile.ZipFile:
    with as_model_file_error(f"{target} is not a valid zip (corrupt, truncated or not a model file)"):
        archive = zipfile.ZipFile(file)
    return archive


def _directory(
    archive: zipfile.ZipFile, file_size: int, target: Path, limits: Limits
) -> dict[str, zipfile.ZipInfo]:
    """The members by name, checked from the zip directory alone: nothing is decompressed yet."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ModelFileError(f"{target} has {len(infos)} members, more than the {limits.max_members} allowed")
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename in entries:
            raise ModelFileError(f"{target} lists member {info.filename} twice (corrupt or tampered)")
        _check_entry(info, target, limits)
        entries[info.filename] = info
    expanded = sum(info.file_size for info in infos)
    if expanded > (allowed := limits.allowance(file_size)):
        raise ModelFileError(
            f"{target} would expand to {expanded:,} bytes from {file_size:,} on disk, beyond the "
            f"{allowed:,} allowed: an archive bomb, or a trusted file that needs larger "
            "diffgym.serialization.Limits"
        )
    return entries


def _check_entry(info: zipfile.ZipInfo, target: Path, limits: Limits) -> None:
    name = info.filename
    if info.flag_bits & 0x1:
        raise ModelFileError(f"{target}: member {name} is encrypted (corrupt, or not a model file)")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ModelFileError(
            f"{target}: member {name} uses compression method {info.compress_type}, which model "
            "files never use (corrupt, or not a model file)"
        )
    if name in (MANIFEST, INDEX) and info.file_size > limits.max_json_bytes:
        raise ModelFileError(
            f"{target}: member {name} declares {info.file_size:,} bytes, beyond the "
            f"{limits.max_json_bytes:,} allowed for JSON"
        )


def _read_index(
    archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], target: Path
) -> dict[str, _Listed]:
    """The index, checked to list exactly the zip's other members, the manifest among them."""
    if INDEX not in entries:
        raise ModelFileError(_without_index(archive, entries, target))
    with as_model_file_error(f"{target}: {INDEX} is not valid JSON"):
        index = json.loads(_read_stream(archive, entries[INDEX], target)[0].getvalue())
    version = index.get("format_version") if isinstance(index, dict) else None
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{target}: unsupported model format version {version!r} (this diffgym reads {FORMAT_VERSION})"
        )
    listed = _parse_index(index.get("members"), target)
    if unlisted := sorted(entries.keys() - listed.keys() - {INDEX}):
        raise ModelFileError(f"{target}: member {unlisted[0]} is not listed in {INDEX} (added or tampered)")
    if missing := sorted(listed.keys() - entries.keys()):
        raise ModelFileError(f"{target}: member {missing[0]} is missing")
    if MANIFEST not in listed:
        raise ModelFileError(f"{target} has no {MANIFEST}: not a diffgym model file")
    return listed


def _without_index(archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], target: Path) -> str:
    """Why a zip without an index is refused: not a model file, or one of format 1."""
    if MANIFEST not in entries:
        return f"{target} has no {MANIFEST}: not a diffgym model file"
    with as_model_file_error(f"{target}: {MANIFEST} is not valid JSON"):
        manifest = json.loads(_read_stream(archive, entries[MANIFEST], target)[0].getvalue())
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version < FORMAT_VERSION:
        return (
            f"{target} is a model file of format version {version}, which this diffgym (format "
            f"{FORMAT_VERSION}) no longer reads: its {MANIFEST} has no checksum, so an edit to it "
            "cannot be detected"
        )
    return f"{target} has no {INDEX}: not a diffgym model file, or a damaged one"


def _parse_index(members: object, target: Path) -> dict[str, _Listed]:
    if not isinstance(members, dict):
        raise ModelFileError(f"{target}: {INDEX} lists no members")
    listed = {}
    for name, entry in members.items():
        valid_name = name == MANIFEST or (
            name.endswith(".pt") and _MEMBER.fullmatch(name.removesuffix(".pt"))
        )
        digest, size = (entry.get("sha256"), entry.get("size")) if isinstance(entry, dict) else (None, None)
        if not valid_name or not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ModelFileError(f"{target}: {INDEX} entry {name!r} is malformed (corrupt or tampered)")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ModelFileError(f"{target}: {INDEX} entry {name!r} is malformed (corrupt or tampered)")
        listed[name] = _Listed(digest, size)
    return listed


def _read_stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> tuple[io.BytesIO, str]:
    """A member's bytes and their SHA-256, read in chunks and never beyond its declared size."""
    name, declared = info.filename, info.file_size
    digest, buffer = hashlib.sha256(), io.BytesIO()
    with as_model_file_error(f"{target}: member {name} is corrupt"), archive.open(info) as stream:
        while chunk := stream.read(_CHUNK):
            if buffer.tell() + len(chunk) > declared:
                raise ModelFileError(
                    f"{target}: member {name} expands beyond the {declared:,} bytes its zip entry "
                    "declares (corrupt, or an archive bomb)"
                )
            digest.update(chunk)
            buffer.write(chunk)
    if buffer.tell() != declared:
        raise ModelFileError(
            f"{target}: member {name} is corrupt: {buffer.tell():,} bytes where its zip entry declares {declared:,}"
        )
    buffer.seek(0)
    return buffer, digest.hexdigest()


def _read_verified(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, listed: _Listed, target: Path
) -> io.BytesIO:
    mismatch = f"{target}: member {info.filename} does not match its checksum"
    if info.file_size != listed.size:
        raise ModelFileError(
            f"{mismatch} ({info.file_size:,} bytes, {INDEX} says {listed.size:,}: corrupt or edited)"
        )
    buffer, digest = _read_stream(archive, info, target)
    if digest != listed.sha256:
        raise ModelFileError(f"{mismatch} (corrupt or edited)")
    return buffer


def _decode_manifest(buffer: io.BytesIO, target: Path) -> dict[str, Any]:
    with as_model_file_error(f"{target}: {MANIFEST} is not valid JSON"):
        manifest = json.loads(buffer.getvalue())
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{target}: {MANIFEST} holds a JSON {type(manifest).__name__}, not an object")
    return manifest


def _inner_expansion(blob: io.BytesIO, name: str, target: Path, budget: int) -> int:
    """How much torch's own zip inside a tensor member expands (torch stores its records: ~0)."""
    size = blob.seek(0, io.SEEK_END)
    blob.seek(0)
    with (
        as_model_file_error(f"{target}: member {name} holds something other than tensors"),
        zipfile.ZipFile(blob) as inner,
    ):
        expansion = max(0, sum(info.file_size for info in inner.infolist()) - size)
    blob.seek(0)
    if expansion > budget:
        raise ModelFileError(
            f"{target}: member {name} holds tensor records that expand by {expansion:,} bytes, beyond "
            "the allowance (an archive bomb, or a trusted file that needs larger diffgym.serialization.Limits)"
        )
    return expansion


def _decode_member(
    blob: io.BytesIO, name: str, target: Path, map_location: torch.device | str
) -> dict[str, Any]:
    with as_model_file_error(f"{target}: member {name} holds something other than tensors"):
        value = torch.load(blob, map_location=map_location, weights_only=True)
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ModelFileError(f"{target}: member {name} holds a {type(value).__name__}, not a state dict")
    return value
