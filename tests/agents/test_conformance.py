"""What every registered diffgym agent promises, checked the same way for each (d3rlpy's harness).

The agents come from the registry (:mod:`diffgym.registry`): a new agent is checked as soon as its
registry entry exists. ``SETTINGS`` only makes runs small; an agent not listed there runs with its
own defaults. Team agents (``"team"`` in their tasks) have their own checks in test_team_conformance.
"""

from typing import Any, NamedTuple

import numpy as np
import pytest
import safetensors.torch
import torch
from gymnasium import ObservationWrapper, make, spaces
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnMaxEpisodes,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import set_random_seed

from diffgym import registry
from diffgym.data import DatasetSpaceMismatchError, collect_dataset, load_transitions
from diffgym.serialization import ModelFileError, load_model_file
from diffgym.zoo.format import read_model_folder, write_model_folder


class Settings(NamedTuple):
    """Tiny constructor arguments, the statistics the agent logs, and arguments that make it diverge."""

    kwargs: dict[str, Any]
    losses: set[str]
    diverging: dict[str, Any]


class Case(NamedTuple):
    """A registered agent with the settings of one conformance run."""

    spec: registry.AgentSpec
    kwargs: dict[str, Any]
    losses: set[str]
    diverging: dict[str, Any]

    @property
    def cls(self) -> type:
        return self.spec.load()

    def make(self, env: Any, **overrides: Any) -> Any:
        policy = "MultiInputPolicy" if isinstance(env.observation_space, spaces.Dict) else "MlpPolicy"
        return self.spec.make(policy, env, **{**self.kwargs, **overrides})


TINY = dict(batch_size=32, check_every=10, seed=0)
CRITIC_LOSSES = {"critic_loss", "actor_loss", "critic_grad_norm"}
TINY_CHUNKS = dict(horizon=8, n_action_steps=4, num_timesteps=10, dim=16, dim_mults=(1, 2))
TINY_UNET = dict(horizon=8, num_timesteps=10, dim=16, dim_mults=(1, 2), value_dim=16, value_dim_mults=(1, 2))
#: a limit every real loss exceeds: the divergence check must stop training and name the step
EXPLODE_AT_ONCE = {"explode_above": 1e-12}
#: registry name -> tiny settings (agents not listed: their defaults, and EXPLODE_AT_ONCE)
SETTINGS = {
    "dql": Settings(
        dict(TINY, ema_start=5, policy_kwargs=dict(actor_hidden=32, critic_hidden=32, num_candidates=8)),
        CRITIC_LOSSES,
        {"reward_scale": 1e30},
    ),
    "idql": Settings(dict(TINY, policy_kwargs=dict(num_candidates=8)), CRITIC_LOSSES, {"reward_scale": 1e30}),
    "diffuser": Settings(
        dict(
            TINY, ema_start=5, policy_kwargs=dict(TINY_UNET, n_plans=4, n_action_steps=2, warm_start_steps=5)
        ),
        {"diffusion_loss", "value_loss"},
        {"learning_rate": 1e12},
    ),
    "decision_diffuser": Settings(
        dict(TINY, ema_start=5, policy_kwargs=TINY_UNET),
        {"diffusion_loss", "inverse_loss"},
        {"learning_rate": 1e12},
    ),
    "diffusion_policy": Settings(
        dict(
            TINY, lr_warmup_steps=5, policy_kwargs=dict(TINY_CHUNKS, sampler={"name": "ddim", "num_steps": 4})
        ),
        {"diffusion_loss"},
        {"learning_rate": 1e12},
    ),
    "td3bc": Settings(
        dict(TINY, policy_kwargs=dict(hidden_dim=32)), {"critic_loss", "actor_loss"}, {"reward_scale": 1e30}
    ),
    "iql": Settings(
        dict(TINY, policy_kwargs=dict(hidden_dim=32)),
        {"value_loss", "actor_loss", "critic_loss"},
        {"reward_scale": 1e30},
    ),
    "bc": Settings(dict(TINY, policy_kwargs=dict(hidden_dim=32)), {"bc_loss"}, EXPLODE_AT_ONCE),
}
#: further runs of a registered agent in another configuration: id -> (registry name, settings)
VARIANTS = {
    "diffusion_policy_ensemble": (
        "diffusion_policy",
        Settings(
            dict(TINY, policy_kwargs=dict(TINY_CHUNKS, sampler="ddpm", temporal_ensemble_coeff=0.01)),
            {"diffusion_loss"},
            {"learning_rate": 1e12},
        ),
    ),
}


