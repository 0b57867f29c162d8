"""JointAgentEnv: the joint view of a PettingZoo ParallelEnv matches the env step for step, in agent order."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from diffgym.data import check_agents_and_spaces, collect_multiagent_dataset, read_multiagent_episodes
from diffgym.wrappers import JointAgentEnv

SPREAD_KWARGS = {"N": 3, "local_ratio": 0.5, "max_cycles": 4, "continuous_actions": True}


def spread():
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(**SPREAD_KWARGS)


def test_spaces_follow_the_agents():
    env = JointAgentEnv(spread())
    assert env.agents == ("agent_0", "agent_1", "agent_2")
    assert set(env.observation_space.spaces) == set(env.agents)
    assert env.observation_space["agent_1"].shape == (18,) and env.action_space["agent_2"].shape == (5,)


def test_gymnasium_env_checker():
    check_env(JointAgentEnv(spread()), skip_render_check=True)


def test_steps_match_the_parallel_env_agent_by_agent():
    joint, raw = JointAgentEnv(spread()), spread()
    obs, info = joint.reset(seed=7)
    raw_obs, _ = raw.reset(seed=7)
    assert list(obs) == list(joint.agents)
    np.testing.assert_array_equal(info["agent_rewards"], 0)
    rng = np.random.default_rng(0)
    for t in range(4):
        actions = {agent: rng.uniform(0, 1, 5).astype(np.float32) for agent in joint.agents}
        obs, reward, terminated, truncated, info = joint.step(actions)
        raw_obs, raw_rewards, _, raw_truncations, _ = raw.step(actions)
        for k, agent in enumerate(joint.agents):
            np.testing.assert_array_equal(obs[agent], raw_obs[agent])
            assert info["agent_rewards"][k] == raw_rewards[agent]
            assert info["agent_truncations"][k] == raw_truncations[agent]
        assert reward == pytest.approx(np.mean([raw_rewards[a] for a in joint.agents]), rel=1e-12)
        assert (terminated, truncated) == (False, t == 3)  # max_cycles = 4 truncates every agent
    with pytest.raises(RuntimeError, match="reset"):
        joint.step(actions)
    joint.reset(seed=7)
    with pytest.raises(KeyError, match=r"no action for acting agents \['agent_2'\]"):
        joint.step({agent: actions[agent] for agent in joint.agents[:2]})


def test_collected_data_fits_the_wrapper_and_replays_through_it(minari_store):
    dataset = collect_multiagent_dataset(spread(), None, "test/spread/joint-v0", n_episodes=1, seed=2)
    env = JointAgentEnv(spread())
    check_agents_and_spaces(dataset, env)
    episodes = read_multiagent_episodes(dataset, env=env)
    obs, _ = env.reset(seed=2)
    for t in range(4):
        np.testing.assert_array_equal(episodes.observations[t], [obs[a] for a in episodes.agents])
        obs, reward, *_ = env.step(dict(zip(episodes.agents, episodes.actions[t], strict=True)))
        assert episodes.rewards[t] == pytest.approx(reward, rel=1e-6)
