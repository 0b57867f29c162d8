"""MADiff: attention mixes agents, agent order survives data -> training -> predict, decentralised
execution uses only the agent's own observation, and the conformance checks that apply to a team."""

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.evaluation import evaluate_policy

from diffgym import MADiff
from diffgym.data import AgentMismatchError, DatasetSpaceMismatchError, collect_multiagent_dataset
from diffgym.denoisers import AgentAttention, MultiAgentTemporalUnet
from diffgym.serialization import ModelFileError
from diffgym.wrappers import JointAgentEnv, evaluate_team

#: Listed out of sorted order (gymnasium's Dict sorts keys), with different sizes and action bounds.
AGENTS = ("zeta", "alpha", "mid")
#: Each agent's behaviour: a constant action, different per agent, so a mixed-up order shows.
CONSTANT_ACTION = {"zeta": 0.8, "alpha": -0.6, "mid": 1.5}
BOUNDS = {"zeta": (-1.0, 1.0), "alpha": (-1.0, 1.0), "mid": (0.0, 2.0)}
TINY = dict(
    horizon=8, num_timesteps=10, dim=16, dim_mults=(1, 2), inverse_hidden=64,
    sampler={"name": "ddim", "num_steps": 5},
)  # fmt: skip


class Drift(ParallelEnv):
    """Each agent moves its own position by ``0.5 * action`` per step; it observes its position, the
    time and (``zeta`` only) the others' mean position; reward ``-|position|``; 8 steps."""

    def __init__(self, agents=AGENTS):
        self.metadata = {"name": "drift_v0", "render_modes": []}
        self.possible_agents = list(agents)
        self.agents = []
        self.observation_spaces = {
            a: spaces.Box(-50, 50, (3 if a == "zeta" else 2,), np.float32) for a in agents
        }
        self.action_spaces = {a: spaces.Box(*BOUNDS[a], (1,), np.float32) for a in agents}

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _observations(self):
        agents = self.possible_agents
        observations = {a: np.array([self.position[a], self.t / 10], np.float32) for a in agents}
        others = np.mean([self.position[a] for a in agents if a != "zeta"])
        observations["zeta"] = np.append(observations["zeta"], np.float32(others))
        return observations

    def reset(self, seed=None, options=None):
        rng = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        self.position = {a: float(rng.uniform(-1, 1)) for a in self.agents}
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        agents = self.possible_agents
        for a in agents:
            self.position[a] += 0.5 * float(np.asarray(actions[a]).ravel()[0])
        rewards = {a: -abs(self.position[a]) for a in agents}
        done = self.t >= 8
        self.agents = [] if done else list(agents)
        flags = {a: False for a in agents}
        return self._observations(), rewards, flags, {a: done for a in agents}, {a: {} for a in agents}


class Wide(Drift):
    """Drift with a wider action range for ``mid``."""

    def __init__(self):
        super().__init__()
        self.action_spaces["mid"] = spaces.Box(0.0, 3.0, (1,), np.float32)


def behaviour(agent):
    rng = np.random.default_rng(AGENTS.index(agent))
    return lambda obs: np.array([CONSTANT_ACTION[agent] + rng.normal(0, 0.05)], np.float32)


@pytest.fixture(scope="module")
def drift_dataset(minari_store):
    policies = {a: behaviour(a) for a in AGENTS}
    return collect_multiagent_dataset(Drift(), policies, "test/drift/constant-v0", n_episodes=40, seed=0)


@pytest.fixture(scope="module")
def trained(drift_dataset):
    model = MADiff(
        "MlpPolicy", Drift(), dataset=drift_dataset, batch_size=32, ema_start=5, ema_every=1, check_every=10,
        seed=0, policy_kwargs={**TINY, "ema_decay": 0.9},
    )  # fmt: skip
    return model.learn(400)  # acting uses the EMAs (decay 0.9, every step: they track the trained networks)


def observations(seed=3):
    return Drift().reset(seed=seed)[0]


def test_drift_is_a_valid_parallel_env():
    parallel_api_test(Drift(), num_cycles=10)