def conformance_cases() -> dict[str, Case]:
    """One case per single-agent registry entry (tiny settings where known), plus the variants."""
    agents = registry.registered()
    cases = {
        name: Case(spec, *SETTINGS.get(name, Settings(dict(TINY), set(), EXPLODE_AT_ONCE)))
        for name, spec in agents.items()
        if not spec.team
    }
    for variant, (name, settings) in VARIANTS.items():
        if name in agents:
            cases[variant] = Case(agents[name], *settings)
    return cases


AGENTS = conformance_cases()


@pytest.fixture(params=list(AGENTS), scope="module")
def case(request):
    return AGENTS[request.param]


@pytest.fixture(scope="module")
def agent(case):
    return case.cls, case


@pytest.fixture(scope="module")
def trained(case, pendulum_dataset):
    return case.make(make("Pendulum-v1"), dataset=pendulum_dataset).learn(30)


def test_predict_shapes_single_and_vectorised(trained):
    """The state is None, or (planners) per-env arrays to pass back, as SB3's recurrent policies."""
    env = make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    action, state = trained.predict(obs)
    assert action.shape == (1,)
    assert state is None or all(len(part) == 1 for part in state)
    vec_env = make_vec_env("Pendulum-v1", n_envs=3, seed=0)
    actions, state = trained.predict(vec_env.reset())
    assert actions.shape == (3, 1)
    assert state is None or all(len(part) == 3 for part in state)


def test_wrong_observation_shape_is_a_clear_error(trained):
    with pytest.raises(ValueError, match=r"Unexpected observation shape \(5,\)"):
        trained.predict(np.zeros(5, dtype=np.float32))


def test_deterministic_predict_reproduces_and_actions_stay_in_bounds(trained):
    observations = make_vec_env("Pendulum-v1", n_envs=16, seed=1).reset() * 3  # also off-data states
    first, _ = trained.predict(observations, deterministic=True)
    again, _ = trained.predict(observations, deterministic=True)
    np.testing.assert_array_equal(first, again)
    sampled, _ = trained.predict(observations, deterministic=False)
    for actions in (first, sampled):
        assert np.all(actions >= -2.0) and np.all(actions <= 2.0)


def test_save_load_predicts_the_same_and_resumes(trained, agent, tmp_path, pendulum_dataset):
    cls, _ = agent
    observations = make_vec_env("Pendulum-v1", n_envs=8, seed=2).reset()
    before, _ = trained.predict(observations, deterministic=True)
    trained.save(tmp_path / "model")
    manifest, _ = load_model_file(tmp_path / "model")
    if hasattr(trained.policy, "sampler"):  # a diffusion agent's file says how it samples
        assert manifest["sampler"]["name"] == trained.policy.sampler.name
    loaded = cls.load(tmp_path / "model", env=make("Pendulum-v1"))
    after, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(before, after)

    assert loaded.dataset == pendulum_dataset.id  # the file names its data; learn() reloads it
    weights = [p.detach().clone() for p in loaded.policy.parameters()]
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.num_timesteps == trained.num_timesteps + 10
    assert any(not torch.equal(w, p) for w, p in zip(weights, loaded.policy.parameters(), strict=True))


