"""The zoo (issue 15): the shareable format round trip, the registry, where files come from, and
a benchmark run made into a zoo model whose card the zoo reproduces."""

import dataclasses
import functools
import http.server
import json
import pickle
import shlex
import shutil
import threading
import types

import gymnasium as gym
import numpy as np
import pytest
import torch

from diffgym import zoo
from diffgym.agents.diffuser import DecisionDiffuser
from diffgym.agents.dql import DiffusionQL
from diffgym.serialization import ModelFileError
from diffgym.zoo.benchmarks.harness import Budget, Contender, Session, Suite, run_suite
from diffgym.zoo.catalog import SHIPPED_REGISTRY, Source, ZooEntry, read_registry, write_registry
from diffgym.zoo.format import MODEL_FILES, WEIGHTS, read_model_folder, write_model_folder
from diffgym.zoo.publish import check, publish, reevaluate

TINY = dict(batch_size=16, check_every=10, seed=0)
DQL = dict(TINY, ema_start=5, policy_kwargs=dict(actor_hidden=16, critic_hidden=16, num_candidates=8))
TINY_UNET = dict(horizon=8, num_timesteps=10, dim=16, dim_mults=(1, 2), value_dim=16, value_dim_mults=(1, 2))
DESCRIPTION = dict(
    env={"id": "Pendulum-v1", "kwargs": {}},
    dataset={"id": "test/pendulum/random-v0"},
    training={"gradient_steps": 20, "seed": 0},
    results={"final": {"returns": [-1200.0, -1000.0], "mean_return": -1100.0, "score": 5.0}},
)


