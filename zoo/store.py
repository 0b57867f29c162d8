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
from collections.abc import Mapping, Sequence
from pathlib import Path

from diffgym.serialization import ModelFileError
from diffgym.zoo.catalog import Source, ZooEntry, ZooUnavailableError, source_folder
from diffgym.zoo.download import DownloadError, fetch_hf, fetch_url
from diffgym.zoo.format import FileEntry, verify_entry

HOME_VARIABLE = "DIFFGYM_HOME"


def diffgym_home() -> Path:
    """``$DIFFGYM_HOME``, default ``~/.cache/diffgym``: the zoo's and the datasets' caches live in it."""
    home = os.environ.get(HOME_VARIABLE)
    return Path(home) if home else Path.home() / ".cache" / "diffgym"


def cache_root() -> Path:
    """``$DIFFGYM_HOME/zoo``, default ``~/.cache/diffgym/zoo``."""
    return diffgym_home() / "zoo"


def cache_folder(entry: ZooEntry) -> Path:
    """Where ``entry``'s files are cached: ``<cache>/<algo>/<env-dataset>``."""
    return cache_root().joinpath(*entry.name.split("/"))


def where(entry: ZooEntry) -> str | None:
    """``"cache"`` or ``"shipped"`` if the model is complete and verified there, else None (remote only)."""
    if _complete(cache_folder(entry), entry.files):
        return "cache"
    if any(_complete(entry.package_folder(s), entry.files) for s in entry.sources if s.kind == "package"):
        return "shipped"
    return None


def locate(entry: ZooEntry, timeout: float = 30.0) -> Path:
    """A folder holding every file of ``entry``, verified: the cache, the shipped files, else downloaded.

    Raises:
        ZooUnavailableError: no source had it; the message says what each one answered (an
            unverifiable file is never used, and the attempt's failure is listed).
    """
    label = f"zoo model {entry.name!r}"
    return locate_files(label, entry.files, entry.sources, cache_folder(entry), entry.base, timeout)


def locate_files(
    label: str,
    files: Mapping[str, FileEntry],
    sources: Sequence[Source],
    cached: Path,
    base: Path,
    timeout: float = 30.0,
) -> Path:
    """A folder holding ``files``, verified: ``cached``, a local (``package``) source's folder as it is,
    else ``cached`` after downloading from the first remote source that has them all.

    Args:
        label: what the files are, for the error message.
        files: file name -> expected size and SHA-256.
        sources: tried in order (package folders relative to ``base``).
        cached: the cache folder for these files.
        base: what relative package paths start from.
        timeout: seconds a download may stall.

    Raises:
        ZooUnavailableError: no source had them; the message says what each one answered.
    """
    if _complete(cached, files):
        return cached
    failures: list[str] = []
    for source in sources:
        try:
            if source.kind == "package":
                folder = source_folder(source, base)
                if not folder.is_dir():
                    raise ModelFileError(
                        f"{folder} is not there: this install does not ship these files (a wheel carries no "
                        "zoo weights; a clone of the repository does, or a registry with a Hub or URL source)"
                    )
                _verify_all(folder, files)
                return folder
            _download_all(files, source, cached, timeout)
            return cached
        except (ModelFileError, DownloadError, ValueError) as error:
            failures.append(f"{source.describe()}: {error}")
    tried = "\n  ".join(failures) or "the registry lists no source"
    raise ZooUnavailableError(f"{label} is not in the cache ({cached}), and\n  {tried}")


def copy_to(entry: ZooEntry, target: Path, timeout: float = 30.0) -> Path:
    """Copy ``entry``'s verified files into ``target`` (what a maintainer uploads to the Hub)."""
    folder = locate(entry, timeout)
    target.mkdir(parents=True, exist_ok=True)
    for file in entry.files:
        shutil.copyfile(folder / file, target / file)
    _verify_all(target, entry.files)
    return target


def _complete(folder: Path, files: Mapping[str, FileEntry]) -> bool:
    try:
        _verify_all(folder, files)
    except ModelFileError:
        return False
    return True


def _verify_all(folder: Path, files: Mapping[str, FileEntry]) -> None:
    for file, expected in files.items():
        verify_entry(folder / file, expected)


def _download_all(files: Mapping[str, FileEntry], source: Source, folder: Path, timeout: float) -> None:
    for file, expected in files.items():
        target = folder / file
        if not target.resolve().is_relative_to(
            folder.resolve()
        ):  # registries check names; this is the backstop
            raise ValueError(f"file name {file!r} leads out of the cache folder {folder}")
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
                repo_type=source.repo_type,
            )
        else:
            fetch_url(source.location + file, target, expected.sha256, expected.size, timeout=timeout)