def open_gains(net):
    """Set every attention gain to 1 (they start at 0, where attention adds nothing)."""
    for attention in net.agent_attention or ():
        torch.nn.init.ones_(attention.gain)
    return net


def test_attention_mixes_agents_and_the_ablation_does_not():
    x = torch.randn(2, 8, 3, 4)
    other = x.clone()
    other[:, :, 1] += 1.0  # change agent 1 only
    t, cond = torch.tensor([3, 7]), torch.randn(2, 1)
    for attention, mixes in ((True, True), (False, False)):
        torch.manual_seed(0)
        net = MultiAgentTemporalUnet(3, 4, cond_dim=1, dim=16, dim_mults=(1, 2), agent_attention=attention)
        open_gains(net)
        change = (net(other, t, cond) - net(x, t, cond)).abs().amax(dim=(0, 1, 3))  # per agent
        assert change[1] > 1e-3
        assert (change[[0, 2]] > 1e-4).all() == mixes, (attention, change)


def test_attention_starts_as_the_identity_and_learns_its_gain():
    """MADiff's ``residual_attn``: ``x + gamma * attention(x)`` with ``gamma`` initialised to 0."""
    torch.manual_seed(0)
    net = MultiAgentTemporalUnet(3, 4, cond_dim=1, dim=16, dim_mults=(1, 2))
    ablation = MultiAgentTemporalUnet(3, 4, cond_dim=1, dim=16, dim_mults=(1, 2), agent_attention=False)
    missing, unexpected = ablation.load_state_dict(net.state_dict(), strict=False)
    assert not missing and all(key.startswith("agent_attention.") for key in unexpected)
    x, t, cond = torch.randn(2, 8, 3, 4), torch.tensor([3, 7]), torch.randn(2, 1)
    out = net(x, t, cond)
    assert torch.equal(out, ablation(x, t, cond))
    out.square().sum().backward()
    assert all(a.gain.grad is not None and a.gain.grad.abs().item() > 0 for a in net.agent_attention)


def test_attention_is_time_conditioned_by_default():
    """MADiff's ``use_temporal_attention=True``: q, k, v get a bias from the blocks' embedding."""
    net = MultiAgentTemporalUnet(3, 4, cond_dim=1, dim=16, dim_mults=(1, 2))
    assert all(a.time_conditioned for a in net.agent_attention)
    plain = MultiAgentTemporalUnet(3, 4, cond_dim=1, dim=16, dim_mults=(1, 2), temporal_attention=False)
    assert not any(a.time_conditioned for a in plain.agent_attention)
    torch.manual_seed(0)
    attention = AgentAttention(16, embed_dim=8)
    torch.nn.init.ones_(attention.gain)
    x, emb = torch.randn(2, 3, 16, 4), torch.randn(2, 3, 8)
    assert not torch.allclose(attention(x, emb), attention(x, emb + 1.0))
    with pytest.raises(ValueError, match="pass emb"):
        attention(x)


def test_agents_are_exchangeable_in_the_network():
    torch.manual_seed(0)
    net = open_gains(MultiAgentTemporalUnet(3, 4, cond_dim=1, dim=16, dim_mults=(1, 2)))
    x, t, cond = torch.randn(2, 8, 3, 4), torch.tensor([1, 2]), torch.randn(2, 1)
    order = torch.tensor([2, 0, 1])
    torch.testing.assert_close(net(x[:, :, order], t, cond), net(x, t, cond)[:, :, order])


def test_agent_order_is_kept_from_data_through_training_to_predict(trained):
    assert trained.policy.agents == AGENTS
    actions, _ = trained.predict(observations(), deterministic=True)
    assert set(actions) == set(AGENTS)
    for agent in AGENTS:
        nearest = min(CONSTANT_ACTION, key=lambda a: abs(CONSTANT_ACTION[a] - float(actions[agent][0])))
        assert nearest == agent, actions


