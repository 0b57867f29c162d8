"""The agent registry feeds the facade, the command line and the conformance test: registering a
toy agent (tests/toy_agent.py) is all it takes for each of them to find it."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import diffgym
from diffgym import registry
from diffgym.cli import build_parser, main

TESTS = Path(__file__).resolve().parent


def load_toy_module():
    spec = importlib.util.spec_from_file_location("toy_agent", TESTS / "toy_agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy():
    module = load_toy_module()
    registry.register(module.SPEC)
    yield module
    registry.unregister("toy")


def test_every_shipped_agent_is_registered_once_with_a_loadable_class():
    agents = registry.registered()
    expected = {
        "dql",
        "idql",
        "diffuser",
        "decision_diffuser",
        "diffusion_policy",
        "madiff",
        "td3bc",
        "iql",
        "bc",
        "team_bc",
    }
    assert expected <= set(agents)
    for name, spec in agents.items():
        cls = spec.load()
        assert registry.get(spec.class_name) is spec and cls.__name__ == spec.class_name
        assert {"MlpPolicy"} <= set(spec.policies), name
    baselines = {name for name, spec in agents.items() if spec.baseline}
    assert {"td3bc", "iql", "bc", "team_bc"} <= baselines and "dql" not in baselines


def test_facade_finds_a_registered_agent(toy):
    assert diffgym.ToyAgent is toy.ToyAgent
    assert "ToyAgent" in diffgym.__all__ and "ToyAgent" in dir(diffgym)
    namespace: dict = {}
    exec("from diffgym import ToyAgent", namespace)
    assert namespace["ToyAgent"] is toy.ToyAgent


def test_unknown_names_are_clear_errors():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchAgent'"):
        diffgym.NoSuchAgent  # noqa: B018
    with pytest.raises(KeyError, match="no agent named 'dqll'; known agents: dql, idql"):
        registry.get("dqll")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.AgentSpec("dql", "diffgym.agents.dql:DiffusionQL"))
    with pytest.raises(ValueError, match="unknown tasks"):
        registry.AgentSpec("x", "m:C", tasks=("flying",))


def test_command_line_trains_a_registered_agent(toy, pendulum_dataset, tmp_path, capsys):
    assert build_parser().parse_args(["train", "toy", "--dataset", "x"]).algo == "toy"
    code = main(
        [
            "train", "toy", "--env", "Pendulum-v1", "--dataset", pendulum_dataset.id, "--steps", "20",
            "--eval-episodes", "1", "--no-progress", "--save", str(tmp_path / "toy"),
        ]
    )  # fmt: skip
    assert code == 0
    assert "trained ToyAgent: 20 gradient steps" in capsys.readouterr().out
    assert toy.ToyAgent.load(tmp_path / "toy").num_timesteps == 20


def test_conformance_run_checks_a_registered_agent():
    """The conformance test, run with the toy agent registered by a plugin, collects and passes it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "toy_agent", "-p", "no:cacheprovider", "-p", "no:warnings",
         str(TESTS / "agents" / "test_conformance.py"), "-k", "toy"],
        env=env, capture_output=True, text=True, cwd=TESTS.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 10 and "deselected" in summary, summary
