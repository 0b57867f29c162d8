import h5py
import numpy as np
import pytest

from diffgym.cli import build_parser, main
from diffgym.cli.benchmark import run_benchmark
from diffgym.cli.data import data_info


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


@pytest.mark.parametrize(
    "argv",
    [[], ["data"], ["data", "make"], ["data", "import"], ["data", "info"], ["train"], ["benchmark"]],
)
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: diffgym" in capsys.readouterr().out


def test_each_command_is_one_function():
    args = build_parser().parse_args(["data", "info", "some/id-v0"])
    assert args.func is data_info and args.dataset == "some/id-v0"


def test_data_make_and_info(capsys):
    argv = ["data", "make", "--env", "Pendulum-v1", "--policy", "random", "--steps", "250"]
    assert main([*argv, "--id", "test/pendulum/random-v0"]) == 0
    assert "2 episodes, 250 transitions" in capsys.readouterr().out
    assert main(["data", "info", "test/pendulum/random-v0"]) == 0
    out = capsys.readouterr().out
    assert (
        "episodes" in out
        and "250" in out
        and "Pendulum-v1" in out
        and "reference random / expert  none" in out
    )


def test_data_import_and_info(tmp_path, capsys):
    n = 10
    with h5py.File(tmp_path / "hopper-tiny.hdf5", "w") as file:
        file["observations"] = np.zeros((n, 11), np.float32)
        file["actions"] = np.zeros((n, 3), np.float32)
        file["rewards"] = np.ones(n, np.float32)
        file["terminals"] = np.arange(n) == 4
        file["timeouts"] = np.arange(n) == n - 1
    assert main(["data", "import", str(tmp_path / "hopper-tiny.hdf5"), "--id", "test/hopper/tiny-v0"]) == 0
    assert "2 episodes, 8 transitions" in capsys.readouterr().out  # no next_observations: last rows dropped
    assert main(["data", "info", "test/hopper/tiny-v0"]) == 0
    out = capsys.readouterr().out
    assert "4.00 / 4.00 / 4.00" in out and "-20.2723 / 3234.3 (D4RL" in out


def test_errors_are_reported_not_raised(capsys):
    assert main(["data", "info", "test/missing/data-v0"]) == 1
    assert "diffgym: error" in capsys.readouterr().err
    assert main(["data", "make", "--env", "Pendulum-v1", "--id", "test/x/y-v0"]) == 1


def test_train_evaluates_and_saves(tmp_path, capsys):
    make = ["data", "make", "--env", "Pendulum-v1", "--steps", "300", "--id", "test/pendulum/random-v0"]
    assert main(make) == 0
    small = ["batch_size=32", "policy_kwargs.num_candidates=4", "policy_kwargs.actor_hidden=32"]
    argv = ["train", "dql", "--env", "Pendulum-v1", "--dataset", "test/pendulum/random-v0", "--steps", "20"]
    argv += ["--eval-episodes", "1", "--set", *small, "--save", str(tmp_path / "dql"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "hyperparameters: zoo/hyperparams/dql.yml, key 'default'" in out and '"batch_size": 32' in out
    assert "trained DiffusionQL: 20 gradient steps" in out and "evaluation over 1 episodes" in out
    assert (tmp_path / "dql.zip").exists()


def test_train_madiff_on_the_env_its_dataset_records(tmp_path, capsys):
    from mpe2 import simple_spread_v3

    from diffgym.data import collect_multiagent_dataset

    kwargs = {"N": 3, "max_cycles": 8, "continuous_actions": True}
    collect_multiagent_dataset(
        simple_spread_v3.parallel_env(**kwargs), None, "test/spread/random-v0", n_episodes=4,
        env_id="mpe2.simple_spread_v3", env_kwargs=kwargs,
    )  # fmt: skip
    small = ["policy_kwargs.horizon=4", "policy_kwargs.dim=16", "policy_kwargs.dim_mults=[1, 2]",
             "policy_kwargs.sampler={name: ddim, num_steps: 2}"]  # fmt: skip
    argv = ["train", "madiff", "--dataset", "test/spread/random-v0", "--steps", "5", "--eval-episodes", "1"]
    argv += ["--set", *small, "--save", str(tmp_path / "team"), "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained MADiff: 5 gradient steps" in out and "evaluation over 1 episodes" in out
    assert (tmp_path / "team.zip").exists()
    assert main(["train", "dql", "--dataset", "test/spread/random-v0"]) == 1  # single-agent agents need --env


def test_data_make_overwrite(capsys):
    make = ["data", "make", "--env", "Pendulum-v1", "--steps", "50", "--id", "test/pendulum/again-v0"]
    assert main(make) == 0
    assert main(make) == 1  # the id exists: a clear error, nothing replaced
    assert main([*make, "--overwrite"]) == 0


def test_benchmark_options(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFGYM_DATA_DIR", str(tmp_path))
    args = build_parser().parse_args(
        ["benchmark", "d4rl", "--steps", "30", "--set", "eta=2", "dql:grad_norm=1"]
    )
    assert args.func is run_benchmark and args.data_dir == tmp_path and args.steps == 30
    assert args.out.parts == ("diffgym-results",) and not args.out.is_absolute()  # the current folder
    assert args.set == ["eta=2", "dql:grad_norm=1"] and args.seeds is None  # the suite's default
    assert build_parser().parse_args(["benchmark", "d4rl"]).data_dir is not None


def test_benchmark_refuses_unknown_suites_and_agents(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "nope"])
    assert exit_info.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert main(["benchmark", "d4rl", "--agents", "nope", "--out", str(tmp_path)]) == 1
    assert (
        "diffgym: error: suite 'd4rl' has no agent 'nope'; its agents: td3bc, iql, bc, dql, idql"
        in capsys.readouterr().err
    )
