"""DiffuserPlanner: inpainting holds exactly, value guidance steers plans, inverse dynamics recovers actions."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from diffgym import DiffuserPlanner
from diffgym.agents.diffuser import (
    DecisionDiffuser,
    DecisionDiffuserPolicy,
    DiffuserPolicy,
    SingleAgentPlanner,
)
from diffgym.agents.diffuser import diffuser as diffuser_module
from diffgym.data import collect_dataset
from diffgym.samplers import DDIMSampler

GOAL_SPACE = spaces.Dict(
    {
        "desired_goal": spaces.Box(-5.0, 5.0, (2,), np.float32),
        "observation": spaces.Box(-5.0, 5.0, (4,), np.float32),
    }
)
ACTIONS = spaces.Box(-1.0, 1.0, (2,), np.float32)
TINY = dict(horizon=8, num_timesteps=10, dim=16, dim_mults=(1, 2), value_dim=16, value_dim_mults=(1, 2))


def make_policy(observation_space=GOAL_SPACE, mode="diffuser", **kwargs) -> SingleAgentPlanner:
    if mode == "diffuser":
        policy = DiffuserPolicy(observation_space, ACTIONS, lambda _: 1e-3, **{**TINY, **kwargs})
    else:  # Decision Diffuser has no value network
        tiny = {key: value for key, value in TINY.items() if not key.startswith("value_")}
        policy = DecisionDiffuserPolicy(observation_space, ACTIONS, lambda _: 1e-3, **{**tiny, **kwargs})
    policy.sampling_generator = torch.Generator().manual_seed(0)
    data = torch.randn(100, policy.obs_dim, generator=torch.Generator().manual_seed(9))
    policy.fit_normalizer(data * 2 + 1)  # non-trivial normalisation: exactness is not an accident of identity
    return policy.eval()


def observations(n: int) -> torch.Tensor:
    return torch.randn(n, 1, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("normalizer", ["gaussian", "limits"])
@pytest.mark.parametrize(
    "sampler", ["ddpm", {"name": "ddim", "num_steps": 4}, {"name": "dpm_solver", "num_steps": 4}]
)
def test_inpainted_start_and_goal_hold_exactly(sampler, normalizer):
    policy = make_policy(
        state_key="observation", goal_key="desired_goal", sampler=sampler, n_plans=1, normalizer=normalizer
    )
    history = observations(5)
    with torch.no_grad():
        plans = policy.plan(history, None, deterministic=False)
        states = policy.states_of(plans)
        assert torch.equal(states[:, 0], history[:, -1, policy.state_slice])
        goal = policy._goal_state(history[:, -1])
        assert torch.equal(states[:, -1], goal)
        raw_goal_state = policy.obs_normalizer.unnormalize(
            torch.cat([history[:, -1, :2], states[:, -1]], dim=1)
        )[:, 2:]
        torch.testing.assert_close(
            raw_goal_state[:, :2], policy.obs_normalizer.unnormalize(history[:, -1])[:, :2]
        )
        zero_velocity = torch.zeros(5, 2)
        torch.testing.assert_close(raw_goal_state[:, 2:], zero_velocity, atol=1e-5, rtol=0)


def test_warm_started_plans_keep_the_current_state():
    policy = make_policy(state_key="observation", n_plans=2, n_action_steps=2, warm_start_steps=4)
    history = observations(3)
    with torch.no_grad():
        cold = policy.plan(history, None, deterministic=True)
        warm = policy.plan(history, cold, deterministic=True)
    assert torch.equal(policy.states_of(warm)[:, 0], history[:, -1, policy.state_slice])
    assert not torch.equal(warm, cold)


class RewardsLargeX(nn.Module):
    """A value that prefers plans whose first state entry is large, at every noise level."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x[..., self.index].mean(dim=1)


def use_value(policy: DiffuserPolicy, value: nn.Module) -> None:
    """Make ``value`` the policy's value network and its EMA (which plans use)."""
    policy.value = value
    policy.value_ema.module = value


