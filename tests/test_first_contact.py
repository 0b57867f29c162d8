"""What a newcomer meets first (issue 19): install, data ids and paths, extras, cached imports, re-running,
help, the progress bar, the README's examples and commands."""

import importlib.abc
import io
import json
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import h5py
import numpy as np
import pytest

from diffgym.cli import main
from diffgym.data import collect_dataset, load_dataset, make_parallel_env
from diffgym.data.d4rl import ENV_UNAVAILABLE
from diffgym.data.team.checks import check_agents_and_spaces
from diffgym.data.validation import DatasetSpaceMismatchError
from diffgym.tasks.extras import MissingExtraError

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SPREAD = {"N": 3, "local_ratio": 0.5, "max_cycles": 25, "continuous_actions": True}


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


@pytest.fixture
def no_download(monkeypatch):
    """Minari's remote, replaced: every call is recorded and fails (no test reaches the internet)."""
    calls = []

    def download(dataset_id, *args, **kwargs):
        calls.append(dataset_id)
        raise ValueError(f"Couldn't find any version for dataset {dataset_id} in the remote Farama server.")

    monkeypatch.setattr("minari.storage.hosting.download_dataset", download)
    return calls


class _Hidden(importlib.abc.MetaPathFinder):
    """Makes top-level packages look uninstalled, as on a machine without their extra."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def hide(patch, *names):
    for module in [m for m in sys.modules if m.partition(".")[0] in names]:
        patch.delitem(sys.modules, module)
    patch.setattr(sys, "meta_path", [_Hidden(names), *sys.meta_path])


def write_spread_file(path, action_low=0.0):
    """A tiny MPE simple_spread file with an agent axis: 2 episodes of 5 steps, actions in [0, 1]."""
    rng = np.random.default_rng(0)
    n = 10
    timeouts = np.zeros((n, 3), bool)
    timeouts[[4, 9]] = True
    with h5py.File(path, "w") as file:
        file["observations"] = rng.normal(size=(n, 3, 18)).astype(np.float32)
        file["actions"] = rng.uniform(action_low, 1, size=(n, 3, 5)).astype(np.float32)
        file["rewards"] = rng.normal(size=(n, 3)).astype(np.float32)
        file["terminals"] = np.zeros((n, 3), bool)
        file["timeouts"] = timeouts
        metadata = {
            "env_id": "mpe2 simple_spread_v3 parallel_env",
            "env_kwargs": SPREAD,
            "agents": ["agent_0", "agent_1", "agent_2"],
        }
        file.attrs["metadata"] = json.dumps(metadata)
    return path


# (1) Minari ids: the remote's dependency is installed; a typo of a local id is named as such


def test_base_install_has_what_minaris_remote_needs():
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = pyproject[pyproject.index("dependencies = [") : pyproject.index("[project.optional")]
    minari = re.search(r'"minari\[([^\]]*)\]', dependencies)
    assert (minari and "hf" in minari.group(1).split(",")) or '"huggingface_hub' in dependencies


def test_typo_of_a_local_id_is_named_and_not_downloaded(no_download):
    collect_dataset(gym.make("Pendulum-v1"), None, "d4rl/hopper/medium-v0", n_steps=20, seed=0)
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("d4rl/hoper/medium-v0", download=True)
    message = str(error.value)
    assert "no local dataset has id 'd4rl/hoper/medium-v0'" in message
    assert "local ids near it: d4rl/hopper/medium-v0" in message and "minari download" in message
    assert no_download == []  # refused before any download
    with pytest.raises(FileNotFoundError, match="local ids near it: d4rl/hopper/medium-v0"):
        load_dataset("d4rl/hoper/medium-v0")  # download=False: the same list


def test_an_id_the_remote_lacks_says_first_that_it_is_not_local(no_download):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("mujoco/hopper/medium-v0", download=True)
    message = str(error.value)
    assert no_download == ["mujoco/hopper/medium-v0"]  # another id than a local one's: Minari's to fetch
    assert message.startswith("no local dataset has id 'mujoco/hopper/medium-v0'")
    assert "Minari could not download it: Couldn't find any version" in message


def test_an_imported_id_is_local_by_construction_and_never_downloaded(no_download):
    with pytest.raises(
        FileNotFoundError, match=r"Ids under imported/ name local imports .* pass the \.hdf5 file"
    ):
        load_dataset("imported/hopper-medium-0123456789ab-v0", download=True)
    assert no_download == []


# (3) extras: one message, naming the pip install command


def test_missing_mpe2_names_the_extra(monkeypatch):
    with monkeypatch.context() as patch:
        hide(patch, "mpe2")
        with pytest.raises(MissingExtraError, match=r"mpe2 is not installed.*pip install 'diffgym\[mpe\]'"):
            make_parallel_env("mpe2.simple_spread_v3", SPREAD)


def test_missing_gymnasium_robotics_names_the_extra(monkeypatch):
    from diffgym.tasks import mazes

    with monkeypatch.context() as patch:
        hide(patch, "gymnasium_robotics")
        with pytest.raises(ModuleNotFoundError, match=r"pip install 'diffgym\[maze\]'"):
            mazes.maze_eval_map("umaze")


def test_train_madiff_without_mpe2_says_which_extra(tmp_path, monkeypatch, capsys):
    path = write_spread_file(tmp_path / "mpe-spread-tiny.hdf5")
    with monkeypatch.context() as patch:
        hide(patch, "mpe2")
        with pytest.warns(UserWarning, match="cannot make the PettingZoo env"):
            code = main(["train", "madiff", "--dataset", str(path), "--steps", "1", "--no-progress"])
    assert code == 1
    assert "pip install 'diffgym[mpe]'" in capsys.readouterr().err


def test_the_command_line_names_the_extra_of_any_missing_module(monkeypatch, capsys):
    def needs_metaworld(args):
        raise ModuleNotFoundError("No module named 'metaworld'", name="metaworld")

    monkeypatch.setattr("diffgym.cli.data.data_info", needs_metaworld)
    assert main(["data", "info", "x/y-v0"]) == 1
    assert "pip install 'diffgym[metaworld]'" in capsys.readouterr().err


# (4) an import made without its env is not kept once the env can be made


def test_import_without_the_env_is_made_afresh_once_its_package_is_installed(tmp_path, monkeypatch):
    path = write_spread_file(tmp_path / "mpe-spread-tiny.hdf5")
    with monkeypatch.context() as patch:
        hide(patch, "mpe2")
        with pytest.warns(UserWarning, match=r"cannot make the PettingZoo env.*diffgym\[mpe\]"):
            guessed = load_dataset(path)
        assert guessed.storage.metadata[ENV_UNAVAILABLE]["missing_modules"] == ["mpe2"]
        assert guessed.action_space["agent_0"].low.min() == -1  # guessed from the arrays
        assert load_dataset(path).id == guessed.id  # still missing: the cached import is kept
    with pytest.warns(UserWarning, match="importing .* afresh"):
        fresh = load_dataset(path)  # mpe2 is installed now
    assert fresh.id == guessed.id and ENV_UNAVAILABLE not in fresh.storage.metadata
    assert fresh.action_space["agent_0"].low.min() == 0  # the env's Box(0, 1)
    check_agents_and_spaces(fresh, make_parallel_env("mpe2.simple_spread_v3", SPREAD))


def test_space_mismatch_of_a_cached_import_says_how_to_import_it_afresh(tmp_path, monkeypatch):
    path = write_spread_file(tmp_path / "mpe-spread-tiny.hdf5")
    with monkeypatch.context() as patch:
        hide(patch, "mpe2")
        with pytest.warns(UserWarning, match="cannot make the PettingZoo env"):
            guessed = load_dataset(path)
    env = make_parallel_env("mpe2.simple_spread_v3", SPREAD)
    with pytest.raises(DatasetSpaceMismatchError) as error:
        check_agents_and_spaces(guessed, env)
    message = str(error.value)
    assert "bounds differ" in message
    assert f"diffgym data import {path} --id {guessed.id} --overwrite" in message
    assert f"minari delete {guessed.id}" in message and "could not be made" in message


def write_flat_file(path, metadata=None):
    """A tiny single-agent D4RL-layout file: 8 rows, observations (3,), actions (1,) in [-1, 1]."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        file["observations"] = rng.normal(size=(8, 3)).astype(np.float32)
        file["actions"] = rng.uniform(-1, 1, size=(8, 1)).astype(np.float32)
        file["rewards"] = rng.normal(size=8).astype(np.float32)
        file["terminals"] = np.zeros(8, bool)
        file["timeouts"] = np.arange(8) % 4 == 3
        if metadata is not None:
            file.attrs["metadata"] = json.dumps(metadata)
    return path


