"""Finding a zoo model's files: the local cache, then the files shipped with the library, then remote.

A folder counts only when every file the registry lists is there with its size and SHA-256. A
remote file is streamed to a temporary file, verified, and only then moved into the cache
(:mod:`diffgym.zoo.download`), so the cache never holds a partial or tampered file, and a download
that broke off resumes where it stopped. The cache is ``$DIFFGYM_HOME/zoo`` (default
``~/.cache/diffgym/zoo``), one folder per model name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from diffgym.serialization import ModelFileError
from diffgym.zoo.catalog import Source, ZooEntry, ZooUnavailableError
from diffgym.zoo.download import DownloadError, fetch_hf, fetch_url
from diffgym.zoo.format import verify_entry

HOME_VARIABLE = "DIFFGYM_HOME"


def cache_root() -> Path:
    """``$DIFFGYM_HOME/zoo``, default ``~/.cache/diffgym/zoo``."""
    home = os.environ.get(HOME_VARIABLE)
    return (Path(home) if home else Path.home() / ".cache" / "diffgym") / "zoo"


def cache_folder(entry: ZooEntry) -> Path:
    """Where ``entry``'s files are cached: ``<cache>/<algo>/<env-dataset>``."""
    return cache_root().joinpath(*entry.name.split("/"))


def where(entry: ZooEntry) -> str | None:
    """``"cache"`` or ``"shipped"`` if the model is complete and verified there, else None (remote only)."""
    if _complete(cache_folder(entry), entry):
        return "cache"
    if any(_complete(entry.package_folder(s), entry) for s in entry.sources if s.kind == "package"):
        return "shipped"
    return None


def locate(entry: ZooEntry, timeout: float = 30.0) -> Path:
    """A folder holding every file of ``entry``, verified: the cache, the shipped files, else downloaded.

    Raises:
        ZooUnavailableError: no source had it; the message says what each one answered (an
            unverifiable file is never used, and the attempt's failure is listed).
    """
    cached = cache_folder(entry)
    if _complete(cached, entry):
        return cached
    failures: list[str] = []
    for source in entry.sources:
        try:
            if source.kind == "package":
                folder = entry.package_folder(source)
                _verify_all(folder, entry)
                return folder
            _download_all(entry, source, cached, timeout)
            return cached
        except (ModelFileError, DownloadError, ValueError) as error:
            failures.append(f"{source.describe()}: {error}")
    tried = "\n  ".join(failures) or "the registry lists no source"
    raise ZooUnavailableError(f"zoo model {entry.name!r} is not in the cache ({cached}), and\n  {tried}")


def copy_to(entry: ZooEntry, target: Path, timeout: float = 30.0) -> Path:
    """Copy ``entry``'s verified files into ``target`` (what a maintainer uploads to the Hub)."""
    folder = locate(entry, timeout)
    target.mkdir(parents=True, exist_ok=True)
    for file in entry.files:
        shutil.copyfile(folder / file, target / file)
    _verify_all(target, entry)
    return target


def _complete(folder: Path, entry: ZooEntry) -> bool:
    try:
        _verify_all(folder, entry)
    except ModelFileError:
        return False
    return True


def _verify_all(folder: Path, entry: ZooEntry) -> None:
    for file, expected in entry.files.items():
        verify_entry(folder / file, expected)


def _download_all(entry: ZooEntry, source: Source, folder: Path, timeout: float) -> None:
    for file, expected in entry.files.items():
        target = folder / file
        if source.kind == "hf":
            assert source.revision is not None  # Source.from_json requires it
            fetch_hf(
                source.location,
                file,
                source.revision,
                target,
                expected.sha256,
                expected.size,
                timeout=timeout,
            )
        else:
            fetch_url(source.location + file, target, expected.sha256, expected.size, timeout=timeout)