class StandardNormalOracle(nn.Module):
    """The exact x0-denoiser of N(0, I) data: E[x0 | x_t] = sqrt(alpha_bar_t) x_t."""

    def __init__(self, sqrt_alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.sqrt_alpha_bar = sqrt_alpha_bar
        self.anchor = nn.Parameter(torch.zeros(()))  # sampling reads device and dtype from a parameter

    def forward(self, x, t, cond=None, cond_mask=None):
        return self.sqrt_alpha_bar[t].view(-1, 1, 1) * x


def test_value_guidance_moves_plans_toward_high_value():
    policy = make_policy(spaces.Box(-5.0, 5.0, (4,), np.float32), n_plans=1, guide_stop_below=0)
    model = policy.ema_model
    model.denoiser = StandardNormalOracle(model.schedule.sqrt_alphas_cumprod)
    use_value(policy, RewardsLargeX(index=ACTIONS.shape[0]))  # the state's first entry
    history = torch.randn(16, 1, 4, generator=torch.Generator().manual_seed(2))

    def planned_states(scale: float) -> torch.Tensor:
        policy.guide_scale = scale
        policy.sampling_generator = torch.Generator().manual_seed(0)  # the same noise for both
        with torch.no_grad():
            plans = policy.plan(history, None, deterministic=False)
        return policy.states_of(plans)[:, 1:]  # t=0 is inpainted

    unguided, guided_states = planned_states(0.0)[..., 0], planned_states(1.0)
    guided, others = guided_states[..., 0], guided_states[..., 1:]
    assert (guided.mean(dim=1) > unguided.mean(dim=1) + 0.1).all()
    assert abs(unguided.mean()) < 0.3  # without guidance the oracle samples N(0, I)
    assert abs(others.mean()) < 0.3  # the value ignores the other entries; so does the guidance


def test_best_of_n_keeps_the_highest_value_plan():
    policy = make_policy(spaces.Box(-5.0, 5.0, (4,), np.float32), n_plans=6, guide_scale=0.0)
    use_value(policy, RewardsLargeX(index=ACTIONS.shape[0]))
    candidates = torch.randn(3, 6, 8, 6, generator=torch.Generator().manual_seed(3))
    chosen = policy._best(candidates)
    best = candidates[..., ACTIONS.shape[0]].mean(dim=2).argmax(dim=1)
    assert torch.equal(chosen, candidates[torch.arange(3), best])


class LinearSystem(gym.Env):
    """s' = 0.9 s + B a with a known B of full column rank; 20-step episodes."""

    B = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]], dtype=np.float32)
    observation_space = spaces.Box(-10.0, 10.0, (3,), np.float32)
    action_space = ACTIONS

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        self.t = 0
        return self.state.copy(), {}

    def step(self, action):
        self.state = (0.9 * self.state + self.B @ np.asarray(action, np.float32)).astype(np.float32)
        self.t += 1
        return self.state.copy(), 0.0, False, self.t >= 20, {}


