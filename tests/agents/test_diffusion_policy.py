"""DiffusionPolicy: the action queue, episode starts, temporal ensembling, imitation of a bimodal
demonstrator whose mode only the observation history reveals, and whole chunks on an action-chunk env."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from diffgym import DiffusionPolicy
from diffgym.agents.diffusion_policy import DiffusionPolicyNet
from diffgym.data import collect_dataset
from diffgym.normalizers import MinMaxNormalizer
from diffgym.wrappers import ActionChunkWrapper, make_chunked_env

TINY = dict(horizon=8, n_action_steps=4, num_timesteps=10, dim=16, dim_mults=(1, 2))


class BimodalLine(gym.Env):
    """x' = x + 0.2 a on a line, 10 steps; the demonstrator drives at 0.8 in a direction drawn at reset that
    the observation (x alone) does not show: only two consecutive observations reveal it."""

    observation_space = spaces.Box(-5.0, 5.0, (1,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = np.float32(self.np_random.uniform(-0.5, 0.5))
        self.direction = 1.0 if self.np_random.random() < 0.5 else -1.0
        self.t = 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = np.float32(self.x + 0.2 * float(np.clip(action[0], -1, 1)))
        self.t += 1
        return np.array([self.x], np.float32), 0.0, False, self.t >= 10, {}

    def demonstrator(self, observation):
        return np.array([0.8 * self.direction], np.float32)


@pytest.fixture(scope="module")
def line_model(minari_store):
    env = BimodalLine()
    dataset = collect_dataset(env, env.demonstrator, "test/bimodal-line/expert-v0", n_episodes=200)
    model = DiffusionPolicy(
        "MlpPolicy",
        env,
        dataset=dataset,
        learning_rate=3e-3,
        batch_size=64,
        lr_warmup_steps=20,
        seed=0,
        policy_kwargs=dict(TINY, dim=32, sampler={"name": "ddim", "num_steps": 5}, ema_max_decay=0.9),
    )
    return model.learn(300)


class CountingPlans:
    """Wraps a policy's ``plan``: counts the rows planned per call."""

    def __init__(self, policy: DiffusionPolicyNet, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plan, self.rows = policy.plan, []
        monkeypatch.setattr(policy, "plan", self)

    def __call__(self, history, previous, deterministic):
        self.rows.append(history.shape[0])
        return self.plan(history, previous, deterministic)


def test_queue_returns_the_chunk_in_order_and_replans_every_n_action_steps(line_model, monkeypatch):
    policy = line_model.policy
    counter = CountingPlans(policy, monkeypatch)
    observations = np.linspace(-0.3, 0.3, 9, dtype=np.float32)[:, None]
    action, state = line_model.predict(observations[0], deterministic=True)
    chunk = policy.executable(torch.as_tensor(state[1])).numpy()[0]  # (4, 1) the planned actions
    returned = [action]
    for observation in observations[1:4]:
        action, state = line_model.predict(observation, state=state, deterministic=True)
        returned.append(action)
    assert counter.rows == [1]  # four actions from one plan
    np.testing.assert_allclose(np.stack(returned), policy.unscale_action(chunk), rtol=1e-6)
    action, state = line_model.predict(observations[4], state=state, deterministic=True)
    assert counter.rows == [1, 1]  # the fifth action comes from a new plan ...
    new_chunk = policy.executable(torch.as_tensor(state[1])).numpy()[0]
    np.testing.assert_allclose(action, policy.unscale_action(new_chunk[0]), rtol=1e-6)
    history = policy.obs_normalizer.unnormalize(torch.as_tensor(state[0][0])).numpy()
    np.testing.assert_allclose(history, observations[3:5], rtol=1e-5)  # ... conditioned on the last two


def test_episode_start_resets_only_the_envs_that_start(line_model, monkeypatch):
    policy = line_model.policy
    counter = CountingPlans(policy, monkeypatch)
    observations = np.array([[0.1], [-0.2]], np.float32)
    _, state = line_model.predict(observations, deterministic=True)
    _, state = line_model.predict(observations + 0.05, state=state, deterministic=True)
    plans_before = state[1].copy()
    restart = np.array([[0.4], [-0.1]], np.float32)
    _, state = line_model.predict(
        restart, state=state, episode_start=np.array([True, False]), deterministic=True
    )
    assert counter.rows == [2, 1]  # only env 0 planned again
    np.testing.assert_array_equal(state[1][1], plans_before[1])
    np.testing.assert_array_equal(state[2], [1, 3])  # env 0 starts its new queue, env 1 continues
    history = policy.obs_normalizer.unnormalize(torch.as_tensor(state[0])).numpy()
    np.testing.assert_allclose(history[0], [[0.4], [0.4]], rtol=1e-5)  # a fresh history repeats the obs
    np.testing.assert_allclose(history[1], [[-0.15], [-0.1]], rtol=1e-5)


class ScriptedChunks:
    """Stands in for the diffusion model: the chunk sampled at call ``c`` is ``0.1 c + 0.01 i`` at
    step ``i`` of the chunk (``i = 0`` the first row), so every prediction is identifiable."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, history, deterministic):
        value = 0.1 * self.calls + 0.01 * torch.arange(8.0)
        self.calls += 1
        return value.view(1, 8, 1).expand(history.shape[0], 8, 1).clone()


@pytest.mark.parametrize("coeff", [0.0, 0.5, -0.5])
def test_temporal_ensembling_weights_overlapping_chunks_as_act(coeff, monkeypatch):
    space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    policy = DiffusionPolicyNet(space, space, lambda _: 1e-3, **TINY, temporal_ensemble_coeff=coeff).eval()
    monkeypatch.setattr(policy, "sample_chunks", ScriptedChunks())
    start = policy.n_obs_steps - 1  # the chunk's first executable row
    state, got = None, []
    for _ in range(7):
        action, state = policy.predict(np.zeros(1, np.float32), state=state)
        got.append(float(action[0]))
    k = TINY["n_action_steps"]
    for t, action in enumerate(got):
        made = list(range(max(0, t - k + 1), t + 1))  # chunks covering step t, oldest first
        predictions = np.array([0.1 * c + 0.01 * (start + t - c) for c in made])
        weights = np.exp(-coeff * np.arange(len(made)))  # ACT: w_i = exp(-m i), i = 0 the oldest
        assert action == pytest.approx(float((weights * predictions).sum() / weights.sum()), abs=1e-6)


def test_imitates_a_bimodal_demonstrator_that_needs_the_history(line_model):
    """Each rollout must pick a direction and keep it. Both directions are demonstrated from every
    position (a regressor averages them to 0), and only the last two observations show which way
    the agent is going: a policy without history continues in the same direction at a new chunk
    half of the time."""
    env = BimodalLine()
    n, steps, k = 64, 10, TINY["n_action_steps"]
    x = np.array([env.reset(seed=1000 + i)[0] for i in range(n)])
    state, actions = None, np.zeros((steps, n))
    for t in range(steps):
        action, state = line_model.predict(x, state=state, deterministic=False)
        actions[t] = action[:, 0]
        x = x + 0.2 * np.clip(action, -1, 1)
    first = actions[0]
    assert min(np.mean(first > 0), np.mean(first < 0)) >= 0.1  # both modes are sampled ...
    assert np.abs(np.abs(actions) - 0.8).mean() < 0.15  # ... at the demonstrated speed, not averaged
    kept = np.sign(actions[k::k]) == np.sign(actions[k - 1 : -1 : k])  # at each new chunk
    assert kept.mean() >= 0.8


# ----------------------------------------------------------------------------- on an action-chunk env


def chunked_line_env():
    return make_chunked_env(BimodalLine(), n_obs_steps=2, n_action_steps=TINY["n_action_steps"])


@pytest.fixture(scope="module")
def chunk_model(line_model):
    """A model built on the action-chunk env, with the trained per-step model's weights."""
    kwargs = dict(TINY, dim=32, sampler={"name": "ddim", "num_steps": 5}, ema_max_decay=0.9)
    model = DiffusionPolicy(
        "MlpPolicy",
        chunked_line_env(),
        dataset=line_model.dataset,
        lr_warmup_steps=0,
        seed=0,
        policy_kwargs=kwargs,
    )
    model.set_parameters({"policy": line_model.policy.state_dict()})
    return model


def test_a_model_built_on_an_action_chunk_env_emits_its_chunks(line_model, chunk_model):
    """The chunk env shows the history (2, 1): one observation, answered with the chunk the per-step
    model executes over its next four calls (never a batch of two envs)."""
    assert chunk_model.action_space.shape == (4, 1) and chunk_model.policy.action_space.shape == (1,)
    env = chunked_line_env()
    history, _ = env.reset(seed=3)
    assert history.shape == (2, 1)
    chunk, state = chunk_model.predict(history, deterministic=True)
    assert chunk.shape == (4, 1) and state is None
    per_step, state = [], None
    for _ in range(4):
        action, state = line_model.predict(history[-1], state=state, deterministic=True)
        per_step.append(action)
    np.testing.assert_allclose(chunk, np.stack(per_step), atol=1e-5)
    batch, _ = chunk_model.predict(np.stack([history, history + 0.1]), deterministic=True)
    assert batch.shape == (2, 4, 1)
    np.testing.assert_allclose(batch[0], chunk, atol=1e-5)
    with pytest.raises(ValueError, match=r"observations, of shape \(2, 1\)"):
        chunk_model.predict(history[-1], deterministic=True)


def test_an_action_chunk_model_evaluates_saves_and_loads(chunk_model, tmp_path):
    from stable_baselines3.common.evaluation import evaluate_policy

    env = chunked_line_env()
    _, lengths = evaluate_policy(chunk_model, env, n_eval_episodes=2, return_episode_rewards=True)
    assert lengths == [3, 3]  # 10 steps in chunks of 4
    chunk_model.save(tmp_path / "chunks")
    loaded = DiffusionPolicy.load(tmp_path / "chunks", env=env)
    history, _ = env.reset(seed=0)
    np.testing.assert_allclose(
        loaded.predict(history, deterministic=True)[0], chunk_model.predict(history, deterministic=True)[0]
    )


@pytest.mark.parametrize(
    ("env", "policy_kwargs", "message"),
    [
        (chunked_line_env, dict(n_action_steps=2), r"pass policy_kwargs=dict\(n_action_steps=4\)"),
        (chunked_line_env, dict(n_obs_steps=1), r"pass policy_kwargs=dict\(n_obs_steps=2\)"),
        (lambda: ActionChunkWrapper(BimodalLine(), 4), {}, r"make_chunked_env\(env, n_obs_steps=2"),
        (chunked_line_env, dict(temporal_ensemble_coeff=0.01), "temporal ensembling"),
    ],
)
def test_an_action_chunk_env_that_does_not_fit_the_policy_is_refused(line_model, env, policy_kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusionPolicy(
            "MlpPolicy", env(), dataset=line_model.dataset, policy_kwargs={**TINY, **policy_kwargs}
        )


def test_dps_own_min_max_observation_normalisation_maps_the_data_to_its_range_and_round_trips(
    minari_store, tmp_path
):
    env = BimodalLine()
    dataset = collect_dataset(env, env.demonstrator, "test/bimodal-line/minmax-v0", n_episodes=20)
    kwargs = dict(TINY, normalizer="limits", sampler={"name": "ddim", "num_steps": 2})
    model = DiffusionPolicy(
        "MlpPolicy", env, dataset=dataset, batch_size=16, lr_warmup_steps=0, seed=0, policy_kwargs=kwargs
    )
    model.learn(5)  # every step's observation (the final one of each episode is not trained on)
    observations = np.concatenate([episode.observations[:-1] for episode in dataset.iterate_episodes()])
    normalised = model.policy.features(torch.as_tensor(observations))
    assert normalised.min().item() == pytest.approx(-1.0) and normalised.max().item() == pytest.approx(1.0)
    model.save(tmp_path / "minmax")
    loaded = DiffusionPolicy.load(tmp_path / "minmax", env=env)
    history = observations[:3]  # three envs
    np.testing.assert_array_equal(
        loaded.predict(history, deterministic=True)[0], model.predict(history, deterministic=True)[0]
    )
    assert isinstance(loaded.policy.obs_normalizer, MinMaxNormalizer)
    with pytest.raises(ValueError, match="normalizer must be 'gaussian', 'limits' or 'cdf', got 'range'"):
        DiffusionPolicy("MlpPolicy", env, policy_kwargs=dict(TINY, normalizer="range"))