def test_single_agent_import_without_its_env_package_is_made_afresh_later(tmp_path, monkeypatch):
    from diffgym.data import d4rl

    monkeypatch.setitem(d4rl._ENV_PACKAGES, "no_such_suite", ("No-Such-Suite", "nosuch"))
    path = write_flat_file(tmp_path / "odd.hdf5", metadata={"env_id": "NoSuchSuite/Task-v0"})
    with pytest.warns(UserWarning, match=r"pip install 'diffgym\[nosuch\]'"):
        guessed = load_dataset(path)
    assert guessed.storage.metadata[ENV_UNAVAILABLE]["missing_modules"] == ["no_such_suite"]
    assert load_dataset(path).id == guessed.id  # still not installed: kept
    monkeypatch.setattr(d4rl, "is_installed", lambda module: True)  # as if it were installed now
    with pytest.warns(UserWarning) as caught:
        load_dataset(path)
    assert any("importing" in str(w.message) and "afresh" in str(w.message) for w in caught)


def test_an_import_with_other_spaces_says_how_to_import_it_afresh(tmp_path, capsys):
    from diffgym.data.d4rl import explain_cached_import
    from diffgym.data.validation import check_spaces

    path = write_flat_file(tmp_path / "pendulum-like.hdf5")  # no env: actions Box(-1, 1), Pendulum's (-2, 2)
    guessed = load_dataset(path)
    with pytest.raises(DatasetSpaceMismatchError) as error, explain_cached_import(guessed):
        check_spaces(guessed.action_space, gym.make("Pendulum-v1").action_space, "action")
    message = str(error.value)
    assert "bounds differ" in message and f"diffgym data import {path}" in message
    assert "--env ENV_ID --env-kwargs YAML --overwrite" in message
    # an agent built with the env imports the file with the env's spaces instead (issue 18)
    argv = ["train", "dql", "--env", "Pendulum-v1", "--dataset", str(path), "--steps", "1", "--no-progress"]
    argv += ["--eval-episodes", "1", "--set", "batch_size=4", "--save", str(tmp_path / "dql")]
    assert main(argv) == 0, capsys.readouterr().err