def test_inverse_dynamics_recovers_the_actions_of_a_linear_system(minari_store):
    env = LinearSystem()
    dataset = collect_dataset(env, None, "test/linear/random-v0", n_steps=2000, seed=0)
    model = DiffuserPlanner(
        "MlpPolicy",
        env,
        dataset=dataset,
        mode="decision_diffuser",
        learning_rate=1e-3,
        batch_size=64,
        seed=0,
        policy_kwargs=dict(TINY, inverse_hidden=64),
    ).learn(400)
    rng = np.random.default_rng(5)
    states = rng.uniform(-2, 2, (200, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, (200, 2)).astype(np.float32)
    next_states = 0.9 * states + actions @ LinearSystem.B.T
    policy = model.policy
    with torch.no_grad():
        normalize = policy.obs_normalizer.normalize
        predicted = policy.inverse(
            normalize(torch.as_tensor(states)), normalize(torch.as_tensor(next_states))
        )
    residual = ((predicted.numpy() - actions) ** 2).sum()
    total = ((actions - actions.mean(axis=0)) ** 2).sum()
    assert 1 - residual / total > 0.9  # R² on fresh transitions


def test_decision_diffuser_executes_inverse_dynamics_actions():
    policy = make_policy(spaces.Box(-5.0, 5.0, (4,), np.float32), mode="decision_diffuser", n_action_steps=3)
    plans = torch.randn(2, 8, 4)
    expected = policy.inverse(plans[:, :3], plans[:, 1:4])
    torch.testing.assert_close(policy.plan_actions(plans), expected)


def test_tracking_is_a_pd_controller_toward_the_next_planned_state():
    policy = make_policy(
        state_key="observation", goal_key="desired_goal", tracking=(2.0, 0.5), n_action_steps=20
    )
    plans = torch.randn(3, 8, policy.x_dim) * 0.1
    features = observations(3)[:, 0]
    step = torch.tensor([0, 6, 15])  # the last row has run past the plan's end (held at its last position)
    with torch.no_grad():
        actions = policy.step_actions(plans, step, features)
        planned = policy.raw_states(plans)
        current = policy.obs_normalizer.unnormalize(features)[:, policy.state_slice]
    targets = torch.stack([planned[0, 1], planned[1, 7], torch.cat([planned[2, 7, :2], torch.zeros(2)])])
    expected = 2.0 * (targets[:, :2] - current[:, :2]) + 0.5 * (targets[:, 2:] - current[:, 2:])
    torch.testing.assert_close(actions, expected.clamp(-1, 1))  # action bounds are [-1, 1]
    with pytest.raises(ValueError, match="position, velocity"):
        make_policy(spaces.Box(-5.0, 5.0, (3,), np.float32), tracking=(1.0, 1.0))


def test_endpoint_condition_feeds_the_inpainted_states_to_the_unet(monkeypatch):
    policy = make_policy(state_key="observation", goal_key="desired_goal", n_plans=1, endpoint_condition=True)
    unet = policy.ema_model.denoiser
    assert unet.cond_dim == 2 * policy.state_dim
    seen = []
    forward = unet.forward
    monkeypatch.setattr(
        unet, "forward", lambda x, t, cond=None, mask=None: seen.append(cond) or forward(x, t, cond, mask)
    )
    history = observations(2)
    with torch.no_grad():
        policy.plan(history, None, deterministic=True)
    start = history[:, -1, policy.state_slice]
    expected = torch.cat([start, policy._goal_state(history[:, -1])], dim=1)
    assert len(seen) == policy.ema_model.num_timesteps and all(torch.equal(c, expected) for c in seen)


def test_decision_diffuser_endpoint_condition_follows_the_return(monkeypatch):
    policy = make_policy(
        spaces.Box(-5.0, 5.0, (4,), np.float32), mode="decision_diffuser", endpoint_condition=True
    )
    unet = policy.ema_model.denoiser
    assert unet.cond_dim == 1 + policy.state_dim
    seen = []
    forward = unet.forward
    monkeypatch.setattr(
        unet,
        "forward",
        lambda x, t, cond=None, mask=None: seen.append((cond, mask)) or forward(x, t, cond, mask),
    )
    history = observations(2)[..., :4]
    with torch.no_grad():
        policy.plan(history, None, deterministic=True)
    cond, mask = seen[0]  # classifier-free guidance: the batch doubled, the second half's condition dropped
    target = policy.return_condition(policy.return_target.expand(2))  # (2, 1)
    expected = torch.cat([target, history[:, -1]], dim=1)
    assert torch.equal(cond, torch.cat([expected, expected])) and mask.tolist() == [True, True, False, False]


def test_decision_diffuser_plans_stay_in_the_data_range_by_default():
    """DD's ε-prediction on the cosine schedule is clipped to the normalised data range (its
    ``clip_denoised``); unclipped, the last DDPM step alone scales the ε error by 1 / sqrt(alpha_T)."""
    space = spaces.Box(-5.0, 5.0, (4,), np.float32)
    policy = make_policy(space, mode="decision_diffuser")
    data = torch.randn(100, 4, generator=torch.Generator().manual_seed(9)) * 2 + 1  # as make_policy fits
    with torch.no_grad():  # planned steps after the inpainted start
        states = policy.raw_states(policy.plan(observations(5)[..., :4], None, deterministic=False))[:, 1:]
    assert (states >= data.min(0).values - 1e-4).all() and (states <= data.max(0).values + 1e-4).all()
    unclipped = make_policy(space, mode="decision_diffuser", normalizer="gaussian")
    with torch.no_grad():
        wild = unclipped.raw_states(unclipped.plan(observations(5)[..., :4], None, deterministic=False))[
            :, 1:
        ]
    assert (wild.abs() > data.abs().max()).any()  # what the clipping prevents


def test_decision_diffuser_is_the_planner_in_its_mode_and_the_mode_round_trips(minari_store, tmp_path):
    env = LinearSystem()
    dataset = collect_dataset(env, None, "test/linear/modes-v0", n_steps=300, seed=0)
    kwargs = dict(
        dataset=dataset, batch_size=16, gamma=0.99, seed=0, policy_kwargs=TINY
    )  # value_*: Diffuser's
    planner = DiffuserPlanner("MlpPolicy", env, mode="decision_diffuser", **kwargs).learn(5)
    alias = DecisionDiffuser("MlpPolicy", env, **kwargs).learn(5)
    assert type(planner.policy) is type(alias.policy) is DecisionDiffuserPolicy
    assert "value_dim" not in planner.policy_kwargs  # the other mode's settings are dropped
    obs = np.array([0.3, -0.2, 0.1], np.float32)
    action, _ = planner.predict(obs, deterministic=True)
    np.testing.assert_array_equal(alias.predict(obs, deterministic=True)[0], action)
    planner.save(tmp_path / "planner")
    alias.save(tmp_path / "alias")
    loaded = DiffuserPlanner.load(tmp_path / "planner", env=env)
    assert loaded.mode == "decision_diffuser" and type(loaded.policy) is DecisionDiffuserPolicy
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)
    np.testing.assert_array_equal(
        DecisionDiffuser.load(tmp_path / "alias").predict(obs, deterministic=True)[0], action
    )
    with pytest.raises(TypeError, match="plans with a DecisionDiffuserPolicy"):
        DiffuserPlanner(DiffuserPolicy, env, mode="decision_diffuser")


