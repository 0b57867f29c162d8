"""Verified downloads (``diffgym.zoo.download``) against HTTP servers on 127.0.0.1 started by each test.

Each server answers per path with a small function (a good file, a truncated, stalled, tampered or
too long one, an error status, a Hugging Face Hub ``resolve`` URL) and records every request, so
the tests can count network accesses and read the ``Range`` and ``User-Agent`` headers sent.
"""

import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from huggingface_hub import constants

import diffgym
from diffgym.serialization import ModelFileError
from diffgym.zoo.download import DownloadError, fetch_hf, fetch_url, partial_path, verify_file

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
SIZE = len(PAYLOAD)
HALF = SIZE // 2
TAMPERED = PAYLOAD[::-1]  # same size, other bytes
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "diffgym/test-model"
HUB_PATH = f"/{REPO}/resolve/{COMMIT}/model.zip"


@dataclass
class Loopback:
    """A running loopback server: its address, what it answers per path, and what it was asked."""

    url: str
    routes: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)  # (method, path, headers), in arrival order

    def methods(self):
        return [method for method, _, _ in self.requests]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # a proxy set in the environment must not see these
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    loopback = Loopback(url="")

    class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection, closed after it
        def do_GET(self):
            loopback.requests.append((self.command, self.path, self.headers))
            loopback.routes.get(self.path, not_found)(self)

        do_HEAD = do_GET

        def log_message(self, format, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    loopback.url = f"http://127.0.0.1:{httpd.server_port}"
    yield loopback
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def reply(handler, status, body=b"", headers=None):
    """Answer ``status`` with ``body`` (none to a HEAD); ``headers`` default to the body's Content-Length."""
    handler.send_response(status)
    for name, value in ({"Content-Length": str(len(body))} if headers is None else headers).items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def not_found(handler):
    reply(handler, 404, b"not found")


def serve(data, *, ranges=True):
    """``data``, or its tail from a ``Range: bytes=N-`` request as a 206 (unless ``ranges`` is False)."""

    def route(handler):
        requested = handler.headers.get("Range")
        if not (ranges and requested):
            return reply(handler, 200, data)
        start = int(requested.removeprefix("bytes=").removesuffix("-"))
        content_range = f"bytes {start}-{len(data) - 1}/{len(data)}"
        reply(
            handler,
            206,
            data[start:],
            {"Content-Length": str(len(data) - start), "Content-Range": content_range},
        )

    return route


def serve_truncated(data):
    """Declare all of ``data``, send its first half, close the connection."""
    return lambda handler: reply(handler, 200, data[: len(data) // 2], {"Content-Length": str(len(data))})


def serve_stalled(data, sent, stall):
    """Declare all of ``data``, send ``sent`` bytes, then stop sending for ``stall`` seconds."""

    def route(handler):
        reply(handler, 200, data[:sent], {"Content-Length": str(len(data))})
        time.sleep(stall)

    return route


def serve_in_two_halves(data, pause):
    """All of ``data`` with a ``pause`` in the middle: long enough for a second client to arrive."""

    def route(handler):
        reply(handler, 200, data[: len(data) // 2], {"Content-Length": str(len(data))})
        time.sleep(pause)
        handler.wfile.write(data[len(data) // 2 :])

    return route


def hub_file(data):
    """A Hub ``resolve`` URL: the headers huggingface_hub's HEAD request requires, and the bytes to a GET."""
    headers = {
        "Content-Length": str(len(data)),
        "X-Repo-Commit": COMMIT,  # else FileMetadataError: "not served by a Hugging Face Hub endpoint"
        "ETag": f'"{hashlib.sha256(data).hexdigest()}"',  # else FileMetadataError (X-Linked-Etag also does)
    }
    return lambda handler: reply(handler, 200, data, headers)


def files_in(folder):
    return sorted(path.name for path in folder.iterdir())


# -- verify_file --------------------------------------------------------------------------------


def test_verify_file_names_the_path_and_what_differs(tmp_path):
    path = tmp_path / "model.zip"
    path.write_bytes(PAYLOAD)
    verify_file(path, SHA256, SIZE)
    with pytest.raises(ModelFileError, match=rf"model\.zip: expected {SIZE + 1} bytes, got {SIZE}"):
        verify_file(path, SHA256, SIZE + 1)
    path.write_bytes(TAMPERED)
    actual = hashlib.sha256(TAMPERED).hexdigest()
    with pytest.raises(ModelFileError, match=f"tampered or corrupt: expected sha256 {SHA256}, got {actual}"):
        verify_file(path, SHA256, SIZE)


@pytest.mark.parametrize(
    ("sha256", "size"), [("abc", SIZE), (SHA256, -1)], ids=["short sha256", "negative size"]
)
def test_an_expectation_that_cannot_be_met_is_refused_before_any_request(server, tmp_path, sha256, size):
    server.routes["/model.zip"] = serve(PAYLOAD)
    with pytest.raises(ValueError):
        fetch_url(server.url + "/model.zip", tmp_path / "model.zip", sha256, size)
    assert server.requests == []


# -- fetch_url ----------------------------------------------------------------------------------


def test_good_file_lands_verified_and_a_second_call_stays_offline(server, tmp_path):
    server.routes["/model.zip"] = serve(PAYLOAD)
    target = tmp_path / "zoo" / "algo" / "model.zip"  # folders that do not exist yet
    assert fetch_url(server.url + "/model.zip", target, SHA256, SIZE) == target
    assert target.read_bytes() == PAYLOAD
    assert files_in(target.parent) == ["model.zip", "model.zip.lock"]  # no .part left
    assert server.requests[0][2]["User-Agent"] == f"diffgym/{diffgym.__version__}"

    assert fetch_url(server.url + "/model.zip", target, SHA256, SIZE) == target
    assert len(server.requests) == 1


def test_an_empty_file_is_downloaded_too(server, tmp_path):
    server.routes["/empty"] = serve(b"")
    target = tmp_path / "empty"
    fetch_url(server.url + "/empty", target, hashlib.sha256(b"").hexdigest(), 0)
    assert target.read_bytes() == b""
    assert server.methods() == ["GET"]


def test_truncated_download_keeps_its_half_and_the_next_call_resumes(server, tmp_path):
    target, partial = tmp_path / "model.zip", partial_path(tmp_path / "model.zip", SHA256)
    server.routes["/model.zip"] = serve_truncated(PAYLOAD)
    with pytest.raises(DownloadError, match=f"closed after {HALF} of {SIZE} bytes"):
        fetch_url(server.url + "/model.zip", target, SHA256, SIZE)
    assert not target.exists()
    assert partial.read_bytes() == PAYLOAD[:HALF]

    server.routes["/model.zip"] = serve(PAYLOAD)
    fetch_url(server.url + "/model.zip", target, SHA256, SIZE)
    assert server.requests[-1][2]["Range"] == f"bytes={HALF}-"
    assert target.read_bytes() == PAYLOAD
    assert not partial.exists()


def test_a_server_that_ignores_range_replaces_the_partial(server, tmp_path):
    target, partial = tmp_path / "model.zip", partial_path(tmp_path / "model.zip", SHA256)
    partial.write_bytes(b"x" * HALF)  # bytes that must not stay in front of the file
    server.routes["/model.zip"] = serve(PAYLOAD, ranges=False)
    fetch_url(server.url + "/model.zip", target, SHA256, SIZE)
    assert server.requests[0][2]["Range"] == f"bytes={HALF}-"
    assert target.read_bytes() == PAYLOAD


def test_a_partial_longer_than_the_file_is_discarded(server, tmp_path):
    (partial_path(tmp_path / "model.zip", SHA256)).write_bytes(PAYLOAD + b"x")
    server.routes["/model.zip"] = serve(PAYLOAD)
    fetch_url(server.url + "/model.zip", tmp_path / "model.zip", SHA256, SIZE)
    assert server.requests[0][2]["Range"] is None
    assert (tmp_path / "model.zip").read_bytes() == PAYLOAD


def cannot_continue(handler):
    reply(handler, 416, b"")


def restarts_from_zero(handler):
    reply(handler, 206, PAYLOAD, {"Content-Length": str(SIZE), "Content-Range": f"bytes 0-{SIZE - 1}/{SIZE}"})


@pytest.mark.parametrize("route", [cannot_continue, restarts_from_zero], ids=["416", "206 of another range"])
def test_a_partial_the_server_cannot_continue_is_dropped_and_the_next_call_starts_over(
    server, tmp_path, route
):
    target, partial = tmp_path / "model.zip", partial_path(tmp_path / "model.zip", SHA256)
    partial.write_bytes(PAYLOAD[:HALF])
    server.routes["/model.zip"] = route
    with pytest.raises(DownloadError):
        fetch_url(server.url + "/model.zip", target, SHA256, SIZE)
    assert not partial.exists()
    assert not target.exists()

    server.routes["/model.zip"] = serve(PAYLOAD)
    fetch_url(server.url + "/model.zip", target, SHA256, SIZE)
    assert server.requests[-1][2]["Range"] is None
    assert target.read_bytes() == PAYLOAD


def test_tampered_file_is_refused_and_nothing_is_left(server, tmp_path):
    server.routes["/model.zip"] = serve(TAMPERED)
    with pytest.raises(ModelFileError, match=f"tampered or corrupt: expected sha256 {SHA256}"):
        fetch_url(server.url + "/model.zip", tmp_path / "model.zip", SHA256, SIZE)
    assert files_in(tmp_path) == ["model.zip.lock"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (PAYLOAD + b"extra", {"Content-Length": str(SIZE + 5)}),
        (PAYLOAD + b"extra", {}),  # no Content-Length: the body ends when the server closes
        (PAYLOAD[:-1], {"Content-Length": str(SIZE - 1)}),
    ],
    ids=["longer, declared", "longer, undeclared", "shorter, declared"],
)
def test_a_body_of_another_length_is_refused_and_nothing_is_left(server, tmp_path, body, headers):
    server.routes["/model.zip"] = lambda handler: reply(handler, 200, body, headers)
    with pytest.raises(ModelFileError, match=f"{SIZE}"):
        fetch_url(server.url + "/model.zip", tmp_path / "model.zip", SHA256, SIZE)
    assert files_in(tmp_path) == ["model.zip.lock"]


def test_stalled_download_fails_within_the_timeout_and_keeps_what_came(server, tmp_path):
    target, partial = tmp_path / "model.zip", partial_path(tmp_path / "model.zip", SHA256)
    server.routes["/model.zip"] = serve_stalled(PAYLOAD, sent=1000, stall=1.0)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        fetch_url(server.url + "/model.zip", target, SHA256, SIZE, timeout=0.5)
    assert time.monotonic() - started < 3
    assert not target.exists()
    assert partial.read_bytes() == PAYLOAD[:1000]  # what arrived before the stall, ready to resume


@pytest.mark.parametrize("status", [404, 500])
def test_an_http_error_status_is_a_download_error_naming_it(server, tmp_path, status):
    server.routes["/model.zip"] = lambda handler: reply(handler, status, b"no")
    url = server.url + "/model.zip"
    with pytest.raises(DownloadError, match=f"{url}: HTTP {status}"):
        fetch_url(url, tmp_path / "model.zip", SHA256, SIZE)
    assert files_in(tmp_path) == ["model.zip.lock"]


@pytest.mark.parametrize("corrupt", [b"x" * SIZE, PAYLOAD[:HALF]], ids=["same size", "short"])
def test_a_corrupt_target_is_downloaded_again_not_returned(server, tmp_path, corrupt):
    target = tmp_path / "model.zip"
    target.write_bytes(corrupt)
    server.routes["/model.zip"] = serve(PAYLOAD)
    fetch_url(server.url + "/model.zip", target, SHA256, SIZE)
    assert target.read_bytes() == PAYLOAD
    assert server.methods() == ["GET"]


def test_concurrent_calls_for_one_target_download_it_once(server, tmp_path):
    target = tmp_path / "model.zip"
    server.routes["/model.zip"] = serve_in_two_halves(PAYLOAD, pause=0.3)
    results, errors = [], []

    def fetch():
        try:
            results.append(fetch_url(server.url + "/model.zip", target, SHA256, SIZE))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [target, target]
    assert target.read_bytes() == PAYLOAD
    assert server.methods() == ["GET"]  # the second call waited, then found the verified file


# -- fetch_hf -----------------------------------------------------------------------------------


@pytest.fixture
def hub(server, monkeypatch, tmp_path):
    """``server`` answering the Hub's resolve URL of ``model.zip`` in ``REPO`` at ``COMMIT``.

    huggingface_hub reads its environment variables once, into ``huggingface_hub.constants``, when
    it is imported (as ``diffgym.zoo.download`` does above), so each one set here is also patched
    where huggingface_hub reads it at call time.
    """
    home = tmp_path / "hf-home"
    settings = {
        "HF_HUB_OFFLINE": ("0", False),
        "HF_HUB_DISABLE_TELEMETRY": ("1", True),
        "HF_HOME": (str(home), str(home)),
        "HF_HUB_CACHE": (str(home / "hub"), str(home / "hub")),
        "HF_TOKEN_PATH": (str(home / "token"), str(home / "token")),  # no token of this machine's user
        "HF_XET_CACHE": (str(home / "xet"), str(home / "xet")),
    }
    for name, (variable, constant) in settings.items():
        monkeypatch.setenv(name, variable)
        monkeypatch.setattr(constants, name, constant)
    for name in ("HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    server.routes[HUB_PATH] = hub_file(PAYLOAD)
    return server


def test_hf_good_file_lands_verified_and_leaves_no_cache(hub, tmp_path):
    target = tmp_path / "zoo" / "model.zip"
    assert fetch_hf(REPO, "model.zip", COMMIT, target, SHA256, SIZE, endpoint=hub.url) == target
    assert target.read_bytes() == PAYLOAD
    assert hub.methods() == ["HEAD", "GET"]
    assert all(f"diffgym/{diffgym.__version__}" in headers["User-Agent"] for _, _, headers in hub.requests)
    assert files_in(target.parent) == ["model.zip", "model.zip.lock"]  # the temporary folder is gone
    assert files_in(tmp_path) == ["zoo"]  # nothing in HF_HOME (tmp_path / "hf-home"): its cache was not used

    fetch_hf(REPO, "model.zip", COMMIT, target, SHA256, SIZE, endpoint=hub.url)
    assert len(hub.requests) == 2


def test_hf_endpoint_comes_from_the_environment_at_call_time(hub, tmp_path, monkeypatch):
    # huggingface_hub reads HF_ENDPOINT only on import (constants.ENDPOINT, already https://huggingface.co
    # here), so setting it now would not reach it; fetch_hf reads the variable on each call and passes
    # it as endpoint=, which is what this exercises.
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    target = tmp_path / "model.zip"
    fetch_hf(REPO, "model.zip", COMMIT, target, SHA256, SIZE)
    assert target.read_bytes() == PAYLOAD
    assert [path for _, path, _ in hub.requests] == [HUB_PATH, HUB_PATH]


def test_hf_tampered_file_is_refused_and_nothing_is_left(hub, tmp_path):
    hub.routes[HUB_PATH] = hub_file(TAMPERED)
    with pytest.raises(ModelFileError, match=f"tampered or corrupt: expected sha256 {SHA256}"):
        fetch_hf(REPO, "model.zip", COMMIT, tmp_path / "model.zip", SHA256, SIZE, endpoint=hub.url)
    assert files_in(tmp_path) == ["model.zip.lock"]


def test_hf_branch_name_is_refused_before_any_request(hub, tmp_path):
    with pytest.raises(ValueError, match="40-hex commit"):
        fetch_hf(REPO, "model.zip", "main", tmp_path / "model.zip", SHA256, SIZE, endpoint=hub.url)
    assert hub.requests == []


@pytest.mark.parametrize(
    "headers",
    [{"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, {}],
    ids=["as the Hub says it", "plain 404"],
)
def test_hf_missing_file_is_a_download_error_naming_it(hub, tmp_path, headers):
    hub.routes[HUB_PATH] = lambda handler: reply(handler, 404, b"", {"Content-Length": "0", **headers})
    with pytest.raises(
        DownloadError, match=f"model.zip of the Hugging Face repo {REPO} at {COMMIT}"
    ) as error:
        fetch_hf(REPO, "model.zip", COMMIT, tmp_path / "model.zip", SHA256, SIZE, endpoint=hub.url)
    assert "404" in str(error.value)
    assert files_in(tmp_path) == ["model.zip.lock"]


def test_a_partial_of_another_version_is_never_resumed_into_this_one(server, tmp_path):
    """The expected hash names the partial file: bytes of an older file (another registry, another
    mirror) wait under their own name and are not spliced into this download."""
    target = tmp_path / "model.zip"
    partial_path(target, hashlib.sha256(b"OLD VERSION").hexdigest()).write_bytes(b"OLD VERSION")
    server.routes["/model.zip"] = serve(PAYLOAD)
    fetch_url(server.url + "/model.zip", target, SHA256, SIZE)
    assert "Range" not in server.requests[-1][2]
    assert target.read_bytes() == PAYLOAD
