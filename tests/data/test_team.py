"""Multi-agent data: agent order through import, loading and segments; collection; validation errors."""

import json
import warnings
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test

from diffgym.data import (
    AgentMismatchError,
    DatasetSpaceMismatchError,
    MultiAgentSegmentDataset,
    NonFiniteDataError,
    check_agents_and_spaces,
    collect_multiagent_dataset,
    dataset_agents,
    import_d4rl,
    import_multiagent_d4rl,
    load_dataset,
    read_multiagent_episodes,
    recover_parallel_env,
    stack_agents,
    team_flags,
    team_reward,
    unstack_agents,
)
from diffgym.scores import normalized_score

#: Agent ids whose order is not their sorted order (gymnasium's Dict sorts keys).
AGENTS = ["zeta", "alpha", "mid"]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
SPREAD_KWARGS = {"N": 3, "local_ratio": 0.5, "max_cycles": 25, "continuous_actions": True}


def spread_env(max_cycles=25):
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(**{**SPREAD_KWARGS, "max_cycles": max_cycles})


def write_agent_file(path, lengths=(4, 3), agents=AGENTS, with_next=True, metadata=None, edit=None):
    """A D4RL-layout file with an agent axis: agent k's observations are [k, t, 100 e], actions [k / 10, t / 10],
    rewards k + t; episode e ends with a timeout (e even) or a terminal (e odd) for every agent."""
    obs, next_obs, actions, rewards, terminals, timeouts = [], [], [], [], [], []
    n = len(agents)
    for e, length in enumerate(lengths):
        t = np.arange(length + 1, dtype=np.float32)
        rows = np.stack([np.stack([np.full_like(t, k), t, np.full_like(t, 100 * e)], 1) for k in range(n)], 1)
        obs.append(rows[:-1])
        next_obs.append(rows[1:])
        actions.append(np.stack([np.stack([np.full(length, k / 10), t[:-1] / 10], 1) for k in range(n)], 1))
        rewards.append(np.arange(n)[None, :] + t[:-1, None])
        end = np.zeros((length, n), bool)
        end[-1] = True
        terminals.append(end & (e % 2 == 1))
        timeouts.append(end & (e % 2 == 0))
    arrays = {
        "observations": np.concatenate(obs),
        "next_observations": np.concatenate(next_obs),
        "actions": np.concatenate(actions).astype(np.float32),
        "rewards": np.concatenate(rewards).astype(np.float32),
        "terminals": np.concatenate(terminals),
        "timeouts": np.concatenate(timeouts),
    }
    if not with_next:
        del arrays["next_observations"]
    if edit is not None:
        edit(arrays)
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)
        file.attrs["metadata"] = json.dumps({"agents": list(agents), **(metadata or {})})
    return arrays


# --------------------------------------------------------------------------- import and loading