class RewardedLinearSystem(LinearSystem):
    """The linear system, rewarded by its first state entry plus one (returns far from standardised)."""

    def step(self, action):
        state, _, terminated, truncated, info = super().step(action)
        return state, 1.0 + float(state[0]), terminated, truncated, info


def test_the_value_regresses_raw_returns_and_plans_use_its_ema(minari_store, monkeypatch):
    env = RewardedLinearSystem()
    dataset = collect_dataset(env, None, "test/linear/rewarded-v0", n_steps=300, seed=0)
    planner = DiffuserPlanner(
        "MlpPolicy", env, dataset=dataset, batch_size=16, seed=0, ema_start=3, ema_every=2, policy_kwargs=TINY
    )
    policy = planner.policy
    assert isinstance(policy, DiffuserPolicy) and policy.value is not None and policy.value_ema is not None
    seen = {}
    update_value, mse_loss = planner._update_value, diffuser_module.F.mse_loss

    def spy_update(batch, x0, inpainting):
        seen["returns"] = batch.returns
        return update_value(batch, x0, inpainting)

    def spy_loss(prediction, target):
        seen["target"] = target
        return mse_loss(prediction, target)

    monkeypatch.setattr(planner, "_update_value", spy_update)
    monkeypatch.setattr(diffuser_module.F, "mse_loss", spy_loss)

    def weights(module):
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    planner.learn(3)  # updates 0, 1, 2: before ema_start the EMA copies
    assert torch.equal(seen["target"], seen["returns"])  # raw, as Diffuser's ValueDataset(normed=False)
    assert seen["returns"].mean() > 5  # ~20-step episodes rewarded about 1 a step: not standardised
    assert torch.equal(weights(policy.value_ema.module), weights(policy.value))
    planner.learn(3, reset_num_timesteps=False)  # updates 3, 4, 5: averaged at 3 and 5
    assert not torch.equal(weights(policy.value_ema.module), weights(policy.value))
    guidance = policy._classifier()
    assert guidance is not None and guidance.value_fn is policy.value_ema.module
    assert (guidance.scale, guidance.stop_grad_below, guidance.n_guide_steps) == (0.1, 2, 2)  # Diffuser's


def test_sampling_temperature_is_the_papers_unless_the_sampler_names_one():
    assert make_policy(mode="diffuser").sampler.temperature == 1.0  # Diffuser: N(0, I)
    assert make_policy(mode="decision_diffuser").sampler.temperature == 0.5  # DD: 0.5 N(0, I)
    chosen = make_policy(
        mode="decision_diffuser", sampler={"name": "ddim", "num_steps": 4, "temperature": 1.0}
    )
    assert chosen.sampler == DDIMSampler(num_steps=4, temperature=1.0)