def test_centralised_plans_use_teammates_and_the_ablation_does_not(drift_dataset):
    obs = observations()
    moved = {**obs, "alpha": obs["alpha"] + np.float32(3.0)}
    for attention in (True, False):
        kwargs = dict(TINY, agent_attention=attention)
        model = MADiff("MlpPolicy", Drift(), dataset=drift_dataset, seed=0, ema_start=0, policy_kwargs=kwargs)
        model.learn(20)
        plans = [model.predict(o, deterministic=True)[1][1][0] for o in (obs, moved)]  # (H, n, D) each
        zeta, alpha = AGENTS.index("zeta"), AGENTS.index("alpha")
        assert not np.allclose(plans[0][1:, alpha], plans[1][1:, alpha])
        assert np.array_equal(plans[0][:, zeta], plans[1][:, zeta]) != attention


def test_decentralised_predict_uses_only_the_agents_own_observation(trained, tmp_path):
    trained.save(tmp_path / "c")
    model = MADiff.load(tmp_path / "c", env=Drift())
    model.policy.decentralized = True
    obs = observations()
    before, _ = model.predict(obs, deterministic=True)
    for agent in AGENTS:
        perturbed = {a: obs[a] + (np.float32(5.0) if a != agent else 0) for a in AGENTS}
        after, _ = model.predict(perturbed, deterministic=True)
        np.testing.assert_array_equal(after[agent], before[agent])
        moved_self = {**obs, agent: obs[agent] + np.float32(0.5)}
        k = AGENTS.index(agent)
        own_plans = [model.predict(o, deterministic=True)[1][1][0, 1:, k] for o in (obs, moved_self)]
        assert not np.allclose(*own_plans)


def test_decentralised_training_with_epsilon_prediction_runs(drift_dataset):
    kwargs = dict(TINY, decentralized=True, prediction="epsilon")
    model = MADiff("MlpPolicy", Drift(), dataset=drift_dataset, seed=0, policy_kwargs=kwargs)
    assert model.policy.model.prediction == "epsilon"
    model.learn(10)
    actions, _ = model.predict(observations(), deterministic=True)
    assert set(actions) == set(AGENTS)


def test_deterministic_predict_reproduces_and_actions_stay_in_bounds(trained):
    obs = observations()
    first, _ = trained.predict(obs, deterministic=True)
    second, _ = trained.predict(obs, deterministic=True)
    for agent in AGENTS:
        np.testing.assert_array_equal(first[agent], second[agent])
        low, high = BOUNDS[agent]
        for _ in range(3):
            action = trained.predict(obs)[0][agent]
            assert action.shape == (1,) and action.dtype == np.float32
            assert low <= action[0] <= high


def test_save_load_predicts_the_same_and_resumes(trained, drift_dataset, tmp_path):
    trained.save(tmp_path / "madiff")
    loaded = MADiff.load(tmp_path / "madiff", env=Drift(), dataset=drift_dataset)
    assert loaded.policy.agents == AGENTS
    obs = observations()
    for agent, action in trained.predict(obs, deterministic=True)[0].items():
        np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0][agent], action)
    loaded.learn(5, reset_num_timesteps=False)
    assert loaded.num_timesteps == trained.num_timesteps + 5


def test_a_tampered_model_file_is_refused(trained, tmp_path):
    path = tmp_path / "madiff.zip"
    trained.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        MADiff.load(path)


def test_bad_observations_are_clear_errors(trained):
    obs = observations()
    with pytest.raises(ValueError, match=r"zeta: \(2,\) \(space \(3,\)\)"):
        trained.predict({**obs, "zeta": obs["zeta"][:2]})
    with pytest.raises(AgentMismatchError, match=r"missing \['mid'\]"):
        trained.predict({a: obs[a] for a in ("zeta", "alpha")})
    with pytest.raises(AgentMismatchError, match=r"unknown \['spy'\]"):
        trained.predict({**obs, "spy": obs["mid"]})


