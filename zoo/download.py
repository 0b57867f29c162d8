"""Downloads that are verified by SHA-256 and size before they count as finished.

Two sources: a plain URL (:func:`fetch_url`, standard library, ``http://`` and ``https://``) and a
file of a Hugging Face Hub repo at a pinned commit (:func:`fetch_hf`, through ``huggingface_hub``).
Both keep the same guarantees:

- **A partial, truncated, stalled or tampered download is never taken for a finished file.** Bytes
  arrive in a temporary file beside the target; the target is written only by one ``os.replace``
  (atomic) of a file whose size and SHA-256 were just checked, so it holds nothing until it holds
  the verified file. A target that is there but does not verify (a corrupt cache) is removed and
  downloaded again, never returned.
- **A verified target costs no network access**: it is hashed and returned, and nothing is written.
- **An interrupted download resumes** (:func:`fetch_url`): the bytes received so far stay in
  ``<target>.<sha256[:16]>.part``, and the next call asks for the rest with an HTTP ``Range`` request (a server
  that ignores it sends the whole file again, which replaces the partial; one that cannot continue
  it makes the partial go, and the next call starts over). A server that sends another number of
  bytes than expected, or bytes whose SHA-256 differs, is refused with
  :class:`~diffgym.serialization.ModelFileError` and its bytes are deleted; a network failure is a
  :class:`DownloadError`, which keeps them for the next attempt.
- **Concurrent calls for one target** (two processes loading the same model) take turns on a lock
  file, ``<target>.lock``, left beside it: the second finds the first one's verified file instead
  of writing into the same partial file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from filelock import FileLock

import diffgym
from diffgym.serialization import ModelFileError

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_CONTENT_RANGE_START = re.compile(r"bytes (\d+)-")
USER_AGENT = f"diffgym/{diffgym.__version__}"


class DownloadError(OSError):
    """A download that did not finish (network error, HTTP error status, stall past the timeout).

    :func:`fetch_url` keeps the partial file so that the next attempt resumes.
    """


def verify_file(path: Path, sha256: str, size: int) -> None:
    """Check that ``path`` holds exactly ``size`` bytes whose SHA-256 is ``sha256``.

    The size is checked first, so a file of the wrong size is not hashed; the hash streams in 1 MiB
    chunks.

    Args:
        path: the file.
        sha256: the expected SHA-256, 64 hex digits.
        size: the expected size in bytes.

    Raises:
        ModelFileError: the size or the SHA-256 differs (the message names the path, what was
            expected and what was found).
        FileNotFoundError: there is no file at ``path``.
    """
    actual_size = os.stat(path).st_size
    if actual_size != size:
        raise ModelFileError(f"{path}: expected {size} bytes, got {actual_size}")
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise ModelFileError(f"{path}: tampered or corrupt: expected sha256 {sha256.lower()}, got {actual}")


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file, hashed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_url(url: str, target: Path, sha256: str, size: int, *, timeout: float = 30.0) -> Path:
    """Download ``url`` into the file ``target`` (parent folders are created) and verify it.

    Bytes stream into :func:`partial_path` (``<target>.<sha256[:16]>.part``); a ``.part`` shorter than ``size`` left by an earlier
    attempt is continued with a ``Range`` request. Only a verified file is moved into place.

    Args:
        url: an ``http://`` or ``https://`` address; redirects are followed.
        target: where the verified file goes; returned at once, without network access, if it is
            already there and verifies.
        sha256: the expected SHA-256, 64 hex digits.
        size: the expected size in bytes.
        timeout: seconds to wait for the connection and for each read; a server that stops sending
            for longer fails the attempt.

    Raises:
        DownloadError: the attempt did not finish (network error, HTTP error status, stall, the
            connection closed early); the bytes received so far are kept for the next attempt.
        ModelFileError: the server sends another number of bytes than ``size`` (declared in its
            ``Content-Length``, or more bytes than ``size`` sent), or ``size`` bytes whose SHA-256
            differs (tampered or corrupt); the partial file is removed.
        ValueError: ``sha256`` is not 64 hex digits or ``size`` is negative.
    """
    _check_expected(sha256, size)
    target = Path(target)
    return _fetch_once(target, sha256, size, lambda: _download_url(url, target, sha256, size, timeout))


def fetch_hf(
    repo_id: str,
    filename: str,
    revision: str,
    target: Path,
    sha256: str,
    size: int,
    *,
    endpoint: str | None = None,
    timeout: float = 30.0,
    repo_type: str = "model",
) -> Path:
    """Download ``filename`` of the Hugging Face repo ``repo_id`` at commit ``revision``.

    Through ``huggingface_hub.hf_hub_download``, into a temporary folder beside ``target`` (so
    ``huggingface_hub``'s own cache is neither read nor written); the file is verified, moved into
    place with ``os.replace``, and the temporary folder is removed whatever happens. A transfer
    that breaks off is resumed by ``huggingface_hub`` within the call (up to 5 times), not across
    calls.

    Args:
        repo_id: ``"owner/name"``.
        filename: the file's path in the repo.
        revision: the commit, 40 hex digits (a branch or tag can move, so it is refused).
        target: where the verified file goes; returned at once, without network access, if it is
            already there and verifies.
        sha256: the expected SHA-256, 64 hex digits.
        size: the expected size in bytes.
        endpoint: the Hub's address; default: the ``HF_ENDPOINT`` environment variable as set now
            (``huggingface_hub`` itself reads it only when imported), else https://huggingface.co.
        timeout: seconds to wait for the Hub's answer about the file (its HEAD request). The
            transfer uses ``huggingface_hub``'s read timeout, ``HF_HUB_DOWNLOAD_TIMEOUT`` (10 s
            unless set before it is imported); ``HF_HUB_ETAG_TIMEOUT``, if set, overrides ``timeout``.
        repo_type: ``"model"`` (zoo models) or ``"dataset"`` (datasets).

    Raises:
        DownloadError: the Hub could not be reached, answered an error status (404 for a file or
            revision it does not have), or the transfer broke off; nothing is kept.
        ModelFileError: the downloaded file's size or SHA-256 differs; nothing is kept.
        ValueError: ``revision`` is not a 40-hex commit, ``sha256`` is not 64 hex digits, or
            ``size`` is negative.
    """
    if not _COMMIT.fullmatch(revision):
        raise ValueError(
            f"revision must be a 40-hex commit (a branch or tag is not pinned), got {revision!r}"
        )
    _check_expected(sha256, size)
    target = Path(target)
    return _fetch_once(
        target,
        sha256,
        size,
        lambda: _download_hf(repo_id, filename, revision, target, sha256, size, endpoint, timeout, repo_type),
    )


def _check_expected(sha256: str, size: int) -> None:
    if not _SHA256.fullmatch(sha256.lower()):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")


def _fetch_once(target: Path, sha256: str, size: int, download: Callable[[], None]) -> Path:
    """``target`` if it verifies; else ``download()`` (which puts the verified file there) under a lock.

    The lock, ``<target>.lock``, makes concurrent calls for one target take turns: the second one
    finds the first one's file. The check before it writes nothing, so a verified file in a
    read-only folder is returned too.
    """
    if _is_verified(target, sha256, size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(_sibling(target, ".lock")):
        if not _is_verified(target, sha256, size):  # else another process finished it while we waited
            target.unlink(missing_ok=True)  # a corrupt copy: never left in place of the file
            download()
    return target


def _is_verified(path: Path, sha256: str, size: int) -> bool:
    if not path.is_file():
        return False
    try:
        verify_file(path, sha256, size)
    except ModelFileError:
        return False
    return True


def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(target.name + suffix)


def partial_path(target: Path, sha256: str) -> Path:
    """Where the bytes of an unfinished download of ``target`` wait: ``<target>.<sha256[:16]>.part``.

    The expected hash is in the name, so a partial of another version of the file (an older
    registry, another mirror's file) is never resumed into this one."""
    return _sibling(target, f".{sha256.lower()[:16]}.part")


def _download_url(url: str, target: Path, sha256: str, size: int, timeout: float) -> None:
    partial = partial_path(target, sha256)
    offset = _resume_offset(partial, size)
    if offset < size or not partial.is_file():  # (an empty file is downloaded too)
        _stream(url, partial, offset, size, timeout)
    _verify_or_remove(partial, sha256, size)
    os.replace(partial, target)


def _resume_offset(partial: Path, size: int) -> int:
    """How many bytes of an earlier attempt ``partial`` holds; one longer than ``size`` is removed."""
    length = partial.stat().st_size if partial.is_file() else 0
    if length > size:
        partial.unlink()
        return 0
    return length


def _verify_or_remove(partial: Path, sha256: str, size: int) -> None:
    try:
        verify_file(partial, sha256, size)
    except ModelFileError:
        partial.unlink()
        raise


def _stream(url: str, partial: Path, offset: int, size: int, timeout: float) -> None:
    """Write the bytes after ``offset`` into ``partial``, or all ``size`` bytes if the server sends all."""
    with _open(url, partial, offset, timeout) as response:
        start = _body_start(response, url, partial, offset)
        expected = size - start
        _refuse_other_length(response, url, partial, expected)
        with open(partial, "ab" if start else "wb") as file:
            received = _copy_body(response, file, expected, url)
        if received < expected:
            raise DownloadError(
                f"{url}: the connection closed after {start + received} of {size} bytes;"
                f" they are kept in {partial} to resume"
            )
        if _read(response, 1, url):
            _refuse(partial, f"{url}: the server sends more than the expected {size} bytes")


def _open(url: str, partial: Path, offset: int, timeout: float) -> Any:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
            partial.unlink()  # the server's file is shorter than our partial: start over next time
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise DownloadError(f"{url}: {getattr(error, 'reason', error)}") from error


def _body_start(response: Any, url: str, partial: Path, offset: int) -> int:
    """Where the body goes in the file: ``offset`` on a 206 that continues the partial, 0 on a 200."""
    if response.status != HTTPStatus.PARTIAL_CONTENT:
        return 0
    content_range = response.headers.get("Content-Range", "")
    match = _CONTENT_RANGE_START.match(content_range)
    if match is None or int(match.group(1)) != offset:
        partial.unlink()
        raise DownloadError(
            f"{url}: asked for bytes {offset}- but got Content-Range {content_range!r};"
            " the partial file is removed, the next attempt starts over"
        )
    return offset


def _refuse_other_length(response: Any, url: str, partial: Path, expected: int) -> None:
    """Refuse, before reading it, a body whose declared length is not the number of bytes missing.

    (A server that declares the right length and then closes early is a :class:`DownloadError`.)
    """
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) != expected:
        _refuse(partial, f"{url}: the server sends {declared} bytes where {expected} are expected")


