"""What a Stable-Baselines3 user expects of an algorithm, on diffgym's offline agents (issue 14, items
1-6): schedules save, ``set_parameters`` reads our files, ``set_env`` after ``load``, ``net_arch`` and
``replay_buffer_class``, callbacks while learning offline, and seeding reaching the sampling.

Every registered agent's share of these is in tests/agents/test_conformance.py; here one or two
agents stand for all (the code under test is the shared base).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from mpe2 import simple_spread_v3
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, StopTrainingOnMaxEpisodes
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import set_random_seed

from diffgym import registry
from diffgym.agents.baselines import IQL
from diffgym.agents.diffusion_policy import DiffusionPolicy
from diffgym.agents.dql import DiffusionQL
from diffgym.agents.idql import IDQL
from diffgym.serialization import ModelFileError, load_model_file
from diffgym.wrappers import DiffusionReplayBuffer

TINY = dict(batch_size=16, check_every=10, seed=0)
DQL = dict(TINY, ema_start=5, policy_kwargs=dict(actor_hidden=16, critic_hidden=16, num_candidates=8))
SMALL_IQL = dict(TINY, reward_scale=1.0, policy_kwargs=dict(hidden_dim=16))
SYNTHER = dict(hidden_dim=32, num_blocks=1, time_dim=16, train_steps=20, sample_batch_size=200)


def pendulum() -> gym.Env:
    return gym.make("Pendulum-v1")


def dql(dataset, **overrides) -> DiffusionQL:
    return DiffusionQL("MlpPolicy", pendulum(), dataset=dataset, **{**DQL, **overrides})


def observations(n: int = 8, seed: int = 0) -> np.ndarray:
    return make_vec_env("Pendulum-v1", n_envs=n, seed=seed).reset()


# ------------------------------------------------------------------ 1. schedules save


def test_a_schedule_learning_rate_saves_as_its_starting_value(pendulum_dataset, tmp_path):
    model = dql(pendulum_dataset, learning_rate=lambda progress: 1e-3 * progress)
    checkpoints = CheckpointCallback(save_freq=5, save_path=str(tmp_path), name_prefix="ckpt")
    with pytest.warns(UserWarning, match="learning_rate schedule .* not saved"):
        model.learn(10, callback=checkpoints)
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.zip")) == ["ckpt_10_steps.zip", "ckpt_5_steps.zip"]
    with pytest.warns(UserWarning, match="not saved"):
        model.save(tmp_path / "model")
    manifest, _ = load_model_file(tmp_path / "model")
    assert manifest["hyperparameters"]["learning_rate"] == pytest.approx(1e-3)  # the value at progress 1
    loaded = DiffusionQL.load(tmp_path / "model", env=pendulum(), dataset=pendulum_dataset)
    assert loaded.learning_rate == pytest.approx(1e-3)
    loaded.learn(5, reset_num_timesteps=False)


# ------------------------------------------------------------------ 2. set_parameters


def test_set_parameters_reads_a_diffgym_file_and_a_parameter_dict(pendulum_dataset, tmp_path):
    trained = dql(pendulum_dataset).learn(20)
    obs = observations()
    expected, _ = trained.predict(obs, deterministic=True)
    trained.save(tmp_path / "model")

    fresh = dql(pendulum_dataset, seed=1)
    fresh.set_parameters(tmp_path / "model")
    np.testing.assert_array_equal(fresh.predict(obs, deterministic=True)[0], expected)
    for name, optimizer in fresh.policy.optimizers().items():  # the optimizers come along
        state = optimizer.state_dict()["state"]
        assert state and all(s["step"] == 20 for s in state.values()), name

    other = dql(pendulum_dataset, seed=2)
    other.set_parameters(trained.get_parameters())
    np.testing.assert_array_equal(other.predict(obs, deterministic=True)[0], expected)
    other.set_parameters({"policy": trained.policy.state_dict()})  # SB3's own layout works too


def test_set_parameters_refuses_another_algorithm_and_missing_parts(pendulum_dataset, tmp_path):
    IQL("MlpPolicy", pendulum(), **SMALL_IQL).save(tmp_path / "iql")
    model = dql(pendulum_dataset)
    with pytest.raises(ModelFileError, match="holds a 'IQL' model, not DiffusionQL"):
        model.set_parameters(tmp_path / "iql")
    with pytest.raises(ValueError, match=r"optimizers .*'nope'"):
        model.set_parameters({"policy": model.policy.state_dict(), "optimizers": {"nope": {}}})
    with pytest.raises(ValueError, match="policy"):
        model.set_parameters({"optimizers": {}})


# ------------------------------------------------------------------ 3. set_env after load


def test_set_env_after_loading_without_an_env(pendulum_dataset, tmp_path):
    dql(pendulum_dataset).learn(10).save(tmp_path / "model")
    loaded = DiffusionQL.load(tmp_path / "model")
    loaded.set_env(pendulum())
    assert loaded.get_env().num_envs == 1
    loaded.learn(5, reset_num_timesteps=False)  # offline, from the dataset the file names
    again = DiffusionQL.load(tmp_path / "model")
    again.set_env(make_vec_env("Pendulum-v1", n_envs=2))  # no replay buffer: any number of envs
    assert again.n_envs == 2
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        DiffusionQL.load(tmp_path / "model").set_env(gym.make("MountainCarContinuous-v0"))


# ------------------------------------------------------------------ 4. net_arch and replay_buffer_class


def test_net_arch_sets_the_widths_of_actor_and_critics(pendulum_dataset, tmp_path):
    model = DiffusionQL("MlpPolicy", pendulum(), **{**DQL, "policy_kwargs": dict(net_arch=[24, 24, 24])})
    hidden = model.policy.actor.denoiser.body[:-1]
    assert {m.out_features for m in hidden if hasattr(m, "out_features")} == {24}
    assert model.policy.critic.ensemble.net[0].weight.shape[-1] == 24
    split = IDQL("MlpPolicy", pendulum(), **TINY, policy_kwargs=dict(net_arch=dict(pi=[8, 8], qf=[16, 16])))
    assert split.policy.critic.ensemble.net[0].weight.shape[-1] == 16
    body = split.policy.actor.denoiser.body
    assert body[0].out_features == 8
    assert sum(type(m).__name__ == "_LNResBlock" for m in body) == 2  # pi's length: residual blocks
    split.save(tmp_path / "idql")
    assert IDQL.load(tmp_path / "idql").policy.critic.ensemble.net[0].weight.shape[-1] == 16


def test_policy_kwargs_at_load_merge_over_the_saved_ones(tmp_path):
    dql(None).save(tmp_path / "model")
    fewer = DiffusionQL.load(tmp_path / "model", policy_kwargs={"num_candidates": 3})
    assert fewer.policy_kwargs == {**DQL["policy_kwargs"], "num_candidates": 3}
    assert fewer.predict(observations(2))[0].shape == (2, 1)
    with pytest.raises(ModelFileError, match=r"policy_kwargs \{'actor_hidden': 32\}.*cannot change"):
        DiffusionQL.load(tmp_path / "model", policy_kwargs={"actor_hidden": 32})


@pytest.mark.parametrize(
    "net_arch, message",
    [
        ([32, 32], "3 hidden layers"),
        ([32, 64, 32], "one width"),
        (dict(pi=[32] * 3), "'qf'"),
        ("big", "net_arch"),
    ],
)
def test_a_net_arch_that_cannot_be_built_is_a_clear_error(net_arch, message):
    with pytest.raises(ValueError, match=message):
        DiffusionQL("MlpPolicy", pendulum(), **{**DQL, "policy_kwargs": dict(net_arch=net_arch)})


def test_net_arch_on_a_unet_agent_says_what_to_pass_instead(pendulum_dataset):
    with pytest.raises(ValueError, match=r"DiffusionPolicy.* net_arch.*dim_mults"):
        DiffusionPolicy("MlpPolicy", pendulum(), **TINY, policy_kwargs=dict(net_arch=[64, 64]))
    with pytest.raises(ValueError, match="actor_hidden"):  # both ways of saying the width
        DiffusionQL(
            "MlpPolicy", pendulum(), **{**DQL, "policy_kwargs": dict(net_arch=[8] * 3, actor_hidden=8)}
        )


def test_diffusion_replay_buffer_fine_tunes_diffusion_ql_online(pendulum_dataset):
    model = dql(
        pendulum_dataset,
        learning_starts=0,
        replay_buffer_class=DiffusionReplayBuffer,
        replay_buffer_kwargs=dict(
            synthetic_ratio=0.5, retrain_every=20, pool_size=200, min_real=100, model_config=SYNTHER, seed=0
        ),
    ).learn(5)
    model.learn(30, online=True)
    buffer = model.replay_buffer
    assert isinstance(buffer, DiffusionReplayBuffer)
    assert buffer.size() == 600 + 30 and buffer.n_fits == 1  # the dataset, the new steps, one pool
    assert buffer.pool is not None and len(buffer.pool.rewards) == 200


def test_replay_buffer_class_with_an_offline_only_agent_is_refused():
    with pytest.raises(ValueError, match=r"DiffusionPolicy learns from a dataset only.*replay_buffer_class"):
        DiffusionPolicy("MlpPolicy", pendulum(), **TINY, replay_buffer_class=DiffusionReplayBuffer)


def test_online_replay_buffer_holds_the_dataset_and_buffer_size_new_steps_with_several_envs(
    pendulum_dataset,
):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = IQL("MlpPolicy", env, dataset=pendulum_dataset, buffer_size=100, **SMALL_IQL).learn(5)
    model.learn(20, online=True)
    buffer = model.replay_buffer
    assert buffer.size() * buffer.n_envs == 600 + 20  # SB3's size() counts rows of n_envs steps
    assert buffer.buffer_size * buffer.n_envs >= 600 + 100


# ------------------------------------------------------------------ 5. callbacks offline


class Hooks(BaseCallback):
    """Counts SB3's hooks and keeps the locals of the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = self.ends = self.steps = 0
        self.steps_at_ends: list[int] = []

    def _on_rollout_start(self) -> None:
        self.starts += 1

    def _on_step(self) -> bool:
        self.steps += 1
        assert list(self.locals["dones"]) == [False] * self.training_env.num_envs
        assert len(self.locals["infos"]) == self.training_env.num_envs
        return True

    def _on_rollout_end(self) -> None:
        self.ends += 1
        self.steps_at_ends.append(self.num_timesteps)