def test_vectorised_predict_gives_one_dict_per_env_and_plans_carry_over(trained):
    batch = {a: np.stack([observations(1)[a], observations(2)[a]]) for a in AGENTS}
    actions, state = trained.predict(batch, deterministic=True)
    assert isinstance(actions, list) and len(actions) == 2 and set(actions[0]) == set(AGENTS)
    single, _ = trained.predict(observations(2), deterministic=True)
    np.testing.assert_array_equal(actions[1]["mid"], single["mid"])  # a row does not depend on the batch
    assert state[0].shape[0] == 2


def test_team_evaluation_and_sb3_evaluate_policy(trained):
    returns, lengths = evaluate_team(trained, Drift(), n_eval_episodes=2, seed=0, return_episode_rewards=True)
    assert lengths == [8, 8] and len(returns) == 2
    mean, _ = evaluate_policy(trained, trained.get_env(), n_eval_episodes=2)
    assert np.isfinite(mean)


def test_callbacks_and_logger(drift_dataset, tmp_path):
    model = MADiff(
        "MlpPolicy", Drift(), dataset=drift_dataset, seed=0, check_every=5, policy_kwargs=TINY,
        tensorboard_log=str(tmp_path / "tb"),
    )  # fmt: skip
    model.learn(10, callback=CheckpointCallback(5, str(tmp_path / "ckpt")), log_interval=5)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "rl_model_10_steps.zip",
        "rl_model_5_steps.zip",
    ]
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_a_dataset_of_another_team_is_refused(drift_dataset, minari_store):
    other = collect_multiagent_dataset(Drift(("zeta", "alpha")), None, "test/drift/pair-v0", n_episodes=2)
    with pytest.raises(AgentMismatchError, match=r"2 agents \['zeta', 'alpha'\] but the env has 3"):
        MADiff("MlpPolicy", Drift(), dataset=other, policy_kwargs=TINY)
    with pytest.raises(DatasetSpaceMismatchError, match=r"action\['mid'\]"):
        MADiff("MlpPolicy", Drift(), dataset=drift_dataset, policy_kwargs=TINY).set_dataset(
            collect_multiagent_dataset(Wide(), None, "test/drift/wide-v0", n_episodes=2)
        )


def test_offline_only(trained):
    with pytest.raises(NotImplementedError, match="dataset only"):
        trained.learn(5, online=True)


def test_joint_env_is_what_sb3_steps(trained):
    env = trained.get_env()
    assert isinstance(env.envs[0].unwrapped, JointAgentEnv)


def test_limits_normalisation_keeps_epsilon_plans_in_the_data_range(drift_dataset):
    """With ``normalizer="limits"`` x0 is clipped to the data's [-1, 1] range (MADiff's ``clip_denoised``);
    standardised and unclipped, a barely trained ε-model's plans run away."""
    obs = observations()
    for normalizer in ("limits", "gaussian"):
        kwargs = dict(TINY, sampler="ddpm", prediction="epsilon", normalizer=normalizer)
        model = MADiff("MlpPolicy", Drift(), dataset=drift_dataset, seed=0, ema_start=0, policy_kwargs=kwargs)
        plan = model.learn(5).predict(obs, deterministic=True)[1][1][0]  # (H, n, D) normalised
        inside = np.abs(plan[1:]).max() <= 1.0 + 1e-5
        assert inside == (normalizer == "limits")


def test_actions_come_from_each_agents_own_inverse_dynamics_average(trained):
    """MADiff acts with the EMA of each agent's inverse dynamics: a training step moves the networks,
    not the actions, until the averages follow, and agent ``k``'s average drives only agent ``k``."""
    policy = copy.deepcopy(trained.policy)
    plans = torch.randn(2, *policy.plan_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        policy.update_averages(step=0, start=1, every=1)  # before ema_start the averages copy the networks
        before = policy.plan_actions(plans)  # (2, n_action_steps, one action per agent)
        for parameter in policy.inverse[1].parameters():
            parameter.add_(1.0)  # a training step moved agent 1's network, not yet its average
        torch.testing.assert_close(policy.plan_actions(plans), before)
        policy.update_averages(step=0, start=1, every=1)
        after = policy.plan_actions(plans)
    moved = (after - before).abs().amax(dim=(0, 1)) > 1e-4
    assert moved.tolist() == [False, True, False]
