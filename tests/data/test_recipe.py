"""``diffgym data make-d4rl``: D4RL's recipe on a tiny SAC run, written in D4RL's layout and importable."""

import json

import h5py
import numpy as np
import pytest

from diffgym.cli import main
from diffgym.data import load_dataset
from diffgym.data.recipe import D4RLRecipe, make_d4rl_datasets

TINY = D4RLRecipe(
    "Pendulum-v1",
    train_steps=300,
    checkpoint_every=100,
    transitions=250,
    medium_return=-1200.0,
    eval_episodes=1,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("d4rl")
    return make_d4rl_datasets(TINY, out, log=lambda line: None)


def read(path):
    with h5py.File(path, "r") as file:
        return {key: file[key][()] for key in file}, json.loads(file.attrs["metadata"])


def test_every_set_is_written_in_d4rls_layout(made):
    assert sorted(made) == ["expert", "medium", "medium-replay", "random"]
    assert [path.name for path in made.values()] == [f"pendulum-{kind}.hdf5" for kind in made]
    for kind, path in made.items():
        arrays, metadata = read(path)
        assert set(arrays) == {
            "observations",
            "actions",
            "rewards",
            "next_observations",
            "terminals",
            "timeouts",
        }
        assert arrays["observations"].dtype == np.float32 and arrays["timeouts"].dtype == bool
        assert arrays["timeouts"][-1] and metadata["kind"] == kind and metadata["env_id"] == "Pendulum-v1"
        rows = metadata["replay_until_step"] if kind == "medium-replay" else 250
        assert len(arrays["rewards"]) == rows


def test_medium_is_the_checkpoint_nearest_the_target_and_expert_the_last(made):
    _, medium = read(made["medium"])
    _, expert = read(made["expert"])
    checkpoints = {int(step): value for step, value in medium["checkpoints"].items()}
    assert sorted(checkpoints) == [100, 200, 300] and expert["checkpoint_step"] == 300
    nearest = min(checkpoints, key=lambda step: abs(checkpoints[step] + 1200.0))
    assert medium["checkpoint_step"] == nearest


def test_medium_replay_is_sacs_buffer_in_order(made):
    arrays, metadata = read(made["medium-replay"])
    steps = metadata["replay_until_step"]
    consecutive = ~(arrays["terminals"][:-1] | arrays["timeouts"][:-1])
    np.testing.assert_array_equal(
        arrays["next_observations"][:-1][consecutive], arrays["observations"][1:][consecutive]
    )
    assert len(arrays["rewards"]) == steps


def test_the_sets_import_into_minari(made, minari_store):
    dataset = load_dataset(str(made["random"]))
    assert dataset.total_steps == 250


def test_an_env_without_a_reference_needs_a_medium_return(tmp_path, capsys):
    argv = ["data", "make-d4rl", "--env", "Pendulum-v1", "--out", str(tmp_path), "--train-steps", "10"]
    assert main(argv) == 1
    assert (
        "no expert reference return for 'Pendulum-v1': give medium_return (--medium-return)"
        in capsys.readouterr().err
    )


def test_the_envs_arguments_make_every_env_of_the_recipe(tmp_path, capsys):
    heavy = D4RLRecipe("Pendulum-v1", env_kwargs={"g": 5.0})
    assert heavy.make_env().unwrapped.g == 5.0
    argv = ["data", "make-d4rl", "--env", "Pendulum-v1", "--env-kwargs", "{g: 5.0}", "--out", str(tmp_path)]
    assert main([*argv, "--train-steps", "10"]) == 1  # accepted: it stops at the missing reference only
    assert "give medium_return (--medium-return)" in capsys.readouterr().err