@pytest.mark.parametrize("deterministic", [True, False])
def test_the_zoo_format_keeps_inference_weights_and_predicts_the_same(trained, tmp_path, deterministic):
    """A zoo folder holds what acts (the trained copies that an acting copy stands in for are left out)
    and loads back to the same actions, seeded sampling included."""
    files = write_model_folder(
        trained,
        tmp_path,
        name="agent/test",
        env={"id": "Pendulum-v1", "kwargs": {}},
        dataset={"id": "test"},
        training={},
        results={"final": {"returns": [0.0], "mean_return": 0.0, "score": None}},
    )
    stored = safetensors.torch.load_file(str(tmp_path / "model.safetensors"))
    full = trained.policy.state_dict()
    for target in trained.policy.derived_state:  # left out wherever the policy has them
        assert not any(key.startswith("policy." + target) for key in stored)
    assert len(stored) - 1 <= len(full)  # (one entry is the sampling generator)
    loaded = read_model_folder(tmp_path, files, env=make("Pendulum-v1"))
    assert loaded.policy.state_dict().keys() == full.keys()
    observations = make_vec_env("Pendulum-v1", n_envs=8, seed=2).reset()
    for _ in range(2):
        expected, _ = trained.predict(observations, deterministic=deterministic)
        actual, _ = loaded.predict(observations, deterministic=deterministic)
        np.testing.assert_array_equal(actual, expected)


def test_saved_state_includes_optimizers_and_rng(trained, agent, tmp_path, pendulum_dataset):
    """Two copies loaded from one file train identically: nothing that matters was left out."""
    cls, _ = agent
    trained.save(tmp_path / "model")
    copies = [
        cls.load(tmp_path / "model", env=make("Pendulum-v1"), dataset=pendulum_dataset) for _ in range(2)
    ]
    for copy in copies:
        copy.learn(5, reset_num_timesteps=False)
    for a, b in zip(
        copies[0].policy.state_dict().values(), copies[1].policy.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class RolloutHooks(BaseCallback):
    """Counts the rollout hooks (offline: around each block of ``check_every`` gradient steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = self.ends = 0

    def _on_rollout_start(self) -> None:
        self.starts += 1

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.ends += 1


def test_callbacks_fire_during_offline_learning(agent, pendulum_dataset, tmp_path):
    """SB3's callbacks, with a learning-rate schedule (saved as its starting value) and an
    episode-counting callback (no episode ends offline: it never stops training)."""
    cls, case = agent
    model = case.make(
        make("Pendulum-v1"), dataset=pendulum_dataset, learning_rate=lambda progress: 2e-4 * (1 + progress)
    )
    evaluation = EvalCallback(
        make("Pendulum-v1", max_episode_steps=20),
        eval_freq=10,
        n_eval_episodes=1,
        log_path=str(tmp_path),
        verbose=0,
    )
    checkpoints = CheckpointCallback(save_freq=10, save_path=str(tmp_path), name_prefix="ckpt")
    hooks, episodes = RolloutHooks(), StopTrainingOnMaxEpisodes(max_episodes=1)
    with pytest.warns(UserWarning, match="learning_rate schedule .* not saved"):
        model.learn(20, callback=[evaluation, checkpoints, hooks, episodes], progress_bar=True)
    assert evaluation.evaluations_timesteps == [10, 20]  # every 10 gradient steps
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.zip")) == ["ckpt_10_steps.zip", "ckpt_20_steps.zip"]
    assert (hooks.starts, hooks.ends) == (2, 2)  # check_every=10
    assert cls.load(tmp_path / "ckpt_20_steps.zip").learning_rate == pytest.approx(4e-4)


def test_logger_writes_losses_to_tensorboard(case, pendulum_dataset, tmp_path):
    model = case.make(make("Pendulum-v1"), dataset=pendulum_dataset, tensorboard_log=str(tmp_path))
    model.learn(20, log_interval=10)
    (run,) = tmp_path.iterdir()
    assert list(run.glob("events.out.tfevents.*"))
    assert model._monitor.means and case.losses <= set(model._monitor.means)


def test_evaluate_policy_runs(trained):
    env = make("Pendulum-v1", max_episode_steps=20)
    mean, std = evaluate_policy(trained, env, n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std)


def test_dataset_with_wrong_spaces_is_refused_before_training(agent, mountain_car_dataset):
    _, case = agent
    with pytest.raises(DatasetSpaceMismatchError, match="observation"):
        case.make(make("Pendulum-v1"), dataset=mountain_car_dataset)


def test_online_fine_tuning_adds_env_experience(agent, pendulum_dataset):
    cls, case = agent
    model = case.make(make("Pendulum-v1"), dataset=pendulum_dataset).learn(10)
    if not cls.supports_online:
        with pytest.raises(NotImplementedError, match="learns from a dataset only"):
            model.learn(40, online=True)
        return
    model.learn(40, online=True)
    assert model.replay_buffer.size() == 600 + 40  # the dataset, then the new steps
    assert model.num_timesteps == 40


def test_bf16_precision_trains_and_is_kept_by_save_and_load(case, pendulum_dataset, tmp_path):
    model = case.make(make("Pendulum-v1"), dataset=pendulum_dataset, precision="bf16")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(10)
    after = list(model.policy.parameters())
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in after)  # stored in float32
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert model._monitor.means and all(np.isfinite(v) for v in model._monitor.means.values())
    model.save(tmp_path / "bf16")
    assert case.cls.load(tmp_path / "bf16", env=make("Pendulum-v1")).precision == "bf16"


def test_an_unknown_precision_is_refused_naming_the_choices(case, pendulum_dataset):
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        case.make(make("Pendulum-v1"), dataset=pendulum_dataset, precision="fp16")


def test_diverging_training_stops_with_the_step(case, pendulum_dataset):
    model = case.make(make("Pendulum-v1"), dataset=pendulum_dataset, **case.diverging)
    with pytest.raises(RuntimeError, match=r"training diverged: .* at gradient step \d+"):
        model.learn(50)


class DictPendulum(ObservationWrapper):
    """Pendulum with a Dict observation, as goal-conditioned envs (PointMaze) have."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = spaces.Dict(
            {
                "angle": spaces.Box(-1.0, 1.0, (2,), np.float32),
                "velocity": spaces.Box(-8.0, 8.0, (1,), np.float32),
            }
        )

    def observation(self, observation):
        return {"angle": observation[:2], "velocity": observation[2:]}