# (5) paths: name the path and what is wrong with it


def test_missing_hdf5_path_is_named(tmp_path, capsys):
    missing = tmp_path / "no-such-dir" / "hopper-medium.hdf5"
    for dataset in (str(missing), missing):
        with pytest.raises(FileNotFoundError, match=f"{re.escape(str(missing))} does not exist"):
            load_dataset(dataset)
    with pytest.raises(FileNotFoundError, match="does not exist, and it is not a Minari dataset id"):
        load_dataset("../datasets/hopper-medum")
    assert main(["data", "info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Malformed" not in err


def test_a_file_that_is_not_hdf5_is_named(tmp_path, capsys):
    path = tmp_path / "notes.hdf5"
    path.write_text("not a dataset")
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not an HDF5 file"):
        load_dataset(path)
    assert main(["data", "import", str(path)]) == 1
    assert "is not an HDF5 file" in capsys.readouterr().err


# (6) re-running: --overwrite, named when it is needed


def test_data_make_names_overwrite(capsys):
    make = ["data", "make", "--env", "Pendulum-v1", "--steps", "20", "--id", "test/pendulum/again-v0"]
    assert main(make) == 0
    assert main(make) == 1
    assert "already exists" in (err := capsys.readouterr().err) and "--overwrite" in err
    assert main([*make, "--overwrite"]) == 0


def test_data_import_has_overwrite(tmp_path, capsys):
    path = write_spread_file(tmp_path / "mpe-spread-tiny.hdf5")
    imp = ["data", "import", str(path), "--id", "test/spread/tiny-v0"]
    assert main(imp) == 0
    assert main(imp) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*imp, "--overwrite"]) == 0
    assert main(["data", "import", str(path)]) == 0  # the default id: imported/<name>-<hash>-v0
    assert main(["data", "import", str(path)]) == 1
    assert main(["data", "import", str(path), "--overwrite"]) == 0