def _refuse(partial: Path, message: str) -> NoReturn:
    partial.unlink(missing_ok=True)
    raise ModelFileError(message)


def _copy_body(response: Any, file: BinaryIO, expected: int, url: str) -> int:
    """Copy at most ``expected`` bytes; return how many came before the server closed."""
    received = 0
    while received < expected:
        chunk = _read(response, min(_CHUNK, expected - received), url)
        if not chunk:
            break
        file.write(chunk)
        received += len(chunk)
    return received


def _read(response: Any, amount: int, url: str) -> bytes:
    """Up to ``amount`` bytes, as soon as any are there (so bytes before a stall reach the partial)."""
    try:
        return bytes(response.read1(amount))
    except (http.client.HTTPException, OSError) as error:
        raise DownloadError(
            f"{url}: the download broke off ({error}); what arrived is kept to resume"
        ) from error


def _download_hf(
    repo_id: str,
    filename: str,
    revision: str,
    target: Path,
    sha256: str,
    size: int,
    endpoint: str | None,
    timeout: float,
    repo_type: str,
) -> None:
    import httpx2  # huggingface_hub's HTTP client; both are imported only for a Hub download
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import XetDownloadError

    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as folder:
        try:
            downloaded = hf_hub_download(
                repo_id,
                filename,
                repo_type=repo_type,
                revision=revision,
                local_dir=folder,
                cache_dir=folder,  # else huggingface_hub looks for a copy in ~/.cache/huggingface
                endpoint=(endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None,
                etag_timeout=timeout,
                library_name="diffgym",
                library_version=diffgym.__version__,
            )
        except (OSError, httpx2.HTTPError, XetDownloadError) as error:
            cause = f" ({error.__cause__})" if error.__cause__ else ""
            raise DownloadError(
                f"could not download {filename} of the Hugging Face repo {repo_id} at {revision}: {error}{cause}"
            ) from error
        verify_file(Path(downloaded), sha256, size)
        os.replace(downloaded, target)