@pytest.mark.parametrize("load", [import_multiagent_d4rl, import_d4rl, load_dataset])
def test_agent_order_is_kept_through_import_and_loading(tmp_path, load):
    path = tmp_path / "team.hdf5"
    arrays = write_agent_file(path)
    dataset = load(path)
    assert list(dataset.observation_space.spaces) == sorted(AGENTS) != AGENTS  # the Dict sorted them
    assert dataset_agents(dataset) == tuple(AGENTS)
    episodes = read_multiagent_episodes(dataset)
    assert episodes.agents == tuple(AGENTS)
    assert episodes.observations.shape == (7 + 2, 3, 3) and episodes.actions.shape == (7, 3, 2)
    for k in range(3):
        np.testing.assert_array_equal(episodes.observations[:, k, 0], k)
        np.testing.assert_array_equal(episodes.actions[:, k, 0], np.float32(k / 10))
        np.testing.assert_array_equal(episodes.agent_rewards[:, k], arrays["rewards"][:, k])
    np.testing.assert_array_equal(episodes.observations[:5, 0, 1], [0, 1, 2, 3, 4])  # T + 1 observations
    np.testing.assert_array_equal(episodes.lengths, [4, 3])
    np.testing.assert_allclose(episodes.rewards, arrays["rewards"].mean(axis=1))  # the team reward
    np.testing.assert_allclose(episodes.team_returns(), [1 * 4 + 6, 1 * 3 + 3])
    np.testing.assert_allclose(episodes.agent_returns()[1], [0 + 3, 3 + 3, 6 + 3])
    np.testing.assert_array_equal(episodes.truncations[:, 0], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(episodes.terminations.all(axis=1), [0, 0, 0, 0, 0, 0, 1])
    tr = minari.load_dataset(dataset.id)  # single-agent Minari code sees the team
    first = next(tr.iterate_episodes())
    assert first.truncations[-1] and not first.terminations.any()
    np.testing.assert_array_equal(first.observations["mid"][:, 0], 2)


def test_import_without_next_observations_drops_each_last_transition(tmp_path):
    write_agent_file(tmp_path / "team.hdf5", with_next=False)
    episodes = read_multiagent_episodes(import_multiagent_d4rl(tmp_path / "team.hdf5"))
    np.testing.assert_array_equal(episodes.lengths, [3, 2])
    np.testing.assert_array_equal(episodes.observations[:4, 1, 1], [0, 1, 2, 3])
    # the new last step of the terminated episode is a cut: every agent truncated, none terminated
    np.testing.assert_array_equal(episodes.truncations[-1], [True, True, True])
    assert not episodes.terminations.any()


def test_import_checks_spaces_and_agents_against_the_env(tmp_path):
    meta = {"env_id": "mpe2 simple_spread_v3 parallel_env", "env_kwargs": SPREAD_KWARGS}
    agents = ["agent_0", "agent_1", "agent_2"]

    def mpe_shaped(arrays):
        arrays["observations"] = np.zeros((7, 3, 18), np.float32)
        arrays["next_observations"] = np.zeros((7, 3, 18), np.float32)
        arrays["actions"] = np.full((7, 3, 5), 0.5, np.float32)

    path = tmp_path / "spread.hdf5"
    write_agent_file(path, agents=agents, metadata=meta, edit=mpe_shaped)
    dataset = import_multiagent_d4rl(path)
    check_agents_and_spaces(dataset, spread_env())
    assert dataset.observation_space["agent_1"].dtype == np.float32
    assert recover_parallel_env(dataset).possible_agents == agents

    def one_obs_short(arrays):
        mpe_shaped(arrays)
        arrays["observations"] = arrays["observations"][..., :17]
        arrays["next_observations"] = arrays["next_observations"][..., :17]

    write_agent_file(path, agents=agents, metadata=meta, edit=one_obs_short)
    with pytest.raises(DatasetSpaceMismatchError, match=r"observation of agent 'agent_0'.*\(17,\)"):
        import_multiagent_d4rl(path)
    write_agent_file(path, agents=["agent_0", "agent_1", "adversary_0"], metadata=meta, edit=mpe_shaped)
    with pytest.raises(AgentMismatchError, match="env has 3"):
        import_multiagent_d4rl(path)


def test_import_rejects_bad_files(tmp_path):
    path = tmp_path / "bad.hdf5"
    write_agent_file(path, metadata={"agents": ["a", "b"]})  # three columns, two names
    with pytest.raises(AgentMismatchError, match="3 agents but the agent ids are"):
        import_multiagent_d4rl(path)

    def flat_actions(arrays):
        arrays["actions"] = arrays["actions"][:, :, 0]

    write_agent_file(path, edit=flat_actions)
    with pytest.raises(ValueError, match=r"multi-agent importer.*'actions': \(7, 3\)"):
        import_d4rl(path)
    with h5py.File(path, "w") as file:
        file.create_dataset("rewards", data=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="lacks"):
        import_multiagent_d4rl(path)


@pytest.mark.skipif(not (SHARED / "mpe-spread-expert.hdf5").exists(), reason="no shared MPE files")
def test_shared_expert_file_team_return_matches_the_readme():
    path = SHARED / "mpe-spread-expert.hdf5"
    dataset = load_dataset(path)
    episodes = read_multiagent_episodes(dataset, env=spread_env())
    assert episodes.agents == ("agent_0", "agent_1", "agent_2")
    assert episodes.observations.shape == (25_000 + 1_000, 3, 18) and episodes.actions.shape == (25_000, 3, 5)
    np.testing.assert_array_equal(episodes.lengths, 25)
    assert np.all(episodes.truncations[24::25]) and not episodes.terminations.any()
    returns = episodes.team_returns()
    assert abs(returns.mean() - -5.88) < 0.05  # README: expert -5.88
    with h5py.File(path, "r") as file:  # the file's own per-agent rewards, first episode
        np.testing.assert_array_equal(episodes.agent_rewards[:25], file["rewards"][:25])
    assert dataset.storage.metadata["ref_min_score"] == -24.69
    assert normalized_score(dataset, returns.mean()) == pytest.approx(98.85, abs=0.3)
    assert load_dataset(path).id == dataset.id  # imported once, then loaded


# --------------------------------------------------------------------------- validation


def store(dataset_id, buffers, observation_space, action_space, agents=AGENTS):
    """A dataset in the format from hand-made buffers (bypassing collection and import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id, buffers, observation_space=observation_space, action_space=action_space
        )
    dataset.storage.update_metadata({"diffgym_multiagent": 1, "agents": list(agents), "team_reward": "mean"})
    return dataset


def box_buffers(edit=None):
    """Two episodes (3 and 2 steps) of AGENTS with obs (2,) and action (1,); agent k's reward is k."""
    buffers = []
    for e, length in enumerate((3, 2)):
        agent_rewards = np.tile(np.arange(3.0), (length, 1))
        arrays = {
            "observations": {a: np.full((length + 1, 2), k, np.float32) for k, a in enumerate(AGENTS)},
            "actions": {a: np.zeros((length, 1), np.float32) for a in AGENTS},
            "rewards": agent_rewards.mean(axis=1),
            "terminations": np.zeros(length, bool),
            "truncations": np.arange(length) == length - 1,
            "infos": {
                "agent_rewards": agent_rewards,
                "agent_terminations": np.zeros((length, 3), bool),
                "agent_truncations": np.tile((np.arange(length) == length - 1)[:, None], (1, 3)),
            },
        }
        if edit is not None:
            edit(e, arrays)
        buffers.append(EpisodeBuffer(id=e, **arrays))
    return buffers


BOX_OBS = spaces.Dict({a: spaces.Box(-10, 10, (2,), np.float32) for a in AGENTS})
BOX_ACT = spaces.Dict({a: spaces.Box(-1, 1, (1,), np.float32) for a in AGENTS})


def test_nan_errors_name_field_agent_episode_and_step():
    def nan_obs(e, arrays):
        if e == 1:
            arrays["observations"]["alpha"][1, 0] = np.nan

    store("test/team/nan-obs-v0", box_buffers(nan_obs), BOX_OBS, BOX_ACT)
    with pytest.raises(NonFiniteDataError, match=r"observations\['alpha'\] of episode 1 at step 1"):
        read_multiagent_episodes("test/team/nan-obs-v0")

    def nan_reward(e, arrays):
        if e == 0:
            arrays["infos"]["agent_rewards"][2, 2] = np.nan

    store("test/team/nan-reward-v0", box_buffers(nan_reward), BOX_OBS, BOX_ACT)
    with pytest.raises(NonFiniteDataError, match=r"agent_rewards\['mid'\] of episode 0 at step 2"):
        read_multiagent_episodes("test/team/nan-reward-v0")


def test_inconsistent_data_is_refused():
    def wrong_team_reward(e, arrays):
        arrays["rewards"] = arrays["rewards"] * 3  # the sum, not the mean

    store("test/team/sum-v0", box_buffers(wrong_team_reward), BOX_OBS, BOX_ACT)
    with pytest.raises(ValueError, match=r"episode 0 at step 0 is 3\.0, not the mean"):
        read_multiagent_episodes("test/team/sum-v0")

    def two_reward_columns(e, arrays):
        arrays["infos"]["agent_rewards"] = arrays["infos"]["agent_rewards"][:, :2]

    store("test/team/columns-v0", box_buffers(two_reward_columns), BOX_OBS, BOX_ACT)
    with pytest.raises(
        AgentMismatchError, match=r"agent_rewards has \(2,\) columns per step but there are 3"
    ):
        read_multiagent_episodes("test/team/columns-v0")
    store("test/team/names-v0", box_buffers(), BOX_OBS, BOX_ACT, agents=["zeta", "alpha"])
    with pytest.raises(AgentMismatchError, match="metadata lists 2 agents"):
        read_multiagent_episodes("test/team/names-v0")


def test_not_a_multiagent_dataset(make_dataset):
    make_dataset([3])
    with pytest.raises(ValueError, match="not in diffgym's multi-agent format"):
        read_multiagent_episodes("test/tiny/data-v0")


def test_env_mismatches_name_the_agent():
    store("test/team/ok-v0", box_buffers(), BOX_OBS, BOX_ACT)
    with pytest.raises(
        AgentMismatchError, match=r"has 3 agents \['zeta', 'alpha', 'mid'\] but the env has 3"
    ):
        read_multiagent_episodes("test/team/ok-v0", env=spread_env())
    with pytest.raises(AgentMismatchError, match="but the env has 4"):
        check_agents_and_spaces("test/team/ok-v0", TinyTeam(extra_agent=True))


# --------------------------------------------------------------------------- segments


def test_segments_have_an_agent_axis_and_padding(tmp_path):
    write_agent_file(tmp_path / "team.hdf5")
    segments = MultiAgentSegmentDataset(tmp_path / "team.hdf5", horizon=3, discount=0.5)
    assert len(segments) == 7 and segments.agents == tuple(AGENTS)
    batch = segments[np.array([2, 3, 4])]
    assert batch.observations.shape == (3, 3, 3, 3) and batch.actions.shape == (3, 3, 3, 2)
    assert batch.agent_rewards.shape == (3, 3, 3) and batch.agent_returns.shape == (3, 3)
    np.testing.assert_array_equal(batch.observations[..., 0], np.broadcast_to([0, 1, 2], (3, 3, 3)))
    np.testing.assert_array_equal(batch.observations[1, :, 0, 1], [3, 4, 4])  # the final obs repeated
    np.testing.assert_array_equal(batch.mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(batch.actions[1, 1:], 0)
    np.testing.assert_array_equal(batch.agent_rewards[0], [[2, 3, 4], [3, 4, 5], [0, 0, 0]])
    np.testing.assert_allclose(batch.rewards[0], [3, 4, 0])
    np.testing.assert_allclose(batch.returns[:2], [3 + 0.5 * 4, 4])
    np.testing.assert_allclose(batch.agent_returns[0], [2 + 0.5 * 3, 3 + 0.5 * 4, 4 + 0.5 * 5])
    assert batch.observations[2, 0, 0, 2] == 100  # the second episode
    assert segments.observations.shape == (7, 3, 3) and segments.actions.shape == (7, 3, 2)
    before = MultiAgentSegmentDataset(tmp_path / "team.hdf5", horizon=2, use_padding=False, pad_before=1)
    first = before[np.array([0])]
    np.testing.assert_array_equal(first.mask[0], [False, True])
    np.testing.assert_array_equal(first.observations[0, :, 2, 1], [0, 0])


def test_stack_and_unstack_agents_keep_order_and_sizes():
    values = {"b": np.ones((4, 2)), "a": np.zeros((4, 3))}
    stacked = stack_agents(values, ["b", "a"])
    assert stacked.shape == (4, 2, 3)
    np.testing.assert_array_equal(stacked[:, 0], np.tile([1, 1, 0], (4, 1)))
    back = unstack_agents(stacked, ["b", "a"], dims=[2, 3])
    assert list(back) == ["b", "a"] and back["b"].shape == (4, 2)
    with pytest.raises(AgentMismatchError):
        unstack_agents(stacked, ["b"])


def test_team_reward_and_flags():
    np.testing.assert_allclose(team_reward(np.array([[1.0, 2.0, 6.0], [0, 0, 3]])), [3.0, 1.0])
    terminated, truncated = team_flags(
        np.array([[1, 1], [1, 0], [0, 0], [1, 0]], bool), np.array([[0, 0], [0, 1], [0, 1], [0, 0]], bool)
    )
    np.testing.assert_array_equal(terminated, [True, False, False, False])
    np.testing.assert_array_equal(truncated, [False, True, False, False])


# --------------------------------------------------------------------------- collection


class TinyTeam(ParallelEnv):
    """Three agents listed out of sorted order, with different spaces; ``scout`` terminates after 2 steps,
    the others are truncated after 4. Agent k's observation is [k, t, last action] (+ [k] for ``carrier``)
    and its reward 10 k + t + its action."""

    def __init__(self, extra_agent=False, carrier_size=4):
        self.metadata = {"name": "tiny_team_v0", "render_modes": []}
        self.possible_agents = ["scout", "carrier", "anchor"] + (["spare"] if extra_agent else [])
        self.agents = []
        self.t = 0
        self.observation_spaces = {
            a: spaces.Box(-100, 100, (carrier_size if a == "carrier" else 3,), np.float32)
            for a in self.possible_agents
        }
        self.action_spaces = {
            a: spaces.Discrete(3) if a == "carrier" else spaces.Box(-1, 1, (1,), np.float32)
            for a in self.possible_agents
        }

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _obs(self, agent, action):
        k = self.possible_agents.index(agent)
        values = [k, self.t, float(np.asarray(action).ravel()[0])] + ([k] if agent == "carrier" else [])
        return np.array(values, np.float32)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: self._obs(a, 0) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        acting = list(self.agents)
        obs = {a: self._obs(a, actions[a]) for a in acting}
        rewards = {
            a: 10.0 * self.possible_agents.index(a) + self.t + float(np.asarray(actions[a]).ravel()[0])
            for a in acting
        }
        terminations = {a: a == "scout" and self.t >= 2 for a in acting}
        truncations = {a: self.t >= 4 and not terminations[a] for a in acting}
        self.agents = [a for a in acting if not (terminations[a] or truncations[a])]
        return obs, rewards, terminations, truncations, {a: {"t": self.t} for a in acting}


def test_tiny_team_is_a_valid_parallel_env():
    parallel_api_test(TinyTeam(), num_cycles=10)


def test_collect_per_agent_policies_with_an_agent_finishing_early():
    policies = {
        "scout": lambda obs: np.array([0.5], np.float32),
        "carrier": lambda obs: 2,
        "anchor": lambda obs: np.array([-0.25], np.float32),
    }
    dataset = collect_multiagent_dataset(TinyTeam(), policies, "test/tiny/team-v0", n_episodes=2, seed=5)
    assert [m["seed"] for m in dataset.storage.get_episode_metadata(range(2))] == [5, 6]
    episodes = read_multiagent_episodes(dataset, env=TinyTeam())
    assert episodes.agents == ("scout", "carrier", "anchor")
    assert episodes.observation_dims == (3, 4, 3) and episodes.action_dims == (1, 3, 1)
    assert episodes.observations.shape == (10, 3, 4) and episodes.actions.shape == (8, 3, 3)
    np.testing.assert_array_equal(episodes.lengths, [4, 4])
    obs = episodes.observations[:5]  # episode 0: observations 0..4
    np.testing.assert_array_equal(obs[:, :, 0], np.tile([0, 1, 2], (5, 1)))  # agent identity
    np.testing.assert_array_equal(obs[:, 0, 1], [0, 1, 2, 2, 2])  # the scout keeps its final observation
    np.testing.assert_array_equal(obs[:, 2, 1], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(obs[:, 0, 3], 0)  # padding of the 3-wide agents
    np.testing.assert_array_equal(episodes.actions[:4, 1], np.tile([0, 0, 1], (4, 1)))  # Discrete 2, one-hot
    np.testing.assert_array_equal(episodes.actions[:4, 0, 0], [0.5, 0.5, 0, 0])  # null once finished
    np.testing.assert_allclose(
        episodes.agent_rewards[:4], [[1.5, 13, 20.75], [2.5, 14, 21.75], [0, 15, 22.75], [0, 16, 23.75]]
    )
    np.testing.assert_allclose(episodes.rewards, episodes.agent_rewards.mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(episodes.terminations[:4, 0], [0, 1, 1, 1])  # sticky
    np.testing.assert_array_equal(episodes.truncations[3], [False, True, True])
    first = next(dataset.iterate_episodes())
    assert first.truncations[-1] and not first.terminations.any()  # not every agent terminated
    with pytest.raises(
        DatasetSpaceMismatchError, match=r"observation\['carrier'\] shape \(4,\) in the dataset but \(5,\)"
    ):
        read_multiagent_episodes(dataset, env=TinyTeam(carrier_size=5))


def test_collect_random_from_simple_spread_replays_exactly():
    env = spread_env(max_cycles=5)
    dataset = collect_multiagent_dataset(
        env, None, "test/spread/random-v0", n_episodes=2, seed=3, env_id="mpe2.simple_spread_v3",
        env_kwargs={**SPREAD_KWARGS, "max_cycles": 5},
    )  # fmt: skip
    again = collect_multiagent_dataset(spread_env(max_cycles=5), "random", "test/spread/again-v0", 2, seed=3)
    episodes = read_multiagent_episodes(dataset, env=env)
    np.testing.assert_array_equal(episodes.actions, read_multiagent_episodes(again).actions)
    assert episodes.observations.shape == (12, 3, 18) and episodes.actions.shape == (10, 3, 5)
    assert np.all(episodes.truncations[[4, 9]]) and not episodes.truncations[:4].any()
    replay = recover_parallel_env(dataset)  # the same env from the metadata
    obs, _ = replay.reset(seed=3)
    for t in range(5):
        np.testing.assert_array_equal(episodes.observations[t], [obs[a] for a in episodes.agents])
        actions = dict(zip(episodes.agents, episodes.actions[t], strict=True))
        obs, rewards, *_ = replay.step(actions)
        np.testing.assert_allclose(
            episodes.agent_rewards[t], [rewards[a] for a in episodes.agents], rtol=1e-6
        )
    np.testing.assert_array_equal(episodes.observations[5], [obs[a] for a in episodes.agents])


def test_collect_refuses_missing_policies():
    with pytest.raises(AgentMismatchError, match=r"no policy for agents \['anchor'\]"):
        collect_multiagent_dataset(
            TinyTeam(), {"scout": lambda o: 0, "carrier": lambda o: 0}, "test/tiny/x-v0", n_episodes=1
        )