def observations(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([gym.make("Pendulum-v1").reset(seed=int(s))[0] for s in rng.integers(0, 1000, n)])


@pytest.fixture(scope="module")
def trained(pendulum_dataset):
    """A tiny Diffusion-QL after 20 gradient steps."""
    model = DiffusionQL("MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, **DQL)
    return model.learn(20)


def zoo_folder(model, folder, name="dql/pendulum-test"):
    return write_model_folder(model, folder, name=name, **DESCRIPTION)


def registry_with(tmp_path, entries_by_name):
    path = tmp_path / "registry.json"
    write_registry(entries_by_name, path)
    return path


def package_entry(name, folder, files, base):
    return ZooEntry(
        name, "dql", "Pendulum-v1", "pendulum-test", files, (Source("package", str(folder)),), base=base
    )


# ------------------------------------------------------------------------------ format


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_saved_model_converts_to_the_zoo_format_and_back_with_identical_predictions(
    trained, tmp_path, deterministic
):
    trained.save(tmp_path / "model")
    original = DiffusionQL.load(tmp_path / "model")
    files = zoo_folder(original, tmp_path / "zoo")
    assert sorted(files) == sorted(MODEL_FILES)
    loaded = read_model_folder(tmp_path / "zoo", files)
    batch = observations()
    for _ in range(2):  # the sampling generators stay in step call after call
        expected, _ = original.predict(batch, deterministic=deterministic)
        actual, _ = loaded.predict(batch, deterministic=deterministic)
        np.testing.assert_array_equal(actual, expected)


def test_a_planner_round_trips_too(pendulum_dataset, tmp_path):
    model = DecisionDiffuser(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        dataset=pendulum_dataset,
        **TINY,
        ema_start=5,
        policy_kwargs=TINY_UNET,
    ).learn(10)
    files = zoo_folder(model, tmp_path / "zoo", name="decision_diffuser/pendulum-test")
    loaded = read_model_folder(tmp_path / "zoo", files)
    batch = observations(3)
    np.testing.assert_array_equal(
        loaded.predict(batch, deterministic=True)[0], model.predict(batch, deterministic=True)[0]
    )


def test_the_folder_is_what_the_hub_and_readers_expect(trained, tmp_path):
    zoo_folder(trained, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["agent"] == "dql" and config["model"]["algorithm"] == "DiffusionQL"
    assert config["model"]["hyperparameters"]["batch_size"] == 16 and config["env"]["id"] == "Pendulum-v1"
    assert config["versions"]["torch"] == torch.__version__
    assert any("normalizer" in key for key in config["normalizers"])
    card = (tmp_path / "README.md").read_text()
    header = card.split("---")[1]
    metadata = json.loads(header)  # JSON is YAML: the Hub reads the header
    assert metadata["library_name"] == "diffgym"
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == "-1100.00 +/- 100.00"


def test_a_loaded_zoo_model_fine_tunes(trained, tmp_path, pendulum_dataset):
    files = zoo_folder(trained, tmp_path)
    loaded = read_model_folder(tmp_path, files, env=gym.make("Pendulum-v1"))
    loaded.set_dataset(pendulum_dataset)
    loaded.learn(5, reset_num_timesteps=False)
    assert loaded.num_timesteps == 25


def test_online_fine_tuning_of_a_zoo_model_whose_data_is_elsewhere_warns_and_goes_on(trained, tmp_path):
    files = zoo_folder(trained, tmp_path)
    loaded = read_model_folder(tmp_path, files, env=gym.make("Pendulum-v1"))
    loaded.dataset = (
        "imported/elsewhere-0123456789ab-v0"  # as a zoo model trained on another machine names it
    )
    with pytest.warns(
        UserWarning, match="starts with an empty replay buffer: the model's dataset 'imported/elsewhere"
    ):
        loaded.learn(20, online=True)
    assert loaded.replay_buffer.size() == 20


def test_online_fine_tuning_of_a_loaded_model_keeps_its_dataset_in_the_buffer(
    trained, tmp_path, pendulum_dataset
):
    files = zoo_folder(trained, tmp_path)
    loaded = read_model_folder(tmp_path, files, env=gym.make("Pendulum-v1"))
    assert loaded.dataset == pendulum_dataset.id
    loaded.learn(20, online=True)
    assert loaded.replay_buffer.size() == pendulum_dataset.total_steps + 20


def test_a_changed_byte_is_refused_before_anything_is_read(trained, tmp_path):
    files = zoo_folder(trained, tmp_path)
    weights = bytearray((tmp_path / WEIGHTS).read_bytes())
    weights[-1] ^= 1
    (tmp_path / WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(ModelFileError, match=r"model\.safetensors: tampered or corrupt: expected sha256"):
        read_model_folder(tmp_path, files)


def test_a_truncated_file_is_refused(trained, tmp_path):
    files = zoo_folder(trained, tmp_path)
    (tmp_path / "config.json").write_bytes((tmp_path / "config.json").read_bytes()[:100])
    with pytest.raises(ModelFileError, match=r"config.json: expected \d+ bytes, got 100"):
        read_model_folder(tmp_path, files)


class Payload:
    """Unpickling this would write a marker file: loading must never get that far."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_is_never_unpickled_even_with_matching_checksums(trained, tmp_path):
    """The forger controls the registry entry too: the file is refused because it is not
    safetensors, and what it holds never runs."""
    zoo_folder(trained, tmp_path)
    marker = tmp_path / "executed"
    (tmp_path / WEIGHTS).write_bytes(pickle.dumps({"policy": Payload(marker)}))
    files = {file: zoo.format.FileEntry.of(tmp_path / file) for file in MODEL_FILES}
    with pytest.raises(ModelFileError, match=r"model\.safetensors: not a safetensors file"):
        read_model_folder(tmp_path, files)
    assert not marker.exists()


def test_a_config_of_another_format_or_agent_is_refused(trained, tmp_path):
    zoo_folder(trained, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "format": "other/9"}))
    with pytest.raises(ModelFileError, match="format 'other/9'"):
        read_model_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "agent": "nonexistent"}))
    with pytest.raises(ModelFileError, match="names no known agent"):
        read_model_folder(tmp_path)


# ------------------------------------------------------------------------------ registry and sources


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private cache ($DIFFGYM_HOME)."""
    monkeypatch.setenv("DIFFGYM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_shipped_files_load_in_place_and_list_info_describe_them(trained, tmp_path, home):
    files = zoo_folder(trained, tmp_path / "models" / "dql")
    registry = registry_with(
        tmp_path, {"dql/pendulum-test": package_entry("dql/pendulum-test", "models/dql", files, tmp_path)}
    )
    assert list(zoo.list(registry)) == ["dql/pendulum-test"]
    assert zoo.info("dql/pendulum-test", registry)["available"] == "shipped"
    model = zoo.load("dql/pendulum-test", registry=registry)
    batch = observations()
    np.testing.assert_array_equal(
        model.predict(batch, deterministic=True)[0], trained.predict(batch, deterministic=True)[0]
    )
    assert not home.exists()  # shipped files are read where they are, not copied


def test_an_unknown_name_lists_the_close_ones(trained, tmp_path):
    files = zoo_folder(trained, tmp_path / "m")
    registry = registry_with(
        tmp_path, {"dql/pendulum-test": package_entry("dql/pendulum-test", "m", files, tmp_path)}
    )
    with pytest.raises(KeyError, match="did you mean: dql/pendulum-test"):
        zoo.load("dql/pendulum-tset", registry=registry)


def test_tampered_shipped_files_are_refused_with_what_each_source_said(trained, tmp_path, home):
    files = zoo_folder(trained, tmp_path / "m")
    (tmp_path / "m" / "results.json").write_text("{}")
    registry = registry_with(
        tmp_path, {"dql/pendulum-test": package_entry("dql/pendulum-test", "m", files, tmp_path)}
    )
    with pytest.raises(
        zoo.ZooUnavailableError, match=r"(?s)not in the cache.*shipped files m: .*results.json"
    ):
        zoo.load("dql/pendulum-test", registry=registry)


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on loopback serving ``tmp_path / "served"``; yields (folder, base URL, request log)."""
    served = tmp_path / "served"
    served.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/", log
    server.shutdown()
    server.server_close()


def test_a_remote_model_is_downloaded_verified_into_the_cache_then_read_from_there(
    trained, tmp_path, home, file_server
):
    served, url, log = file_server
    files = zoo_folder(trained, served / "dql-pendulum")
    entry = ZooEntry(
        "dql/pendulum-test",
        "dql",
        "Pendulum-v1",
        "pendulum-test",
        files,
        (Source("url", url + "dql-pendulum/"),),
    )
    registry = registry_with(tmp_path, {entry.name: entry})
    assert zoo.info(entry.name, registry)["available"] == "remote"
    model = zoo.load(entry.name, registry=registry)
    cached = home / "zoo" / "dql" / "pendulum-test"
    assert sorted(p.name for p in cached.iterdir() if p.suffix != ".lock") == sorted(MODEL_FILES)
    requests = len(log)
    assert requests >= len(MODEL_FILES)
    shutil.rmtree(served)  # the host is gone: the cache still serves
    again = zoo.load(entry.name, registry=registry)
    assert len(log) == requests
    batch = observations()
    np.testing.assert_array_equal(
        again.predict(batch, deterministic=True)[0], model.predict(batch, deterministic=True)[0]
    )


def test_a_tampered_download_never_reaches_the_cache(trained, tmp_path, home, file_server):
    served, url, _ = file_server
    files = zoo_folder(trained, served / "m")
    card = (served / "m" / "README.md").read_bytes()
    (served / "m" / "README.md").write_bytes(card.replace(b"diffgym", b"DIFFGYM"))  # same size, other bytes
    entry = ZooEntry(
        "dql/pendulum-test", "dql", "Pendulum-v1", "pendulum-test", files, (Source("url", url + "m/"),)
    )
    registry = registry_with(tmp_path, {entry.name: entry})
    with pytest.raises(zoo.ZooUnavailableError, match=r"README\.md"):
        zoo.load(entry.name, registry=registry)
    cached = home / "zoo" / "dql" / "pendulum-test"
    assert not (cached / "README.md").exists()
    assert not [p for p in cached.iterdir() if p.name.startswith("README") and p.suffix != ".lock"]


def test_the_next_source_is_tried_when_one_fails_and_every_failure_is_reported(
    trained, tmp_path, home, file_server
):
    served, url, _ = file_server
    files = zoo_folder(trained, served / "good")
    sources = (Source("url", url + "missing/"), Source("url", url + "good/"))
    entry = ZooEntry("dql/pendulum-test", "dql", "Pendulum-v1", "pendulum-test", files, sources)
    registry = registry_with(tmp_path, {entry.name: entry})
    zoo.load(entry.name, registry=registry)  # the first answers 404, the second has it
    shutil.rmtree(home)
    shutil.rmtree(served / "good")
    with pytest.raises(
        zoo.ZooUnavailableError, match=r"(?s)URL .*missing/: .*HTTP 404.*URL .*good/: .*HTTP 404"
    ):
        zoo.load(entry.name, registry=registry)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("dql/..", {}, "a name is 'algo/env-dataset'"),
        ("DQL/hopper", {}, "a name is 'algo/env-dataset'"),
        ("dql/x", {"files": {"../../escape": {"sha256": "0" * 64, "size": 1}}}, "not exactly"),
        (
            "dql/x",
            {"sources": [{"kind": "hf", "repo_id": "a/b", "revision": "main"}]},
            "pinned 40-hex commit",
        ),
        ("dql/x", {"sources": [{"kind": "ftp", "path": "x"}]}, "source kind 'ftp'"),
    ],
    ids=["dot-dot", "uppercase", "path outside", "unpinned hub", "unknown kind"],
)
def test_a_malformed_registry_entry_is_refused_by_name(trained, tmp_path, name, change, message):
    files = zoo_folder(trained, tmp_path / "m")
    good = package_entry("dql/x", "m", files, tmp_path).to_json()
    (tmp_path / "registry.json").write_text(
        json.dumps({"format": "diffgym-zoo-registry/1", "models": {name: {**good, **change}}})
    )
    with pytest.raises(ModelFileError, match=message):
        read_registry(tmp_path / "registry.json")


def test_export_copies_the_verified_files(trained, tmp_path):
    files = zoo_folder(trained, tmp_path / "m")
    registry = registry_with(
        tmp_path, {"dql/pendulum-test": package_entry("dql/pendulum-test", "m", files, tmp_path)}
    )
    out = zoo.export("dql/pendulum-test", tmp_path / "upload", registry=registry)
    assert sorted(p.name for p in out.iterdir()) == sorted(MODEL_FILES)


def test_the_shipped_registry_is_valid():
    entries = zoo.list(SHIPPED_REGISTRY)
    for name, entry in entries.items():
        assert name == entry.name and set(entry.files) == set(MODEL_FILES)


# ------------------------------------------------------------------------------ benchmark run -> zoo model


def test_a_card_says_what_made_its_data_and_whether_the_zoo_lists_that_very_file(tmp_path, monkeypatch):
    import h5py

    from diffgym.zoo import publish as publishing

    file = tmp_path / "hopper-medium.hdf5"  # a shared dataset's name, but not its file
    with h5py.File(file, "w") as handle:
        handle.attrs["metadata"] = json.dumps({"made_by": "a scripted expert", "seed": 3, "episodes": 2})
    described = publishing._dataset_description("hopper-medium", {"file": str(file)})
    sha256 = described["sha256"]
    assert described["recipe"] == (
        "made by a scripted expert (seed 3, episodes 2); not in zoo/datasets.json; the sha256 identifies the file"
    )
    listed = types.SimpleNamespace(checksum=types.SimpleNamespace(sha256=sha256))
    monkeypatch.setattr(publishing, "read_datasets", lambda registry: {"hopper-medium": listed})
    shared = publishing._dataset_description("hopper-medium", {"file": str(file)})["recipe"]
    assert shared == f"made by a scripted expert (seed 3, episodes 2); {publishing.SHARED_DATA_SOURCE}"
    missing = publishing._dataset_description("hopper-medium", {"file": str(tmp_path / "gone.hdf5")})
    assert "sha256" not in missing and missing["recipe"].startswith(
        "made by an unrecorded recipe (the file was not"
    )
    assert missing["recipe"].endswith("; not in zoo/datasets.json")


def test_an_old_card_s_data_is_described_again_from_the_very_file_it_was_trained_on(
    trained, tmp_path, home, capsys
):
    import h5py

    from diffgym.cli import main
    from diffgym.zoo.format import FileEntry
    from diffgym.zoo.publish import redescribe_data

    data = tmp_path / "data"
    data.mkdir()
    with h5py.File(data / "demos.hdf5", "w") as handle:
        handle.attrs["metadata"] = json.dumps({"made_by": "a scripted expert", "seed": 0, "episodes": 5})
    sha256 = FileEntry.of(data / "demos.hdf5").sha256
    old = {"id": "demos", "file": "demos.hdf5", "sha256": sha256, "info": {"episodes": 5},
           "recipe": "behaviour policies trained with SB3"}  # fmt: skip
    folder = tmp_path / "zoo" / "models" / "dql" / "pendulum-test"
    files = write_model_folder(trained, folder, name="dql/pendulum-test", **{**DESCRIPTION, "dataset": old})
    entry = package_entry("dql/pendulum-test", "models/dql/pendulum-test", files, tmp_path / "zoo")
    registry = registry_with(tmp_path / "zoo", {"dql/pendulum-test": entry})
    before = {path: path.read_bytes() for path in [registry, *folder.iterdir()]}
    with pytest.raises(FileNotFoundError, match=r"demos\.hdf5 is in none of"):
        redescribe_data("dql/pendulum-test", [tmp_path], registry)
    assert {path: path.read_bytes() for path in before} == before  # a refusal changes nothing
    assert main(["zoo", "redescribe", "dql/pendulum-tset", "dql/pendulum-test", "--data-dir", str(tmp_path),
                 "--data-dir", str(data), "--registry", str(registry)]) == 1  # fmt: skip
    printed = capsys.readouterr().out
    assert "dql/pendulum-tset: not redescribed:" in printed and "no zoo model named" in printed
    assert "dql/pendulum-test: made by a scripted expert (seed 0, episodes 5)" in printed
    described = zoo.info("dql/pendulum-test", registry)["config"]["dataset"]
    assert described["recipe"] == (
        "made by a scripted expert (seed 0, episodes 5); not in zoo/datasets.json; the sha256 identifies the file"
    )
    assert described["info"] == {"episodes": 5, "file": "demos.hdf5"} and described["sha256"] == sha256
    assert "made by a scripted expert" in (folder / "README.md").read_text()
    assert (folder / WEIGHTS).read_bytes() == before[folder / WEIGHTS]
    loaded = zoo.load("dql/pendulum-test", registry=registry, device="cpu")  # the renewed entry verifies
    assert np.array_equal(loaded.predict(observations(), deterministic=True)[0],
                          trained.predict(observations(), deterministic=True)[0])  # fmt: skip


def test_redescribing_finishes_after_a_stop_and_refuses_other_files_and_sources(trained, tmp_path, home):
    import h5py

    from diffgym.zoo.format import FileEntry, read_config, rewrite_config, rewritten_entries
    from diffgym.zoo.publish import _dataset_description, redescribe_data

    data = tmp_path / "demos.hdf5"
    with h5py.File(data, "w") as handle:
        handle.attrs["metadata"] = json.dumps({"made_by": "a scripted expert"})
    old = {"id": "demos", "file": "demos.hdf5", "sha256": FileEntry.of(data).sha256, "recipe": "SB3"}
    folder = tmp_path / "zoo" / "models" / "dql" / "pendulum-test"
    files = write_model_folder(trained, folder, name="dql/pendulum-test", **{**DESCRIPTION, "dataset": old})
    entry = package_entry("dql/pendulum-test", "models/dql/pendulum-test", files, tmp_path / "zoo")
    registry = registry_with(tmp_path / "zoo", {"dql/pendulum-test": entry})
    config = read_config(folder)
    renewed = {**config, "dataset": _dataset_description("demos", {"file": str(data)})}
    tampered = {**config, "training": {**config["training"], "note": "not what was registered"}}
    rewrite_config(folder, tampered)  # anything but the data description changed: refused, nothing written
    before = {path: path.read_bytes() for path in [registry, *folder.iterdir()]}
    with pytest.raises(ModelFileError, match=r"config\.json"):
        redescribe_data("dql/pendulum-test", [tmp_path], registry)
    assert {path: path.read_bytes() for path in before} == before
    rewrite_config(folder, config)
    # a run that stopped after renewing the registry, before the folder's files:
    write_registry({"dql/pendulum-test": dataclasses.replace(entry, files=rewritten_entries(folder, renewed))},
                   registry)  # fmt: skip
    with pytest.raises(zoo.ZooUnavailableError, match=r"config\.json: expected"):
        zoo.load("dql/pendulum-test", registry=registry, device="cpu")
    redescribe_data("dql/pendulum-test", [tmp_path], registry)  # running again finishes it
    assert read_config(folder) == renewed
    assert zoo.load("dql/pendulum-test", registry=registry, device="cpu") is not None
    redescribe_data("dql/pendulum-test", [tmp_path], registry)  # and again changes nothing
    assert read_config(folder) == renewed
    with h5py.File(data, "a") as handle:
        handle.attrs["note"] = "another file now"
    with pytest.raises(ValueError, match=r"\(sha256 [0-9a-f]{64}\) is not the file it was trained on"):
        redescribe_data("dql/pendulum-test", [tmp_path], registry)
    renewed = read_registry(registry)["dql/pendulum-test"]
    remote = dataclasses.replace(renewed, sources=(*renewed.sources, Source("url", "http://127.0.0.1:9/m/")))
    with pytest.raises(ValueError, match="not only in a local folder"):
        redescribe_data(
            "dql/pendulum-test", [tmp_path], registry_with(tmp_path, {"dql/pendulum-test": remote})
        )


def test_a_card_reproduces_a_run_that_trained_until_its_loss_flattened():
    from diffgym.zoo.publish import _training_description

    record = {
        "suite": "metaworld",
        "config": {"agent": "bc", "dataset": "metaworld-x-v3", "seed": 1, "hyperparams": {"file": None, "key": None}},
        "budget": {"gradient_steps": 20, "eval_every": 10, "eval_episodes": 1, "final_episodes": 2, "until_flat": 4},
        "date": "2026-12-01 00:00 UTC", "hardware": {}, "wall_time": {},
    }  # fmt: skip
    command = _training_description(record)["command"]
    assert "--seeds 2 --steps 20 " in command and " --until-flat 4 --data-dir DATA_DIR" in command


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "sampled actions"])
def test_a_benchmark_run_becomes_a_zoo_model_whose_card_the_zoo_reproduces(
    pendulum_file, tmp_path, home, deterministic
):
    suite = Suite(
        name="tiny",
        title="Tiny",
        description="Diffusion-QL on random Pendulum data.",
        datasets=("pendulum-tiny",),
        agents=(Contender("dql", deterministic=deterministic),),
        budget=Budget(seeds=1, steps=6, eval_every=3, eval_episodes=1, final_episodes=2),
        reference=lambda dataset: None,
    )
    small = (
        "batch_size=16",
        "policy_kwargs.num_candidates=4",
        "policy_kwargs.actor_hidden=16",
        "policy_kwargs.critic_hidden=16",
        "precision=bf16",  # trained so, published in float32 (loads on any device)
    )
    session = Session(suite, pendulum_file.parent, tmp_path / "out", suite.budget, small, save_models=True)
    run_suite(session)
    registry = tmp_path / "zoo" / "registry.json"
    entry = publish(
        session.folder / "dql_pendulum-tiny_s0.json",
        session.folder / "models" / "dql_pendulum-tiny_s0.zip",
        registry,
    )
    assert entry.name == "dql/pendulum-tiny" and entry.summary["episodes"] == 2
    assert (tmp_path / "zoo" / "models" / "dql" / "pendulum-tiny" / "config.json").exists()
    config = zoo.info("dql/pendulum-tiny", registry)["config"]
    assert config["training"]["gradient_steps"] == 6 and "--steps 6" in config["training"]["command"]
    settings = shlex.split(config["training"]["command"].partition(" --set ")[2])
    assert sorted(settings) == sorted(  # the run's values where the hyperparameter file differs
        ["dql:batch_size=16", "dql:policy_kwargs.num_candidates=4", "dql:policy_kwargs.actor_hidden=16",
         "dql:policy_kwargs.critic_hidden=16", 'dql:precision="bf16"']
    )  # fmt: skip
    assert config["model"]["hyperparameters"]["precision"] == "fp32"
    assert "--until-flat" not in config["training"]["command"]
    assert config["dataset"]["recipe"].endswith("; not in zoo/datasets.json; the sha256 identifies the file")
    result = check("dql/pendulum-tiny", registry, suite=suite)
    assert result["max_abs_difference"] == 0.0 and result["verdict"] == "identical"
    assert result["measured_returns"] == result["expected_returns"]
    with pytest.raises(ValueError, match="its card has 2 episodes; replay 1 to 2 of them"):
        check("dql/pendulum-tiny", registry, episodes=3, suite=suite)
    reevaluated = reevaluate("dql/pendulum-tiny", "rounding changed", registry, suite=suite)
    results = zoo.info("dql/pendulum-tiny", registry)["results"]
    assert [again["why"] for again in results["reevaluations"]] == ["rounding changed"]
    assert results["reevaluations"][0]["final"]["returns"] == result["expected_returns"]
    assert reevaluated.summary["mean_return"] == pytest.approx(np.mean(results["final"]["returns"]))
    card = (tmp_path / "zoo" / "models" / "dql" / "pendulum-tiny" / "README.md").read_text()
    assert "| re-evaluated |" in card and "rounding changed" in card
    assert check("dql/pendulum-tiny", registry, suite=suite)["verdict"] == "identical"  # files verified again
    with pytest.raises(ValueError, match="say why"):
        reevaluate("dql/pendulum-tiny", " ", registry, suite=suite)


@pytest.fixture(scope="module")
def three_seeds(pendulum_file, tmp_path_factory):
    """TD3+BC on the tiny data with seeds 0, 1, 2, models saved: the records' folder and the suite."""
    suite = Suite(
        name="tiny",
        title="Tiny",
        description="TD3+BC on random Pendulum data.",
        datasets=("pendulum-tiny",),
        agents=("td3bc",),
        budget=Budget(seeds=3, steps=4, final_episodes=2),
        reference=lambda dataset: None,  # unscored: seeds are compared by mean return
    )
    out = tmp_path_factory.mktemp("seeds")
    session = Session(suite, pendulum_file.parent, out, suite.budget, ("batch_size=16",), save_models=True)
    run_suite(session)
    return session.folder, suite


def test_the_best_of_several_seeds_is_published_with_every_seeds_score_on_its_card(
    three_seeds, tmp_path, home, capsys
):
    from diffgym.cli import main

    folder, suite = three_seeds
    finals = {seed: json.loads((folder / f"td3bc_pendulum-tiny_s{seed}.json").read_text())["final"]["mean_return"]
              for seed in range(3)}  # fmt: skip
    best = max(finals, key=finals.get)
    registry = tmp_path / "zoo" / "registry.json"
    records = sorted(str(path) for path in folder.glob("td3bc_pendulum-tiny_s*.json"))
    assert main(["zoo", "add", *records, "--registry", str(registry)]) == 0
    assert "over 3 seeds" in capsys.readouterr().out
    entry = zoo.list(registry)["td3bc/pendulum-tiny"]
    values = list(finals.values())
    assert entry.summary["seeds"] == [0, 1, 2] and entry.summary["mean_return"] == pytest.approx(finals[best])
    assert entry.summary["seeds_score"] == pytest.approx(
        {"mean": np.mean(values), "std": np.std(values), "n": 3, "of": 3, "label": "mean return"}
    )
    info = zoo.info("td3bc/pendulum-tiny", registry)
    assert info["config"]["training"]["seed"] == best
    assert info["results"]["across_seeds"]["finals"] == {str(s): pytest.approx(v) for s, v in finals.items()}
    card = (tmp_path / "zoo" / "models" / "td3bc" / "pendulum-tiny" / "README.md").read_text()
    assert f"over 3 seeds (this model: seed {best}, the best of them" in card
    assert check("td3bc/pendulum-tiny", registry, suite=suite)["verdict"] == "identical"


def test_records_that_are_not_seeds_of_one_run_are_refused(three_seeds, tmp_path):
    from diffgym.zoo.publish import publish_best_seed

    folder, _ = three_seeds
    first, second = folder / "td3bc_pendulum-tiny_s0.json", folder / "td3bc_pendulum-tiny_s1.json"
    other = json.loads(second.read_text())
    other["config"]["hyperparams"]["values"]["batch_size"] = 32
    (tmp_path / "other.json").write_text(json.dumps(other))
    registry = tmp_path / "registry.json"
    with pytest.raises(ValueError, match=r"is not a seed of the run of .*: its hyperparams differ"):
        publish_best_seed([first, tmp_path / "other.json"], registry=registry)
    copy = shutil.copy(first, tmp_path / "copy.json")
    with pytest.raises(ValueError, match="two records of the same seed"):
        publish_best_seed([first, copy], registry=registry)
    with pytest.raises(FileNotFoundError, match="--save-models"):
        publish_best_seed([first], tmp_path / "missing.zip", registry=registry)
    assert not registry.exists()


def test_one_run_with_its_model_named_is_published_as_before_and_a_wrong_model_is_refused(
    three_seeds, tmp_path, home, capsys
):
    from diffgym.cli import main
    from diffgym.zoo.publish import publish_best_seed

    folder, _ = three_seeds
    registry = tmp_path / "zoo" / "registry.json"
    record, model = folder / "td3bc_pendulum-tiny_s1.json", folder / "models" / "td3bc_pendulum-tiny_s1.zip"
    assert main(["zoo", "add", str(record), str(model), "--registry", str(registry)]) == 0  # RECORD MODEL
    assert zoo.info("td3bc/pendulum-tiny", registry)["config"]["training"]["seed"] == 1
    assert (
        main(["zoo", "add", str(record), str(model), "--model", str(model), "--registry", str(registry)]) == 1
    )
    assert "give at most one model file" in capsys.readouterr().err
    records = sorted(folder.glob("td3bc_pendulum-tiny_s*.json"))
    best = max(records, key=lambda path: json.loads(path.read_text())["final"]["mean_return"])
    wrong = next(path for path in records if path != best)
    with pytest.raises(ValueError, match=f"the best seed is {best.stem}"):
        publish_best_seed(records, folder / "models" / f"{wrong.stem}.zip", registry=tmp_path / "other.json")


def test_a_seed_whose_score_is_not_finite_is_never_the_best(three_seeds, tmp_path, home):
    from diffgym.zoo.publish import publish_best_seed

    folder, _ = three_seeds
    diverged = json.loads((folder / "td3bc_pendulum-tiny_s0.json").read_text())
    diverged["final"]["mean_return"] = float("nan")
    path = folder / "diverged" / "td3bc_pendulum-tiny_s0.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(diverged))
    others = [folder / f"td3bc_pendulum-tiny_s{seed}.json" for seed in (1, 2)]
    entry = publish_best_seed([path, *others], registry=tmp_path / "zoo" / "registry.json")
    assert entry.summary["seeds"] == [0, 1, 2] and entry.summary["seeds_score"]["n"] == 2
    results = zoo.info(entry.name, tmp_path / "zoo" / "registry.json")["results"]
    assert results["across_seeds"]["finals"]["0"] is None and results["across_seeds"]["published_seed"] != 0


def test_a_shipped_model_replays_its_cards_first_episode():
    """``dql/hopper-medium`` as a user gets it: its first evaluation episode again, within the spread its
    card states (identical on the hardware that made it; other CPUs may round differently)."""
    from diffgym.zoo.benchmarks.harness import EVAL_SEED
    from diffgym.zoo.format import read_results

    results = read_results(zoo.download("dql/hopper-medium"))
    env = gym.wrappers.RecordEpisodeStatistics(zoo.make_env("dql/hopper-medium"))
    model = zoo.load("dql/hopper-medium", device="cpu")
    observation, _ = env.reset(seed=EVAL_SEED + results["evaluation"]["seed"])
    observation, _ = env.reset()  # evaluate_policy resets once more before its first episode
    done = False
    while not done:
        action, _ = model.predict(observation, deterministic=True)
        observation, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    returns = np.array(results["final"]["returns"])
    assert abs(info["episode"]["r"] - returns[0]) <= max(returns.std(), 1e-3 * abs(returns[0]))


def test_config_json_is_strict_json_and_unbounded_spaces_round_trip(tmp_path, home):
    """Hopper's observation bounds are infinite: written as "-Infinity" strings (strict JSON, which the
    Hub and browsers parse), read back as floats."""

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    trained = zoo.load("dql/hopper-medium")
    files = write_model_folder(trained, tmp_path / "again", name="dql/hopper-medium", **DESCRIPTION)
    text = (tmp_path / "again" / "config.json").read_text()
    config = json.loads(text, parse_constant=refuse)
    assert config["model"]["observation_space"]["low"][0] == "-Infinity"
    loaded = read_model_folder(tmp_path / "again", files)
    assert np.isneginf(loaded.observation_space.low).all()


def test_an_install_without_the_shipped_files_says_so(trained, tmp_path, home):
    files = zoo_folder(trained, tmp_path / "elsewhere")
    registry = registry_with(
        tmp_path, {"dql/pendulum-test": package_entry("dql/pendulum-test", "models/dql", files, tmp_path)}
    )
    with pytest.raises(zoo.ZooUnavailableError, match="this install does not ship these files"):
        zoo.load("dql/pendulum-test", registry=registry)


def test_the_results_table_puts_each_diffusion_model_beside_the_best_baseline_on_its_data():
    from diffgym.zoo.publish import markdown_table

    def entry(name, agent, dataset, score, steps, metric="normalised score"):
        summary = {
            "score": score,
            "gradient_steps": steps,
            "metric": metric,
            "seeds": [0],
            "data_score": 33.0,
        }
        return ZooEntry(name, agent, "Hopper-v5", dataset, {}, (), summary=summary)

    entries = {
        e.name: e
        for e in (
            entry("dql/hopper-medium", "dql", "hopper-medium", 12.1, 15000),
            entry("td3bc/hopper-medium", "td3bc", "hopper-medium", 35.8, 15000),
            entry("iql/hopper-medium", "iql", "hopper-medium", 24.2, 15000),
            entry("iql/halfcheetah-medium", "iql", "halfcheetah-medium", 42.3, 15000),
        )
    }
    rows = markdown_table(entries).splitlines()
    assert len(rows) == 3  # header, rule, and the one diffusion model
    assert rows[2] == (
        "| dql/hopper-medium | normalised score | 12.1 | 35.8 (td3bc/hopper-medium, 15000 steps) | 33.0 "
        "| 15000 steps | 1 |"
    )
