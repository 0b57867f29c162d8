"""Model files: atomic, verified, bounded, and never executing code on load."""

import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import gymnasium as gym
import pytest
import torch

from diffgym import serialization
from diffgym.serialization import (
    Limits,
    ModelFileError,
    load_model_file,
    save_model_file,
    space_to_json,
)


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
    """Replace (or add) one member, as a zip tool would: the index is left as it was."""
    with zipfile.ZipFile(path) as archive:
        contents = {n: archive.read(n) for n in archive.namelist()}
    contents[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for n, blob in contents.items():
            archive.writestr(n, blob)


def forge(path, name, data):
    """Replace a member and recompute its entry in the index: what a deliberate forger does."""
    with zipfile.ZipFile(path) as archive:
        index = json.loads(archive.read("checksums.json"))
    index["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    rewrite(path, name, data)
    rewrite(path, "checksums.json", json.dumps(index).encode())


def torch_bytes(value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_tampered_member_is_refused(saved):
    path, _ = saved
    rewrite(path, "policy.pt", torch_bytes({"weight": torch.zeros(2, 3)}))
    with pytest.raises(ModelFileError, match=r"policy\.pt does not match its checksum"):
        load_model_file(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("payload", [pickle.dumps(Exploit()), torch_bytes({"x": Exploit()})])
def test_pickled_code_is_never_executed(saved, payload):
    path, _ = saved
    forge(path, "policy.pt", payload)  # plain pickle, and torch's zip format around the pickle
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
    with pytest.raises(ModelFileError, match=r"policy\.pt is corrupt"):
        load_model_file(path)


# ------------------------------------------------------------------------- every corruption, typed


def test_every_flipped_byte_is_refused_or_harmless(tmp_path):
    """Each byte of a small model file flipped in turn: a ModelFileError, or the very same model
    (a flip in a field nothing reads, e.g. a timestamp), never another exception."""
    manifest = {"algorithm": "Test", "action_space": space_to_json(gym.spaces.Box(-2, 2, (1,)))}
    members = {"policy": {"weight": torch.arange(6.0).reshape(2, 3)}, "extra": {"n": torch.tensor(3)}}
    data = save_model_file(tmp_path / "model", manifest, members).read_bytes()
    bad, refused = tmp_path / "bad.zip", 0
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        try:
            loaded, tensors = load_model_file(bad)
        except ModelFileError as error:
            assert str(bad) in str(error)
            refused += 1
            continue
        assert {key: loaded.get(key) for key in manifest} == manifest, position
        assert tensors.keys() == members.keys(), position
        for name, state in members.items():
            assert all(torch.equal(tensors[name][key], value) for key, value in state.items()), position
    assert refused > 0.8 * len(data)


@pytest.mark.parametrize(
    ("member", "data", "problem"),
    [
        ("policy.pt", torch_bytes(torch.zeros(3)), r"policy\.pt holds a Tensor, not a state dict"),
        ("policy.pt", torch_bytes([1, 2]), r"policy\.pt holds a list, not a state dict"),
        ("policy.pt", torch_bytes({0: torch.zeros(1)}), r"policy\.pt holds a dict, not a state dict"),
        ("policy.pt", b"\x00" * 100, r"policy\.pt holds something other than tensors"),
        ("policy.pt", b"PK\x05\x06" + b"\x00" * 18, r"policy\.pt holds something other than tensors"),
        ("diffgym.json", b"[1, 2]", r"diffgym\.json holds a JSON list, not an object"),
        ("diffgym.json", b"{not json", r"diffgym\.json is not valid JSON"),
        ("diffgym.json", b"\xff\xfe\x00", r"diffgym\.json is not valid JSON"),
    ],
)
def test_a_member_forged_with_wrong_content_is_a_model_file_error(saved, member, data, problem):
    path, _ = saved
    forge(path, member, data)
    with pytest.raises(ModelFileError, match=problem):
        load_model_file(path)


@pytest.mark.parametrize(
    ("index", "problem"),
    [
        (b"{not json", r"checksums\.json is not valid JSON"),
        (b'{"format_version": 2, "members": []}', r"checksums\.json lists no members"),
        (b'{"format_version": 2, "members": {"diffgym.json": 3}}', r"entry 'diffgym\.json' is malformed"),
        (b'{"format_version": 7, "members": {}}', "unsupported model format version 7"),
        (b"[]", "unsupported model format version None"),
    ],
)
def test_a_malformed_index_is_a_model_file_error(saved, index, problem):
    path, _ = saved
    rewrite(path, "checksums.json", index)
    with pytest.raises(ModelFileError, match=problem):
        load_model_file(path)


# ------------------------------------------------------------------------------ every member covered


@pytest.fixture
def model_with_bounds(tmp_path):
    manifest = {"algorithm": "Test", "action_space": space_to_json(gym.spaces.Box(-2, 2, (1,)))}
    return save_model_file(tmp_path / "model", manifest, {"policy": {"weight": torch.ones(2)}})


def test_an_edited_manifest_is_refused(model_with_bounds):
    """The issue's case: action bounds multiplied by 10 in diffgym.json, nothing else touched."""
    path = model_with_bounds
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("diffgym.json"))
    space = manifest["action_space"]
    space["low"], space["high"] = [10 * x for x in space["low"]], [10 * x for x in space["high"]]
    rewrite(path, "diffgym.json", json.dumps(manifest, indent=2).encode())
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match=rf"{path}: member diffgym\.json does not match its checksum"):
        load_model_file(path)
    assert path.read_bytes() == before  # a failed load changes nothing


def test_an_added_or_removed_member_is_refused(model_with_bounds, tmp_path):
    path = model_with_bounds
    original = path.read_bytes()
    rewrite(path, "critic.pt", torch_bytes({"w": torch.zeros(1)}))
    with pytest.raises(ModelFileError, match=r"member critic\.pt is not listed in checksums\.json"):
        load_model_file(path)
    path.write_bytes(original)
    with zipfile.ZipFile(path) as archive:
        kept = {name: archive.read(name) for name in archive.namelist() if name != "policy.pt"}
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in kept.items():
            archive.writestr(name, blob)
    with pytest.raises(ModelFileError, match=r"member policy\.pt is missing"):
        load_model_file(path)


def test_a_file_without_its_index_is_refused(model_with_bounds):
    path = model_with_bounds
    with zipfile.ZipFile(path) as archive:
        kept = {name: archive.read(name) for name in archive.namelist() if name != "checksums.json"}
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in kept.items():
            archive.writestr(name, blob)
    with pytest.raises(ModelFileError, match=r"has no checksums\.json"):
        load_model_file(path)


def test_a_format_1_file_is_refused_naming_its_version(tmp_path):
    """Format 1 listed the tensor members' checksums in diffgym.json, leaving diffgym.json bare."""
    blob = torch_bytes({"weight": torch.ones(2)})
    manifest = {
        "algorithm": "Test",
        "format_version": 1,
        "checksums": {"policy.pt": hashlib.sha256(blob).hexdigest()},
    }
    path = tmp_path / "old.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("diffgym.json", json.dumps(manifest))
        archive.writestr("policy.pt", blob)
    with pytest.raises(
        ModelFileError, match=r"model file of format version 1, which this diffgym \(format 2\)"
    ):
        load_model_file(path)


# ------------------------------------------------------------------------------------ archive bombs


def test_an_archive_bomb_is_refused_from_the_zip_directory(tmp_path, monkeypatch):
    """4 MiB of zeros deflate to a few KB, checksums all valid: refused under a low limit before
    any member is opened, and loaded under the default (generous) one."""
    path = save_model_file(tmp_path / "bomb", {"algorithm": "Test"}, {"policy": {"w": torch.zeros(2**20)}})
    assert path.stat().st_size < 16 * 1024
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or real_open(self, *a, **k)
    )
    low = Limits(free_bytes=256 * 1024, max_ratio=10)
    with pytest.raises(
        ModelFileError, match=r"bomb\.zip would expand to 4,19\d,\d+ bytes from .* beyond the 262,144 allowed"
    ):
        load_model_file(path, limits=low)
    assert opened == []
    _, members = load_model_file(path)
    assert members["policy"]["w"].shape == (2**20,)


def test_json_members_and_member_count_are_capped(saved):
    path, _ = saved
    with pytest.raises(
        ModelFileError, match=r"member (checksums|diffgym)\.json declares .* bytes, beyond the 16"
    ):
        load_model_file(path, limits=Limits(max_json_bytes=16))
    with pytest.raises(ModelFileError, match="has 3 members, more than the 2 allowed"):
        load_model_file(path, limits=Limits(max_members=2))


def test_tensor_records_that_expand_count_against_the_limit(saved):
    """torch's own zip inside a member, its records deflated (torch stores them): a bomb inside."""
    path, _ = saved
    inner = zipfile.ZipFile(io.BytesIO(torch_bytes({"w": torch.zeros(2**18)})))
    rebuilt = io.BytesIO()
    with inner, zipfile.ZipFile(rebuilt, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info in inner.infolist():
            archive.writestr(info.filename, inner.read(info))
    forge(path, "policy.pt", rebuilt.getvalue())
    with pytest.raises(
        ModelFileError, match=r"policy\.pt holds tensor records that expand by 1,04\d,\d+ bytes"
    ):
        load_model_file(path, limits=Limits(free_bytes=256 * 1024, max_ratio=1))


def test_a_member_that_understates_its_size_is_refused(saved):
    """policy.pt's size in the zip directory cut by 100, the index forged to agree (size and
    SHA-256 of the shorter bytes): at most the declared bytes are read, and the zip's CRC-32 of
    the whole member shows the cut."""
    path, _ = saved
    with zipfile.ZipFile(path) as archive:
        size = archive.getinfo("policy.pt").file_size
        blob = archive.read("policy.pt")
    forge(path, "policy.pt", blob)  # rewritten members are stored: compressed size = size
    with zipfile.ZipFile(path) as archive:
        index = json.loads(archive.read("checksums.json"))
    index["members"]["policy.pt"] = {"sha256": hashlib.sha256(blob[:-100]).hexdigest(), "size": size - 100}
    rewrite(path, "checksums.json", json.dumps(index).encode())
    with zipfile.ZipFile(path) as archive:
        directory = archive.start_dir  # where the central directory begins
    data = bytearray(path.read_bytes())
    entry = data.index(b"policy.pt", directory) - 46
    assert data[entry : entry + 4] == b"PK\x01\x02"
    data[entry + 24 : entry + 28] = (size - 100).to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"member policy\.pt is corrupt \(BadZipFile: Bad CRC-32"):
        load_model_file(path)


def test_module_limits_are_the_default_and_saving_warns_beyond_them(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization, "LIMITS", Limits(free_bytes=64 * 1024, max_ratio=2))
    with pytest.warns(UserWarning, match=r"beyond the .* that loading allows by default"):
        path = save_model_file(
            tmp_path / "zeros", {"algorithm": "Test"}, {"policy": {"w": torch.zeros(2**16)}}
        )
    with pytest.raises(ModelFileError, match="would expand"):
        load_model_file(path)
    assert load_model_file(path, limits=Limits())[1]["policy"]["w"].shape == (2**16,)


# ------------------------------------------------------------------------------------------- torch


def test_a_torch_with_known_weights_only_bypasses_refuses_to_load(saved, monkeypatch):
    path, _ = saved
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    with pytest.raises(RuntimeError, match=r"CVE-2026-24747.*torch >= 2\.10"):
        load_model_file(path)


def test_saving_refuses_members_that_are_not_state_dicts(tmp_path):
    with pytest.raises(TypeError, match="member 'policy' must be a dict with string keys"):
        save_model_file(tmp_path / "model", {}, {"policy": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"member name '\.\./x'"):
        save_model_file(tmp_path / "model", {}, {"../x": {}})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ killed writers


KILLED_WRITER = """
import os, signal, sys
from diffgym.serialization import atomic_file
with atomic_file(sys.argv[1]) as file:
    file.write(b"half a model")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_killed_save_leaves_the_old_file_and_the_next_save_removes_its_leftover(saved):
    path, state = saved
    before = path.read_bytes()
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], check=False)
        assert run.returncode == -signal.SIGKILL
    leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".partial")]
    assert len(leftovers) == 2 and path.read_bytes() == before  # the old model, untouched
    save_model_file(path, {"algorithm": "Test"}, {"policy": state})
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert load_model_file(path)[0]["algorithm"] == "Test"


def test_only_stale_partial_files_are_removed(saved):
    """Another host's writer is only judged by age; files of other programs are never touched."""
    path, state = saved
    folder = path.parent
    old = folder / ".other.zip.diffgym-00000000-123-abc_12.partial"
    fresh = folder / ".other.zip.diffgym-00000000-456-def_34.partial"
    live = folder / f".x.zip.diffgym-{serialization._HOST}-{os.getpid()}-ghi.partial"
    unrelated = [folder / ".download.partial", folder / ".model.zip.123.partial", folder / "notes.txt"]
    for file in (old, fresh, live, *unrelated):
        file.write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    save_model_file(path, {"algorithm": "Test"}, {"policy": state})
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (path, fresh, live, *unrelated))
