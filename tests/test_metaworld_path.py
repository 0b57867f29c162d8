"""Issue 18, the path a new user takes to Meta-World: a file whose metadata names no ``gym.make``-able env
imports with the env's spaces, every command reaches the env families by id and kwargs, demonstrations
that never succeed are kept whole, and ``learn`` logs early and warns about a warm-up longer than itself.

Meta-World's envs are slow-ish to make: the tests that need one are tiny and skip without it.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from diffgym import DiffusionPolicy
from diffgym.agents.baselines import TD3BC
from diffgym.cli import main
from diffgym.data import imported_dataset_id, load_dataset
from diffgym.tasks.envs import env_family, make_env, register_env_family
from diffgym.tasks.extras import MissingExtraError
from diffgym.zoo.download import file_sha256

TINY_DP = dict(horizon=8, n_action_steps=4, num_timesteps=10, dim=8, dim_mults=(1, 2))
UNKNOWN_ID = "reach-v3-goal-observable"  # how Meta-World's demonstration files name their env


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def write_demos(path, obs_dim, act_dim, env_id=UNKNOWN_ID, lengths=(12, 12), success_at=(None, None), seed=0):
    """A D4RL-layout file of demonstrations (with next_observations and infos/success), metadata naming
    ``env_id``; demonstration ``i`` first succeeds at step ``success_at[i]`` (None: never)."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    ends = np.cumsum(lengths) - 1
    success = np.zeros(n, bool)
    for start, length, first in zip(ends - np.array(lengths) + 1, lengths, success_at, strict=True):
        if first is not None:
            success[start + first : start + length] = True
    observations = rng.uniform(-0.5, 0.5, (n + 1, obs_dim))
    with h5py.File(path, "w") as file:
        file["observations"], file["next_observations"] = observations[:-1], observations[1:]
        file["actions"] = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
        file["rewards"] = success.astype(np.float32)
        file["terminals"] = np.zeros(n, bool)
        file["timeouts"] = np.isin(np.arange(n), ends)
        file["infos/success"] = success.astype(np.float32)
        file.attrs["metadata"] = json.dumps({"env_id": env_id, "env_kwargs": {}})
    return path


def import_warnings(caught):
    return [str(w.message) for w in caught if "cannot make env" in str(w.message)]


# ----------------------------------------------------------------------------- (1) the env's spaces


def test_an_agent_imports_a_file_with_its_envs_spaces(tmp_path):
    """The metadata's env id is no Gymnasium id: the agent's env gives the spaces (not the arrays' ±inf)."""
    path = write_demos(tmp_path / "demos.hdf5", obs_dim=3, act_dim=1)
    env = gym.make("Pendulum-v1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = DiffusionPolicy("MlpPolicy", env, dataset=path, lr_warmup_steps=0, policy_kwargs=TINY_DP)
    assert not import_warnings(caught)  # the env stood in for the one the metadata names
    data = load_dataset(model.dataset)
    np.testing.assert_allclose(data.observation_space.high, env.observation_space.high)
    np.testing.assert_allclose(data.action_space.high, env.action_space.high)
    assert model.dataset != imported_dataset_id(path)  # an import of its own, with the env's spaces
    assert load_dataset(path, reference_spaces=(env.observation_space, env.action_space)).id == model.dataset


def test_an_unknown_env_id_in_the_metadata_warns_how_to_give_the_env(tmp_path):
    path = write_demos(tmp_path / "demos.hdf5", obs_dim=3, act_dim=1, seed=1)
    with pytest.warns(UserWarning, match="cannot make env") as caught:
        data = load_dataset(path)
    message = import_warnings(caught)[0]
    assert repr(UNKNOWN_ID) in message and "spaces come from the arrays" in message
    assert "build the agent with it" in message and "--env-kwargs" in message
    assert data.observation_space.high.max() == np.inf


def test_diffusion_policy_on_a_meta_world_env_takes_a_file_of_its_demonstrations(tmp_path):
    pytest.importorskip("metaworld")
    path = write_demos(tmp_path / "metaworld-reach-v3.hdf5", obs_dim=39, act_dim=4)
    env = make_env("Meta-World/MT1", {"env_name": "reach-v3"})
    model = DiffusionPolicy("MlpPolicy", env, dataset=path, lr_warmup_steps=0, policy_kwargs=TINY_DP)
    np.testing.assert_allclose(load_dataset(model.dataset).observation_space.low, env.observation_space.low)
    env.close()


# ----------------------------------------------------------------------------- (2) the command line


def test_env_families_by_id():
    assert env_family("Meta-World/MT1").module == "metaworld"
    assert env_family("PointMaze_UMaze-v3").module == "gymnasium_robotics"
    assert env_family("mpe2.simple_spread_v3").module == "mpe2"
    assert env_family("Ant-v5") is None and env_family("Hopper-v5") is None


def test_a_missing_family_names_its_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "metaworld", None)  # as if it were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'diffgym\[metaworld\]'"):
        register_env_family("Meta-World/MT1")
    argv = ["data", "make", "--env", "Meta-World/MT1", "--steps", "5", "--id", "test/reach/random-v0"]
    assert main(argv) == 1
    assert "pip install 'diffgym[metaworld]'" in capsys.readouterr().err