def test_decision_diffuser_targets_a_quantile_of_the_datas_segment_returns():
    policy = make_policy(
        spaces.Box(-5.0, 5.0, (4,), np.float32), mode="decision_diffuser", target_quantile=0.25
    )
    returns = torch.arange(101.0) * 2 - 50  # segment returns -50 … 150
    data = type("Segments", (), dict(returns=returns, step_observations=torch.randn(101, 1, 4)))
    policy.fit_to_segments(data)
    assert policy.return_target.item() == pytest.approx(0.0)  # the 0.25 quantile, not 0.25 of the range
    assert policy.target_condition(torch.zeros(3, 4)).flatten().tolist() == pytest.approx([0.25] * 3)
    with pytest.raises(ValueError, match="target_quantile"):
        make_policy(mode="decision_diffuser", target_quantile=1.5)


def test_decision_diffuser_acts_with_the_ema_of_its_inverse_dynamics():
    """DD's EMA model holds the inverse dynamics too: acting uses the average, training the network."""
    policy = make_policy(spaces.Box(-5.0, 5.0, (4,), np.float32), mode="decision_diffuser")
    plans = torch.randn(2, policy.segment_horizon, policy.x_dim, generator=torch.Generator().manual_seed(3))
    before = policy.plan_actions(plans)
    with torch.no_grad():
        for parameter in policy.inverse.parameters():
            parameter.add_(1.0)  # a training step moved the network, not yet its average
    torch.testing.assert_close(policy.plan_actions(plans), before)
    policy.update_averages(step=0, start=1, every=1)  # before ema_start the average copies the network
    assert not torch.allclose(policy.plan_actions(plans), before)


@pytest.mark.parametrize("goal_entries", ["state", "goal"])
def test_goal_entries_say_which_entries_of_the_plans_end_are_fixed(goal_entries):
    policy = make_policy(
        state_key="observation", goal_key="desired_goal", n_plans=1, endpoint_condition=True, guide_scale=0.0,
        goal_entries=goal_entries,
    )  # fmt: skip
    features = policy.features({"desired_goal": torch.tensor([[1.0, 2.0]]), "observation": torch.ones(1, 4)})
    goal = policy._goal_state(features)  # (1, 4): the goal position, zero velocity
    first = torch.zeros(1, 4)
    fixed = policy.inpainting((1, policy.segment_horizon, policy.x_dim), first, goal).mask[0, -1, -4:]
    condition = policy.endpoints(first, goal)[1][0]
    if goal_entries == "state":  # Diffuser's: position and zero velocity
        assert fixed.tolist() == [True] * 4 and torch.equal(condition, goal[0])
    else:  # the position only; the velocity is left to the model and given to the U-Net as 0
        assert fixed.tolist() == [True, True, False, False]
        assert torch.equal(condition[:2], goal[0, :2]) and condition[2:].tolist() == [0.0, 0.0]
    plan = policy.plan(features.unsqueeze(1), None, deterministic=True)[0, -1, -4:]
    torch.testing.assert_close(plan[fixed], goal[0][fixed])
    with pytest.raises(ValueError, match="goal_entries"):
        make_policy(state_key="observation", goal_key="desired_goal", goal_entries="velocity")


class FallingLinearSystem(LinearSystem):
    """The linear system rewarded 1 a step, whose episodes end by termination (a fall) at step 6."""

    def step(self, action):
        state, _, _, _, info = super().step(action)
        return state, 1.0, self.t >= 6, False, info


@pytest.mark.parametrize("algorithm", [DiffuserPlanner, DecisionDiffuser])
def test_planners_penalise_terminations_by_default_as_both_papers(algorithm, minari_store):
    """Both papers' locomotion returns add -100 to the reward of a terminal step; the planners' default."""
    dataset = collect_dataset(
        FallingLinearSystem(), None, f"test/falling/{algorithm.__name__.lower()}-v0", n_steps=120, seed=0
    )

    def segment_returns(**kwargs) -> torch.Tensor:
        tiny = {
            key: value for key, value in TINY.items() if algorithm is DiffuserPlanner or "value" not in key
        }
        planner = algorithm(
            "MlpPolicy",
            FallingLinearSystem(),
            dataset=dataset,
            batch_size=4,
            seed=0,
            policy_kwargs=tiny,
            **kwargs,
        )
        return planner.learn(1)._offline.returns

    penalised, plain = segment_returns(), segment_returns(termination_penalty=0.0)
    assert plain.min() > 0 and plain.max() <= 6  # at most six rewards of 1, discounted
    penalty = plain - penalised  # every 8-step window of a 6-step episode reaches its fall
    assert penalty.min() > 94 and penalty.max() <= 100  # -100, discounted over at most 5 steps
