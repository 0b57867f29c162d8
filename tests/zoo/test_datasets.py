"""The dataset registry (issue 19, item 2): our data by name, verified, into the Minari store; on loopback."""

import functools
import http.server
import json
import shutil
import threading

import pytest

from diffgym.cli import main
from diffgym.serialization import ModelFileError
from diffgym.zoo import ZooUnavailableError, datasets
from diffgym.zoo.format import FileEntry


@pytest.fixture
def served(tmp_path):
    """An HTTP server on loopback over ``tmp_path / "www"``: (folder, base URL, request paths)."""
    folder = tmp_path / "www"
    folder.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/d4rl/", log
    server.shutdown()
    server.server_close()


@pytest.fixture
def registry(tmp_path, pendulum_file, served, monkeypatch):
    """A registry naming ``pendulum-tiny`` (its sha256 and size) on the loopback server; a private cache."""
    folder, url, _ = served
    (folder / "d4rl").mkdir()
    shutil.copy(pendulum_file, folder / "d4rl" / "pendulum-tiny.hdf5")
    entry = FileEntry.of(pendulum_file)
    data = {
        "format": "diffgym-datasets/1",
        "datasets": {
            "pendulum-tiny": {
                "file": "pendulum-tiny.hdf5",
                "sha256": entry.sha256,
                "size": entry.size,
                "env_id": "Pendulum-v1",
                "sources": [{"kind": "url", "url": url}],
            }
        },
    }
    path = tmp_path / "datasets.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("DIFFGYM_HOME", str(tmp_path / "home"))
    return path


def test_a_dataset_is_downloaded_verified_then_imported_into_the_minari_store(
    registry, served, tmp_path, minari_store
):
    _, _, log = served
    dataset = datasets.load("pendulum-tiny", registry)
    assert dataset.total_steps == 400 and dataset.id.startswith("imported/pendulum-tiny-")
    cached = tmp_path / "home" / "datasets" / "pendulum-tiny" / "pendulum-tiny.hdf5"
    assert cached.exists() and log == ["/d4rl/pendulum-tiny.hdf5"]
    again = datasets.load("pendulum-tiny", registry)  # the cache and the store: no second request
    assert again.id == dataset.id and len(log) == 1


def test_a_tampered_file_never_reaches_the_cache_or_the_store(registry, served, tmp_path):
    folder, _, _ = served
    target = folder / "d4rl" / "pendulum-tiny.hdf5"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(ZooUnavailableError, match=r"(?s)dataset 'pendulum-tiny'.*tampered or corrupt"):
        datasets.fetch("pendulum-tiny", registry)
    assert not (tmp_path / "home" / "datasets" / "pendulum-tiny" / "pendulum-tiny.hdf5").exists()


def test_a_folder_given_with_from_is_used_in_place(registry, served, pendulum_file, capsys, minari_store):
    _, _, log = served
    assert (
        main(
            [
                "data",
                "fetch",
                "pendulum-tiny",
                "--registry",
                str(registry),
                "--from",
                str(pendulum_file.parent),
            ]
        )
        == 0
    )
    assert "pendulum-tiny: Minari id imported/pendulum-tiny-" in capsys.readouterr().out
    assert log == []  # the local folder came first


def test_an_unknown_name_lists_the_registry(registry):
    with pytest.raises(KeyError, match="no dataset named 'hopper' in the registry; it has: pendulum-tiny"):
        datasets.fetch("hopper", registry)


def test_the_shipped_registry_lists_the_shared_datasets(capsys):
    entries = datasets.read_datasets()
    assert {"hopper-medium", "halfcheetah-medium-replay", "maze2d-umaze", "mpe-spread-expert"} <= set(entries)
    assert all(len(entry.checksum.sha256) == 64 and entry.checksum.size > 0 for entry in entries.values())
    assert main(["data", "fetch", "--list"]) == 0
    assert "hopper-medium" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "file"), [("../escape", "x.hdf5"), ("hopper", "../../x.hdf5"), ("hopper", "/tmp/x.hdf5")]
)
def test_a_name_or_file_that_leads_elsewhere_is_refused(tmp_path, name, file):
    data = {"file": file, "sha256": "0" * 64, "size": 1, "env_id": "Hopper-v5", "sources": []}
    path = tmp_path / "datasets.json"
    path.write_text(json.dumps({"format": "diffgym-datasets/1", "datasets": {name: data}}))
    with pytest.raises(ModelFileError, match="plain file names"):
        datasets.read_datasets(path)


def test_without_any_source_the_error_says_to_pass_one(tmp_path, pendulum_file):
    entry = FileEntry.of(pendulum_file)
    data = {
        "file": "p.hdf5",
        "sha256": entry.sha256,
        "size": entry.size,
        "env_id": "Pendulum-v1",
        "sources": [],
    }
    path = tmp_path / "datasets.json"
    path.write_text(json.dumps({"format": "diffgym-datasets/1", "datasets": {"p": data}}))
    with pytest.raises(ZooUnavailableError, match="pass a folder or mirror that holds it: --from DIR_OR_URL"):
        datasets.fetch("p", path)
