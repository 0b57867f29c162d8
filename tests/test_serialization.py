"""Model files: atomic, verified, and never executing code on load."""

import hashlib
import io
import json
import os
import pickle
import zipfile

import pytest
import torch

from diffgym.serialization import ModelFileError, load_model_file, save_model_file


@pytest.fixture
def saved(tmp_path):
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    path = save_model_file(tmp_path / "model", {"algorithm": "Test"}, {"policy": state})
    return path, state


def test_round_trip(saved):
    path, state = saved
    assert path.name == "model.zip"
    manifest, members = load_model_file(path.with_suffix(""))
    assert manifest["algorithm"] == "Test"
    assert torch.equal(members["policy"]["weight"], state["weight"])


def rewrite(path, name, data):
    with zipfile.ZipFile(path) as archive:
        contents = {n: archive.read(n) for n in archive.namelist()}
    contents[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for n, blob in contents.items():
            archive.writestr(n, blob)


def test_tampered_member_is_refused(saved):
    path, _ = saved
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2, 3)}, buffer)
    rewrite(path, "policy.pt", buffer.getvalue())
    with pytest.raises(ModelFileError, match=r"policy\.pt does not match its checksum"):
        load_model_file(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_never_executed(saved):
    path, _ = saved
    payload = pickle.dumps(Exploit())
    rewrite(path, "policy.pt", payload)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("diffgym.json"))
    manifest["checksums"]["policy.pt"] = hashlib.sha256(payload).hexdigest()  # a forger fixes the checksum
    rewrite(path, "diffgym.json", json.dumps(manifest).encode())
    with pytest.raises(ModelFileError, match=r"policy\.pt holds something other than tensors"):
        load_model_file(path)


def test_not_a_zip_and_truncated(tmp_path, saved):
    path, _ = saved
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="not a valid zip"):
        load_model_file(garbage)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError):
        load_model_file(truncated)


def test_missing_manifest_and_missing_file(tmp_path):
    bare = tmp_path / "bare.zip"
    with zipfile.ZipFile(bare, "w") as archive:
        archive.writestr("policy.pt", b"")
    with pytest.raises(ModelFileError, match=r"has no diffgym\.json"):
        load_model_file(bare)
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model_file(tmp_path / "absent")


def test_failed_save_leaves_the_good_file(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model_file(path, {"algorithm": "Test"}, {"policy": {"weight": torch.ones(1)}})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind


def test_a_corrupt_compressed_member_is_a_model_file_error(tmp_path):
    """A flipped byte inside a deflated member breaks decompression before any checksum is read."""
    path = tmp_path / "model.zip"
    save_model_file(path, {"algorithm": "X"}, {"policy": {"w": torch.zeros(4096)}})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("policy.pt")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 2] ^= 0xFF  # inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not decompress"):
        load_model_file(path)