def test_offline_learning_fires_rollout_hooks_around_each_check_block(pendulum_dataset):
    hooks = Hooks()
    dql(pendulum_dataset).learn(25, callback=hooks)  # check_every=10
    assert (hooks.starts, hooks.ends, hooks.steps) == (3, 3, 25)
    assert hooks.steps_at_ends == [10, 20, 25]


def test_episode_count_callbacks_never_stop_offline_learning(pendulum_dataset):
    model = dql(pendulum_dataset).learn(15, callback=StopTrainingOnMaxEpisodes(max_episodes=1))
    assert model.num_timesteps == 15


def test_save_replay_buffer_offline_is_a_clear_error_and_saves_the_online_buffer(pendulum_dataset, tmp_path):
    model = IQL("MlpPolicy", pendulum(), dataset=pendulum_dataset, **SMALL_IQL).learn(5)
    with pytest.raises(ValueError, match=r"no replay buffer.*dataset"):
        model.save_replay_buffer(tmp_path / "buffer")
    model.learn(10, online=True)
    model.save_replay_buffer(tmp_path / "buffer")
    assert (tmp_path / "buffer.pkl").exists()


# ------------------------------------------------------------------ 6. seeding reaches the sampling


@pytest.mark.parametrize("seeding", ["model", "global"])
def test_seeding_makes_stochastic_predict_reproducible(pendulum_dataset, seeding):
    model = dql(pendulum_dataset).learn(10)
    obs = observations(16)

    def seeded_actions(seed: int) -> np.ndarray:
        if seeding == "model":
            model.set_random_seed(seed)
        else:
            set_random_seed(seed)
        first, _ = model.predict(obs, deterministic=False)
        second, _ = model.predict(obs, deterministic=False)
        assert not np.array_equal(first, second)  # the stream moves on between calls
        return first

    np.testing.assert_array_equal(seeded_actions(5), seeded_actions(5))
    assert not np.array_equal(seeded_actions(5), seeded_actions(6))


