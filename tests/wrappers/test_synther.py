"""synthesize_dataset: a synthetic Minari dataset that the data layer and an offline agent read correctly;
SynthER's optimiser and its agents' real-data observation statistics."""

import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors import safe_open
from safetensors.torch import save_file

from diffgym import IDQL, TD3BC
from diffgym.data import collect_dataset, load_transitions
from diffgym.normalizers import GaussianNormalizer
from diffgym.serialization import ModelFileError
from diffgym.wrappers import (
    SynthERConfig,
    TransitionDiffusion,
    fit_observation_normalizer,
    synthesize_dataset,
)
from diffgym.wrappers.synther import fit_on_dataset
from diffgym.zoo.benchmarks import synther as synther_benchmark
from diffgym.zoo.benchmarks.harness import Dataset

SMALL = dict(hidden_dim=64, num_blocks=2, time_dim=32, train_steps=1500, sample_batch_size=1000)


class FallEnv(gym.Env):
    """A point pushed by its action; the episode terminates when it leaves [-0.6, 0.6] (often)."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-0.3, 0.3, 2).astype(np.float32)
        self.t = 0
        return self.state.copy(), {}

    def step(self, action):
        x, v = self.state
        v = v + 0.2 * float(action[0])
        x = x + 0.2 * v
        self.state = np.array([x, v], np.float32)
        self.t += 1
        return self.state.copy(), -(x**2), bool(abs(x) > 0.6), self.t >= 30, {}


@pytest.fixture(scope="module")
def fall_dataset(minari_store):
    return collect_dataset(FallEnv(), None, "test/wrappers/fall-v0", n_steps=1500, seed=0)


@pytest.fixture(scope="module")
def synthetic(fall_dataset):
    return synthesize_dataset(fall_dataset, "test/wrappers/fall-synthetic-v0", 400, config=SMALL, seed=0)


def test_synthetic_dataset_reads_back_as_independent_transitions(fall_dataset, synthetic):
    source = load_transitions(fall_dataset)
    assert source.terminals.mean() > 0.03  # the source has terminals to learn from
    assert synthetic.total_episodes == synthetic.total_steps == 400
    data = load_transitions("test/wrappers/fall-synthetic-v0")
    assert len(data.rewards) == 400 and len(np.unique(data.episode_ids)) == 400
    assert (data.terminals ^ data.timeouts).all()  # each one-step episode ends exactly once ...
    assert data.terminals.any() and data.timeouts.any()  # ... non-done ones as truncations
    assert abs(data.terminals.mean() - source.terminals.mean()) < 0.03
    # synthetic dones follow the env's rule (|x'| > 0.6) on the synthetic next states: nearly every
    # synthetic done is right (0.96 measured); the short training misses about half the rule's cases
    rule = np.abs(data.next_observations[:, 0]) > 0.6
    assert (data.terminals & rule).sum() >= 0.9 * data.terminals.sum()
    assert (data.terminals & rule).sum() >= 0.3 * rule.sum()
    assert data.actions.min() >= -1.0 and data.actions.max() <= 1.0
    assert synthetic.observation_space == FallEnv.observation_space
    assert synthetic.action_space == FallEnv.action_space
    assert synthetic.storage.metadata["synthetic_source"] == "test/wrappers/fall-v0"
    assert SynthERConfig.from_json(synthetic.storage.metadata["synthesis_config"]) == SynthERConfig(**SMALL)
    # the dynamics were learnt: x' ≈ x + 0.2 v' on synthetic rows (their spread is ~0.3)
    x, v_next, x_next = data.observations[:, 0], data.next_observations[:, 1], data.next_observations[:, 0]
    assert np.sqrt(np.mean((x_next - (x + 0.2 * v_next)) ** 2)) < 0.1


def test_an_offline_agent_learns_from_the_synthetic_dataset(synthetic):
    model = IDQL(
        "MlpPolicy",
        FallEnv(),
        dataset="test/wrappers/fall-synthetic-v0",
        policy_kwargs=dict(num_candidates=8, actor_hidden=32, critic_hidden=32),
        reward_scale=1.0,  # 'iql' would scale by the spread of one-step "episode" returns
        batch_size=32,
        check_every=10,
        seed=0,
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(20)
    assert model._n_updates == 20
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    action, _ = model.predict(np.zeros(2, np.float32), deterministic=True)
    assert action.shape == (1,) and np.all(np.abs(action) <= 1)


def test_same_seed_same_transitions():
    rows = torch.randn(300, 2 * 2 + 1 + 2)
    rows[:, -1] = (rows[:, 0] > 1).float()
    pools = []
    for _ in range(2):
        model = TransitionDiffusion(
            2, 1, -np.ones(1), np.ones(1), config=SynthERConfig(**{**SMALL, "train_steps": 50})
        )
        model.fit(rows, torch.Generator().manual_seed(3))
        pools.append(model.generate(50, torch.Generator().manual_seed(4)))
    for a, b in zip(*pools, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_optimizer_has_no_weight_decay(monkeypatch):
    """SynthER's Trainer.weight_decay = 0 (torch's AdamW would apply 0.01)."""
    made = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    model = TransitionDiffusion(
        2, 1, -np.ones(1), np.ones(1), config=SynthERConfig(**{**SMALL, "train_steps": 2})
    )
    model.fit(torch.randn(20, 7), torch.Generator().manual_seed(0))
    assert len(made) == 1 and [group["weight_decay"] for group in made[0].param_groups] == [0.0]


def real_statistics(dataset):
    return GaussianNormalizer.fit(torch.as_tensor(load_transitions(dataset).observations)).state_dict()


def test_an_agent_on_synthetic_data_standardises_with_the_real_datas_statistics(fall_dataset, synthetic):
    """SynthER's TD3+BC normalises states with the real D4RL data's mean and std."""
    model = TD3BC("MlpPolicy", FallEnv(), dataset="test/wrappers/fall-synthetic-v0", seed=0)
    real = real_statistics(fall_dataset)
    fitted = model.policy.obs_normalizer.state_dict()
    assert not torch.allclose(fitted["mean"], real["mean"])  # built on the synthetic data's own
    fit_observation_normalizer(model, fall_dataset)
    for key, value in model.policy.obs_normalizer.state_dict().items():
        torch.testing.assert_close(value, real[key])


def test_the_synther_benchmark_standardises_synthetic_runs_with_the_source(
    fall_dataset, synthetic, monkeypatch
):
    seen = []
    monkeypatch.setattr(
        synther_benchmark,
        "train_and_evaluate",
        lambda model, run: seen.append(model.policy.obs_normalizer.mean),
    )
    for name, data, info in (
        (
            "fall" + synther_benchmark.SUFFIX,
            "test/wrappers/fall-synthetic-v0",
            {"source": "test/wrappers/fall-v0"},
        ),
        ("fall", "test/wrappers/fall-v0", {}),
    ):
        model = TD3BC("MlpPolicy", FallEnv(), dataset=data, seed=0)
        synther_benchmark.train_with_real_statistics(
            model, SimpleNamespace(dataset=Dataset(name, data, info))
        )
    for mean in seen:
        torch.testing.assert_close(mean, real_statistics(fall_dataset)["mean"])


def test_bad_input_is_refused(fall_dataset, pendulum_dataset):
    with pytest.raises(ValueError, match="n_transitions"):
        synthesize_dataset(fall_dataset, "test/wrappers/none-v0", 0)
    with pytest.raises(ValueError, match="train_steps"):
        SynthERConfig(train_steps=0)
    with pytest.raises(ValueError, match="prediction"):
        SynthERConfig(prediction="v")
    model = TransitionDiffusion(2, 1, -np.ones(1), np.ones(1))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.generate(5, torch.Generator())
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        model.fit(torch.zeros(10, 6), torch.Generator())
    discrete = collect_dataset(gym.make("CartPole-v1"), None, "test/wrappers/cartpole-v0", n_steps=50, seed=0)
    with pytest.raises(TypeError, match="Box action space"):
        synthesize_dataset(discrete, "test/wrappers/cartpole-synthetic-v0", 10)


@pytest.fixture(scope="module")
def fitted_model(fall_dataset):
    """A small transition model fitted on the fall data (300 steps: enough to differ from its start)."""
    return fit_on_dataset(fall_dataset, SynthERConfig(**{**SMALL, "train_steps": 300}), seed=0)


def test_a_saved_transition_model_generates_what_it_did(fitted_model, tmp_path):
    path = tmp_path / "generator.safetensors"
    fitted_model.save(path)
    loaded = TransitionDiffusion.load(path)
    assert loaded.config == fitted_model.config and loaded.last_fit == fitted_model.last_fit
    before = fitted_model.generate(50, torch.Generator().manual_seed(3))
    after = loaded.generate(50, torch.Generator().manual_seed(3))
    for mine, theirs in zip(before, after, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    # only what generation needs is kept: the EMA, not the weights being trained
    with safe_open(str(path), framework="pt") as file:
        assert not any(key.startswith("denoiser.") for key in file.keys())  # noqa: SIM118
        assert any(key.startswith("ema_denoiser.module.") for key in file.keys())  # noqa: SIM118


def test_a_pretrained_transition_model_upsamples_without_fitting(fall_dataset, fitted_model, monkeypatch):
    monkeypatch.setattr(TransitionDiffusion, "fit", lambda *args: pytest.fail("fitted again"))
    made = synthesize_dataset(
        fall_dataset, "test/wrappers/fall-pretrained-v0", 30, seed=5, model=fitted_model
    )
    data = load_transitions(made)
    expected = fitted_model.generate(30, torch.Generator().manual_seed(6))  # generation draws from seed + 1
    np.testing.assert_allclose(data.actions, expected.actions)
    np.testing.assert_allclose(data.next_observations, expected.next_observations)


def test_bad_transition_model_files_and_mismatched_models_are_refused(
    fitted_model, pendulum_dataset, fall_dataset, tmp_path
):
    with pytest.raises(RuntimeError, match="not fitted"):
        TransitionDiffusion(2, 1, -np.ones(1), np.ones(1)).save(tmp_path / "unfitted.safetensors")
    with pytest.raises(ModelFileError, match="missing"):
        TransitionDiffusion.load(tmp_path / "none.safetensors")
    good = tmp_path / "good.safetensors"
    fitted_model.save(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        TransitionDiffusion.load(truncated)
    anonymous = tmp_path / "anonymous.safetensors"
    save_file(fitted_model.sampling_state(), str(anonymous))
    with pytest.raises(ModelFileError, match="names no diffgym transition model"):
        TransitionDiffusion.load(anonymous)
    other = fitted_model.manifest() | {"obs_dim": 5}
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(fitted_model.sampling_state(), str(mismatched), metadata={"diffgym": json.dumps(other)})
    with pytest.raises(ModelFileError, match="does not describe a transition model"):
        TransitionDiffusion.load(mismatched)
    with pytest.raises(
        ValueError, match="observations of size 2 and actions of size 1; the dataset has 3 and 1"
    ):
        synthesize_dataset(pendulum_dataset, "test/wrappers/never-v0", 10, model=fitted_model)
    narrow = TransitionDiffusion.from_parts(
        fitted_model.manifest(), fitted_model.sampling_state() | {"action_high": torch.full((1,), 0.5)}
    )
    with pytest.raises(ValueError, match="not both"):
        synthesize_dataset(fall_dataset, "test/wrappers/never-v0", 10, config=SMALL, model=fitted_model)
    with pytest.raises(ValueError, match="action bounds"):
        synthesize_dataset(fall_dataset, "test/wrappers/never-v0", 10, model=narrow)