def test_env_kwargs_must_be_a_mapping(capsys):
    argv = ["data", "make", "--env", "Pendulum-v1", "--env-kwargs", "[1, 2]", "--steps", "5"]
    assert main([*argv, "--id", "test/pendulum/x-v0"]) == 1
    assert "--env-kwargs must be a mapping" in capsys.readouterr().err


def test_data_make_reaches_meta_world_by_id_and_kwargs(tmp_path):
    """In a fresh process, where nothing imported metaworld before."""
    pytest.importorskip("metaworld")
    script = (
        "from diffgym.cli import main; raise SystemExit(main(['data', 'make', '--env', 'Meta-World/MT1', "
        "'--env-kwargs', '{env_name: reach-v3}', '--steps', '10', '--id', 'test/reach/random-v0']))"
    )
    environment = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "minari"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "1 episodes, 10 transitions" in run.stdout


def test_import_and_train_on_meta_world_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("metaworld")
    path = write_demos(tmp_path / "demos.hdf5", obs_dim=39, act_dim=4, seed=2)
    env = ["--env", "Meta-World/MT1", "--env-kwargs", "{env_name: reach-v3}"]
    assert main(["data", "import", str(path), "--id", "test/reach/demos-v0", *env]) == 0
    assert np.isfinite(
        load_dataset("test/reach/demos-v0").observation_space.low[:3]
    ).all()  # the env's bounds
    small = ["batch_size=8", "lr_warmup_steps=0", "policy_kwargs.dim=8", "policy_kwargs.dim_mults=[1, 2]",
             "policy_kwargs.horizon=8", "policy_kwargs.n_action_steps=4",
             "policy_kwargs.sampler={name: ddim, num_steps: 1}"]  # fmt: skip
    argv = ["train", "diffusion_policy", *env, "--dataset", str(path), "--steps", "2", "--eval-episodes", "1"]
    argv += ["--set", *small, "--save", str(tmp_path / "dp"), "--no-progress", "--threads", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "evaluation over 1 episodes" in capsys.readouterr().out and (tmp_path / "dp.zip").exists()


# ----------------------------------------------------------------------------- (4) demonstrations


def test_demonstrations_that_never_succeed_are_kept_whole():
    from diffgym.zoo.benchmarks.metaworld import cut_after_success, first_success_steps

    success = np.zeros(30, bool)
    success[3:10] = True  # demonstration 0 (rows 0-9) succeeds at step 3; demonstration 1 never
    starts, ends = np.array([0, 10]), np.array([9, 29])
    first = first_success_steps(success, starts, ends)
    assert first.tolist() == [3, -1]
    assert cut_after_success(starts, ends, first, keep=2).tolist() == [5, 29]
    assert cut_after_success(starts, ends, first, keep=None).tolist() == [9, 29]


def test_the_mean_first_success_step_counts_succeeding_demonstrations_only(tmp_path):
    pytest.importorskip("metaworld")
    from diffgym.zoo.benchmarks.harness import Session
    from diffgym.zoo.benchmarks.metaworld import SUITE, demonstrations

    write_demos(
        tmp_path / "metaworld-reach-v3.hdf5", obs_dim=39, act_dim=4, lengths=(30, 30), success_at=(6, None)
    )
    session = Session(SUITE, data_dir=tmp_path, out=tmp_path, budget=SUITE.budget, scratch=tmp_path)
    info = demonstrations("metaworld-reach-v3", session).info
    assert info["first_success_step_mean"] == 6 and info["demos_without_success"] == 1
    keep = SUITE.params["keep_after_success"]
    assert info["transitions"] == (6 + keep + 1) + 30  # the failing demonstration whole


# ----------------------------------------------------------------------------- (5) learn's log and warm-up


def tiny_td3bc(dataset, **kwargs):
    return TD3BC(
        "MlpPolicy", gym.make("Pendulum-v1"), dataset=dataset, batch_size=16, seed=0,
        policy_kwargs=dict(hidden_dim=8), **kwargs,
    )  # fmt: skip


@pytest.fixture
def pendulum(minari_store):
    from diffgym.data import collect_dataset

    return collect_dataset(gym.make("Pendulum-v1"), None, "test/pendulum/random-v0", n_steps=100, seed=0)


def logged_steps(text):
    return [int(line.split("|")[2]) for line in text.splitlines() if "total_gradient_steps" in line]


# the recipe of the benchmark's demonstrations (diffgym data make-metaworld)


def test_the_scripted_expert_recipe_writes_the_benchmarks_layout_reproducibly(tmp_path):
    pytest.importorskip("metaworld")
    from diffgym.data import import_d4rl
    from diffgym.tasks.metaworld import make_demonstrations

    made = make_demonstrations("reach-v3", tmp_path / "a.hdf5", episodes=2, seed=3, horizon=60)
    with h5py.File(tmp_path / "a.hdf5", "r") as file:
        arrays = {
            key: file[key][()]
            for key in ("observations", "actions", "timeouts", "terminals", "infos/success")
        }
        metadata = json.loads(file.attrs["metadata"])
    assert arrays["observations"].shape == (120, 39) and arrays["actions"].shape == (120, 4)
    assert np.abs(arrays["actions"]).max() <= 1.0 and arrays["infos/success"].dtype == bool
    assert np.flatnonzero(arrays["timeouts"]).tolist() == [59, 119] and not arrays["terminals"].any()
    assert (
        metadata == {key: value for key, value in made.items() if key != "seconds"}
        and made["seconds"] >= 0
        and made["env_id"] == "Meta-World/MT1"
        and made["env_kwargs"] == {"env_name": "reach-v3"}
    )
    first = [int(np.argmax(arrays["infos/success"][i * 60 : (i + 1) * 60])) for i in range(2)]
    assert made["success_rate"] == 1.0 and made["first_success_step"]["mean"] == np.mean(first)
    make_demonstrations("reach-v3", tmp_path / "b.hdf5", episodes=2, seed=3, horizon=60)
    make_demonstrations("reach-v3", tmp_path / "c.hdf5", episodes=2, seed=4, horizon=60)
    with h5py.File(tmp_path / "b.hdf5", "r") as same, h5py.File(tmp_path / "c.hdf5", "r") as other:
        np.testing.assert_array_equal(same["observations"][()], arrays["observations"])
        assert not np.array_equal(other["observations"][()], arrays["observations"])
    assert file_sha256(tmp_path / "b.hdf5") == file_sha256(tmp_path / "a.hdf5")  # a file its sha256 names
    dataset = import_d4rl(tmp_path / "a.hdf5")  # the env from the metadata: its spaces, not guessed ones
    env = make_env("Meta-World/MT1", {"env_name": "reach-v3"})
    assert dataset.action_space == env.action_space and dataset.total_steps == 120


def test_the_benchmark_makes_a_tasks_file_the_data_folder_lacks_once(tmp_path, monkeypatch, capsys):
    pytest.importorskip("metaworld")
    from diffgym.tasks.metaworld import make_demonstrations
    from diffgym.zoo.benchmarks import metaworld as suite_module
    from diffgym.zoo.benchmarks.harness import Session

    made = []

    def tiny(task, path):  # the recipe, shortened
        made.append(task)
        return make_demonstrations(task, path, episodes=2, horizon=30)

    monkeypatch.setattr(suite_module, "make_demonstrations", tiny)
    suite = suite_module.SUITE
    (tmp_path / "data").mkdir()
    session = Session(
        suite, data_dir=tmp_path / "data", out=tmp_path / "out", budget=suite.budget, scratch=tmp_path
    )
    first = suite_module.demonstrations_file("metaworld-hammer-v3", session)
    assert first == tmp_path / "out" / "metaworld" / "data" / "metaworld-hammer-v3.hdf5" and first.exists()
    assert "making" in capsys.readouterr().out
    assert suite_module.demonstrations_file("metaworld-hammer-v3", session) == first and made == ["hammer-v3"]
    info = suite_module.demonstrations("metaworld-hammer-v3", session).info
    assert info["file"] == str(first) and info["episodes"] == 2
    assert len(suite.datasets) >= 10 and "metaworld-assembly-v3" in suite.datasets


def test_make_metaworld_checks_every_task_and_file_before_any_rollout(tmp_path, capsys):
    pytest.importorskip("metaworld")
    (tmp_path / "metaworld-push-v3.hdf5").write_bytes(b"kept")
    assert main(["data", "make-metaworld", "push-v3", "reach-v4", "--out", str(tmp_path)]) == 1
    assert "no task 'reach-v4' with a scripted policy; nearest: reach-v3" in capsys.readouterr().err
    assert (
        main(["data", "make-metaworld", "reach-v3", "push-v3", "--out", str(tmp_path), "--episodes", "1"])
        == 1
    )
    assert "metaworld-push-v3.hdf5 exists; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metaworld-push-v3.hdf5"]
    assert (tmp_path / "metaworld-push-v3.hdf5").read_bytes() == b"kept"
    too_long = [
        "data",
        "make-metaworld",
        "push-v3",
        "--out",
        str(tmp_path),
        "--overwrite",
        "--horizon",
        "501",
    ]
    assert main(too_long) == 1 and "1 to 500 steps (Meta-World's episode length)" in capsys.readouterr().err
    args = ["data", "make-metaworld", "push-v3", "--out", str(tmp_path), "--episodes", "1", "--horizon", "5"]
    assert main([*args, "--overwrite"]) == 0
    assert "1 episodes, 5 steps" in capsys.readouterr().out