def test_set_random_seed_reseeds_the_training_generator(pendulum_dataset, tmp_path):
    dql(pendulum_dataset).learn(5).save(tmp_path / "model")

    def weights_after_learning(seed: int | None) -> list[torch.Tensor]:
        model = DiffusionQL.load(tmp_path / "model", env=pendulum(), dataset=pendulum_dataset)
        if seed is not None:
            model.set_random_seed(seed)
        model.learn(5)
        return [p.detach().clone() for p in model.policy.parameters()]

    for a, b in zip(weights_after_learning(7), weights_after_learning(7), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    unseeded = weights_after_learning(None)
    assert any(not torch.equal(a, b) for a, b in zip(weights_after_learning(7), unseeded, strict=True))


# ------------------------------------------------------------------ 6-7. team agents: seeding, NaN

#: tiny networks for team agents that would be slow at their defaults (others: their defaults)
TEAM_SETTINGS = {
    "madiff": dict(policy_kwargs=dict(horizon=4, num_timesteps=5, dim=8, dim_mults=(1, 2), inverse_hidden=16))
}
TEAM_AGENTS = [name for name, spec in registry.registered().items() if spec.team]


def spread():
    return simple_spread_v3.parallel_env(N=2, max_cycles=5, continuous_actions=True)


@pytest.mark.parametrize("name", TEAM_AGENTS)
def test_team_agents_refuse_nan_observations_and_follow_seeding(name):
    model = registry.registered()[name].make("MlpPolicy", spread(), seed=0, **TEAM_SETTINGS.get(name, {}))
    observations, _ = spread().reset(seed=0)
    runs = []
    for seed in (model.set_random_seed, set_random_seed):
        seed(3)
        runs.append([model.predict(observations, deterministic=False)[0] for _ in range(2)])
    for first, second in zip(*runs, strict=True):
        for agent in first:
            np.testing.assert_array_equal(first[agent], second[agent])
    broken = {**observations, "agent_1": observations["agent_1"].copy()}
    broken["agent_1"][3] = np.inf
    for deterministic in (True, False):
        with pytest.raises(ValueError, match=r"1 NaN or inf entry.*: observation\['agent_1'\]\[3\] = inf"):
            model.predict(broken, deterministic=deterministic)
