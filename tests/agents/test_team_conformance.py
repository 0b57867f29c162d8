"""What every registered team agent (``"team"`` in its tasks) promises, checked the same way for each,
on MPE simple_spread with a tiny random team dataset. The single-agent promises are in
test_conformance.py; MADiff's own behaviour is in test_madiff.py."""

from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from mpe2 import simple_spread_v3

from diffgym import registry
from diffgym.data import AgentMismatchError, collect_multiagent_dataset
from diffgym.serialization import ModelFileError
from diffgym.wrappers import evaluate_team
from diffgym.zoo.format import read_model_folder, write_model_folder

TINY = dict(batch_size=16, check_every=10, seed=0)
#: registry name -> tiny settings (agents not listed: their defaults)
SETTINGS = {
    "madiff": dict(
        TINY,
        ema_start=5,
        policy_kwargs=dict(
            horizon=4, num_timesteps=5, dim=8, dim_mults=(1, 2), inverse_hidden=16, sampler="ddpm"
        ),
    ),
    "team_bc": dict(TINY, policy_kwargs=dict(hidden_dim=16)),
}


class Case(NamedTuple):
    spec: registry.AgentSpec
    kwargs: dict[str, Any]

    def make(self, env: Any, **overrides: Any) -> Any:
        return self.spec.make("MlpPolicy", env, **{**self.kwargs, **overrides})


CASES = {
    name: Case(spec, SETTINGS.get(name, dict(TINY)))
    for name, spec in registry.registered().items()
    if spec.team
}


def spread(n_agents=2):
    return simple_spread_v3.parallel_env(N=n_agents, max_cycles=10, continuous_actions=True)


@pytest.fixture(scope="module")
def team_dataset(minari_store):
    return collect_multiagent_dataset(spread(), None, "test/spread/random-v0", n_episodes=6, seed=0)


@pytest.fixture(params=list(CASES), scope="module")
def case(request):
    return CASES[request.param]


@pytest.fixture(scope="module")
def trained(case, team_dataset):
    return case.make(spread(), dataset=team_dataset).learn(20)


def test_team_agents_are_registered():
    assert {"madiff", "team_bc"} <= set(CASES)


def test_predict_gives_an_action_per_agent_in_its_bounds_and_reproduces(trained):
    env = spread()
    observations, _ = env.reset(seed=0)
    actions, _ = trained.predict(observations, deterministic=True)
    again, _ = trained.predict(observations, deterministic=True)
    assert set(actions) == set(env.possible_agents)
    for agent, action in actions.items():
        space = env.action_space(agent)
        assert action.shape == space.shape and space.contains(action)
        np.testing.assert_array_equal(action, again[agent])


def test_save_load_predicts_the_same(trained, case, tmp_path):
    observations, _ = spread().reset(seed=1)
    before, _ = trained.predict(observations, deterministic=True)
    trained.save(tmp_path / "team")
    loaded = case.spec.load().load(tmp_path / "team", env=spread())
    after, _ = loaded.predict(observations, deterministic=True)
    for agent in before:
        np.testing.assert_array_equal(before[agent], after[agent])


@pytest.mark.parametrize("deterministic", [True, False])
def test_the_zoo_format_predicts_the_same(trained, tmp_path, deterministic):
    results = {"final": {"returns": [0.0], "mean_return": 0.0, "score": None}}
    files = write_model_folder(
        trained, tmp_path, name="team/test", env={"id": "mpe2.simple_spread_v3", "kwargs": {}},
        dataset={"id": "test"}, training={}, results=results,
    )  # fmt: skip
    loaded = read_model_folder(tmp_path, files, env=spread())
    assert loaded.policy.state_dict().keys() == trained.policy.state_dict().keys()
    observations, _ = spread().reset(seed=1)
    for _ in range(2):
        expected, _ = trained.predict(observations, deterministic=deterministic)
        actual, _ = loaded.predict(observations, deterministic=deterministic)
        for agent in expected:
            np.testing.assert_array_equal(actual[agent], expected[agent])


def test_a_corrupt_model_file_is_refused(trained, case, tmp_path):
    trained.save(tmp_path / "team")
    data = bytearray((tmp_path / "team.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "corrupt.zip").write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        case.spec.load().load(tmp_path / "corrupt")


def test_evaluate_team_runs(trained):
    mean, std = evaluate_team(trained, spread(), n_eval_episodes=2, seed=0)
    assert np.isfinite(mean) and np.isfinite(std)


def test_a_dataset_of_another_team_is_refused(case, team_dataset):
    with pytest.raises(AgentMismatchError, match=r"has 2 agents .* but the env has 3"):
        case.make(spread(n_agents=3), dataset=team_dataset)


def test_training_changes_the_weights_and_divergence_names_the_step(case, team_dataset):
    model = case.make(spread(), dataset=team_dataset)
    weights = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(5)
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.policy.parameters(), strict=True))
    exploding = case.make(spread(), dataset=team_dataset, explode_above=1e-12)
    with pytest.raises(RuntimeError, match=r"training diverged: .* at gradient step \d+"):
        exploding.learn(20)