def test_dict_observations_work_end_to_end(agent, minari_store, tmp_path, request):
    cls, case = agent
    env = DictPendulum(make("Pendulum-v1"))
    dataset = collect_dataset(
        env, None, f"test/dictpendulum/{request.node.callspec.id.lower()}-v0", n_steps=300, seed=0
    )
    model = case.make(env, dataset=dataset).learn(10)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (1,)
    broken = {**obs, "velocity": np.array([np.nan], np.float32)}
    with pytest.raises(ValueError, match=r"observation\['velocity'\]\[0\] = nan"):
        model.predict(broken, deterministic=True)
    model.save(tmp_path / "dict_model")
    again, _ = cls.load(tmp_path / "dict_model", env=env).predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, again)
    if not cls.supports_online:
        return
    model.learn(20, online=True)
    assert model.replay_buffer.size() == 300 + 20
    np.testing.assert_allclose(  # the dataset went into the buffer key by key
        model.replay_buffer.observations["velocity"][:299, 0], dataset_velocities(dataset)[:299], rtol=1e-6
    )


def dataset_velocities(dataset):
    return load_transitions(dataset).observations["velocity"]


def test_deterministic_action_does_not_depend_on_the_rest_of_the_batch(trained):
    observations = make_vec_env("Pendulum-v1", n_envs=4, seed=3).reset()
    batch, _ = trained.predict(observations, deterministic=True)
    for i, observation in enumerate(observations):
        alone, _ = trained.predict(observation, deterministic=True)
        # float32 kernels sum in a batch-size-dependent order (amplified by value-gradient guidance);
        # other noise for other rows would differ by ~0.1
        np.testing.assert_allclose(alone, batch[i], rtol=1e-5, atol=1e-5)


