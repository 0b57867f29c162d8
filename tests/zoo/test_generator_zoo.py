"""A SynthER transition model in the zoo: published from a synther suite run, loaded, checked, listed."""

import dataclasses

import numpy as np
import pytest
import torch

from diffgym import zoo
from diffgym.cli import main
from diffgym.serialization import ModelFileError
from diffgym.wrappers import TransitionDiffusion
from diffgym.zoo.benchmarks import synther
from diffgym.zoo.benchmarks.harness import Budget, Session, run_suite
from diffgym.zoo.catalog import read_registry
from diffgym.zoo.play import enjoy
from diffgym.zoo.publish import check, markdown_table, publish_generator, reevaluate

NAME = "synther/hopper-medium-replay"


@pytest.fixture(scope="module")
def synther_run(hopper_file, tmp_path_factory):
    """The synther suite on 100 random Hopper steps: TD3+BC (2 seeds, 4 steps) on the real data and on
    50 synthetic transitions of a generator trained 20 steps, models saved."""
    suite = dataclasses.replace(
        synther.SUITE, datasets=("hopper-medium-replay", "hopper-medium-replay" + synther.SUFFIX)
    )
    settings = ("batch_size=16", "suite:synthetic=50", "suite:diffusion_steps=20", "suite:quality_samples=20")
    budget = Budget(seeds=2, steps=4, final_episodes=2)
    session = Session(
        suite, hopper_file.parent, tmp_path_factory.mktemp("out"), budget, settings, save_models=True
    )
    run_suite(session)
    return session.folder


@pytest.fixture
def published(synther_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFGYM_HOME", str(tmp_path / "home"))
    registry = tmp_path / "zoo" / "registry.json"
    records = sorted(synther_run.glob("td3bc_hopper-medium-replay-synther_s*.json"))
    return publish_generator(records, registry), registry


def test_a_synther_run_publishes_its_generator_which_loads_and_generates_as_saved(synther_run, published):
    entry, registry = published
    assert entry.name == NAME and entry.kind == "generator" and not entry.acts
    assert read_registry(registry)[NAME].kind == "generator"  # written and read back
    generator = zoo.load(NAME, registry=registry)
    saved = TransitionDiffusion.load(
        synther_run / "models" / ("hopper-medium-replay" + synther.SUFFIX + ".safetensors")
    )
    for mine, theirs in zip(
        generator.generate(20, torch.Generator().manual_seed(1)),
        saved.generate(20, torch.Generator().manual_seed(1)),
        strict=True,
    ):
        np.testing.assert_array_equal(mine, theirs)
    results = zoo.info(NAME, registry)["results"]
    assert len(results["final"]["returns"]) == 4  # 2 seeds x 2 final episodes of TD3+BC on its data
    assert results["baseline"]["name"] == "td3bc on the real data" and set(results["baseline"]["finals"]) == {
        "0",
        "1",
    }
    assert results["quality"]["n"] == 20 and "synthetic" in results["quality"]
    card = (registry.parent / "models" / "synther" / "hopper-medium-replay" / "README.md").read_text()
    assert "transition generator" in card and "does not act" in card and "--set suite:synthetic=50" in card
    row = next(line for line in markdown_table(read_registry(registry)).splitlines() if NAME in line)
    assert "td3bc on the real data, 4 steps" in row and "20 steps (generator); its agent 4 steps" in row
    assert zoo.make_env(NAME, registry).spec.id == "Hopper-v5"


def test_the_zoo_checks_a_generator_by_regenerating_its_fingerprint(published, capsys):
    _, registry = published
    assert check(NAME, registry)["verdict"] == "identical"
    assert main(["zoo", "check", NAME, "--registry", str(registry)]) == 0
    assert "regenerated with the card's seed: identical" in capsys.readouterr().out


def test_a_generator_does_not_act_and_takes_no_agent_arguments(published):
    _, registry = published
    with pytest.raises(ValueError, match="transition generator: it does not act"):
        enjoy(NAME, registry=registry)
    with pytest.raises(ValueError, match="takes no env"):
        zoo.load(NAME, env="Hopper-v5", registry=registry)
    with pytest.raises(ValueError, match="no evaluation to redo"):
        reevaluate(NAME, "rounding", registry)


def test_records_without_a_generator_or_a_changed_generator_file_are_refused(synther_run, tmp_path):
    registry = tmp_path / "registry.json"
    with pytest.raises(ValueError, match="not runs on one saved generator's data"):
        publish_generator(sorted(synther_run.glob("td3bc_hopper-medium-replay_s*.json")), registry)
    with pytest.raises(ValueError, match="give at least one"):
        publish_generator([], registry)
    copy = tmp_path / "copy"
    (copy / "models").mkdir(parents=True)
    for record in synther_run.glob("*.json"):
        (copy / record.name).write_bytes(record.read_bytes())
    generator_file = "hopper-medium-replay" + synther.SUFFIX + ".safetensors"
    data = bytearray((synther_run / "models" / generator_file).read_bytes())
    data[-1] ^= 1
    (copy / "models" / generator_file).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="tampered or corrupt"):
        publish_generator(sorted(copy.glob("td3bc_hopper-medium-replay-synther_s*.json")), registry)


def test_the_command_line_publishes_a_generator(synther_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFGYM_HOME", str(tmp_path / "home"))
    registry = tmp_path / "registry.json"
    records = [str(path) for path in sorted(synther_run.glob("td3bc_hopper-medium-replay-synther_s*.json"))]
    assert main(["zoo", "add", "--generator", *records, "--registry", str(registry)]) == 0
    assert f"added {NAME}: td3bc on its data scores" in capsys.readouterr().out
    assert (
        main(["zoo", "add", "--generator", *records, "--registry", str(registry), "--env", "Hopper-v5"]) == 1
    )
    assert "--generator takes the records alone" in capsys.readouterr().err