# (7) help: the agent's own hyperparameters; every command line of the README parses


def test_train_algo_help_shows_its_hyperparameter_file(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "dql", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "DiffusionQL" in out and "dql.yml" in out and "keys: default, hopper-medium" in out
    assert "num_candidates: 50  # candidate actions per decision" in out


def readme_command_lines():
    """Every ``diffgym ...`` command in the README's bash blocks (continued lines joined, ``&&``
    chains split, comments cut)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    commands = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["diffgym"]:
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("argv", readme_command_lines(), ids=" ".join)
def test_every_readme_command_parses(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0, capsys.readouterr().err


def test_readme_commands_are_found():
    commands = readme_command_lines()
    assert commands[:2] == [["zoo", "list"], ["enjoy", "dql/hopper-medium", "--episodes", "3"]]
    assert commands[3][:2] == ["train", "idql"] and len(commands) >= 15


# (8) small things everyone sees


def test_progress_bar_reads_seconds_per_step_below_one_step_per_second():
    from diffgym.progress import StepProgressBar

    bar = StepProgressBar(file=io.StringIO())
    bar.init_callback(SimpleNamespace(num_timesteps=0, get_env=lambda: None, logger=None))
    bar.on_training_start({"total_timesteps": 10}, {})
    slow = bar.pbar.format_meter(**{**bar.pbar.format_dict, "n": 1, "elapsed": 4.0})
    fast = bar.pbar.format_meter(**{**bar.pbar.format_dict, "n": 8, "elapsed": 4.0})
    bar.on_training_end()
    assert "4.00s/step" in slow and "2.00step/s" in fast


class _FakeAgent:
    """Stands in for DiffusionQL in the README's example: acts with zeros, learns nothing."""

    def __init__(self, policy, env, **kwargs):
        self.env = env

    def learn(self, *args, **kwargs):
        return self

    def save(self, path):
        pass

    @classmethod
    def load(cls, path, env):
        return cls("MlpPolicy", env)

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.zeros((len(observation), 3), np.float32), state


def test_readme_first_example_has_no_monitor_warning(capsys):
    use = README[README.index("## Use") :]
    code = re.search(r"```python\n(.*?)```", use, flags=re.S).group(1)
    assert "from diffgym import DiffusionQL" in code
    code = code.replace("from diffgym import DiffusionQL", "").replace(
        "n_eval_episodes=10", "n_eval_episodes=1"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(code, {"DiffusionQL": _FakeAgent})
    assert not [w for w in caught if "Monitor" in str(w.message)]


def test_what_the_readme_commands_save_is_ignored_by_git():
    names = ["quickstart_idql.zip", "dql_hopper.zip", "diffgym-results/d4rl.md"]
    try:
        found = subprocess.run(
            ["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        pytest.skip("no git")
    if found.returncode == 128:
        pytest.skip("not a git work tree")
    assert found.stdout.split() == names


def test_command_line_detects_a_clone_imported_as_a_namespace_package(tmp_path):
    """Run from the folder holding a clone named diffgym/ (no __init__.py), Python imports the clone as a
    namespace package; the command line (its files are in the clone) says so instead of a traceback."""
    clone = tmp_path / "diffgym"
    clone.mkdir()
    (clone / "cli").symlink_to(ROOT / "cli", target_is_directory=True)
    script = (
        "import json, diffgym; from diffgym.cli import main; "
        "namespace = getattr(diffgym, '__file__', None) is None; "
        "code = main(['--help']) if namespace else None; print(json.dumps([namespace, code]))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    namespace, code = json.loads(run.stdout.strip().splitlines()[-1])
    if not namespace:
        pytest.skip("diffgym is installed as a regular package here: no namespace package can shadow it")
    assert code == 1
    assert "namespace package 'diffgym'" in run.stderr and str(clone) in run.stderr