def test_learn_logs_at_its_first_check_and_then_by_wall_time(pendulum, capsys, monkeypatch):
    model = tiny_td3bc(pendulum, check_every=2, verbose=1)
    model.learn(5)  # log_interval 1000: before, nothing was logged
    assert logged_steps(capsys.readouterr().out) == [2, 5]  # the first check, and the end
    monkeypatch.setattr(TD3BC, "log_every_seconds", 0.0)
    model.learn(5)
    assert logged_steps(capsys.readouterr().out) == [2, 4, 5]
    quiet = tiny_td3bc(pendulum, check_every=2)
    quiet.learn(5)
    assert logged_steps(capsys.readouterr().out) == []


def test_a_warm_up_as_long_as_the_call_warns_once(pendulum):
    model = tiny_td3bc(pendulum, lr_warmup_steps=10)
    with pytest.warns(UserWarning, match=r"never reaches its peak before gradient step 10"):
        model.learn(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.learn(3, reset_num_timesteps=False)  # once per model
        tiny_td3bc(pendulum, lr_warmup_steps=10).learn(11)  # reaches it


def test_cli_envs_module_is_the_one_place_for_env_options():
    text = Path(__file__).parents[1].joinpath("cli", "train.py").read_text()
    assert "gym.make(" not in text  # every env of the command line is made through diffgym.tasks.envs