def test_a_corrupt_or_foreign_model_file_is_refused(trained, agent, tmp_path):
    cls, _ = agent
    trained.save(tmp_path / "model")
    data = bytearray((tmp_path / "model.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a member
    (tmp_path / "corrupt.zip").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt"):
        cls.load(tmp_path / "corrupt")
    other = next(c.cls for c in AGENTS.values() if c.cls is not cls)
    with pytest.raises(ModelFileError, match=f"holds a '{cls.__name__}' model, not {other.__name__}"):
        other.load(tmp_path / "model")


def test_set_parameters_reads_a_model_file_in_place(trained, case, tmp_path):
    observations = make_vec_env("Pendulum-v1", n_envs=4, seed=4).reset()
    expected, _ = trained.predict(observations, deterministic=True)
    trained.save(tmp_path / "model")
    fresh = case.make(make("Pendulum-v1"), seed=1)  # another initialisation, no dataset
    fresh.set_parameters(tmp_path / "model")
    np.testing.assert_array_equal(fresh.predict(observations, deterministic=True)[0], expected)
    again = case.make(make("Pendulum-v1"), seed=2)
    again.set_parameters(trained.get_parameters())
    np.testing.assert_array_equal(again.predict(observations, deterministic=True)[0], expected)


def test_set_env_after_loading_without_an_env(trained, agent, tmp_path):
    cls, _ = agent
    trained.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model")
    loaded.set_env(make("Pendulum-v1"))
    assert loaded.get_env().num_envs == 1 and loaded.n_envs == 1


def test_net_arch_sizes_the_networks_or_names_what_to_pass(case):
    policy_class = case.cls.policy_aliases["MlpPolicy"]
    parts = policy_class.net_arch_parts
    sizing = {name for part in parts.values() for name in part if isinstance(name, str)}
    policy_kwargs = {k: v for k, v in case.kwargs.get("policy_kwargs", {}).items() if k not in sizing}
    if not parts:
        with pytest.raises(ValueError, match=f"{policy_class.__name__} does not take net_arch.*: "):
            case.make(make("Pendulum-v1"), policy_kwargs=dict(policy_kwargs, net_arch=[16, 16]))
        return
    depths = {part: target.depth if isinstance(target.depth, int) else 2 for part, target in parts.items()}
    net_arch = {part: [16] * depth for part, depth in depths.items()}
    model = case.make(make("Pendulum-v1"), policy_kwargs=dict(policy_kwargs, net_arch=net_arch))
    widths = {p.shape[-1] for p in model.policy.parameters() if p.dim() >= 2}
    assert 16 in widths


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_nan_or_inf_observation_is_refused_naming_the_entry(trained, deterministic):
    observation, _ = make("Pendulum-v1").reset(seed=0)
    observation[1] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or inf entry.*: observation\[1\] = nan\."):
        trained.predict(observation, deterministic=deterministic)
    batch = make_vec_env("Pendulum-v1", n_envs=3, seed=0).reset()
    batch[2, 0], batch[0, 2] = np.inf, -np.inf
    with pytest.raises(ValueError, match=r"observation\[0, 2\] = -inf, observation\[2, 0\] = inf"):
        trained.predict(batch, deterministic=deterministic)


def test_seeding_makes_stochastic_predict_reproducible(trained):
    """``model.set_random_seed`` and SB3's global ``set_random_seed`` both reach the sampling, alike."""
    observations = make_vec_env("Pendulum-v1", n_envs=8, seed=5).reset()
    runs = []
    for seed in (trained.set_random_seed, set_random_seed, set_random_seed, trained.set_random_seed):
        seed(5)
        runs.append(np.array([trained.predict(observations, deterministic=False)[0] for _ in range(2)]))
    for run in runs[1:]:
        np.testing.assert_array_equal(run, runs[0])
