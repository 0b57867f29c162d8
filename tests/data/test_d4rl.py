"""Importing D4RL-layout files: episodes, observations, infos, env spaces, goal envs, references, caching."""

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

from diffgym.data import d4rl, import_d4rl, imported_dataset_id, load_dataset, load_transitions, read_episodes


def write_d4rl(path, with_next=True, metadata=None, agents=False):
    """23 rows: a terminal at row 6, a timeout at row 14, then an unterminated tail of 8 rows."""
    rng = np.random.default_rng(0)
    n, ends = 23, [6, 14, 22]
    observations, next_observations, start = [], [], 0
    for end in ends:
        chunk = rng.normal(size=(end - start + 2, 3)).astype(np.float32)
        observations.append(chunk[:-1])
        next_observations.append(chunk[1:])
        start = end + 1
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[6], timeouts[14] = True, True
    arrays = {
        "observations": np.concatenate(observations),
        "next_observations": np.concatenate(next_observations),
        "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
        "infos/goal": rng.normal(size=(n, 2)).astype(np.float32),
        "infos/success": rng.uniform(size=n) > 0.5,
    }
    if not with_next:
        del arrays["next_observations"]
    if agents:
        arrays["rewards"] = np.zeros((n, 3), np.float32)
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)
        if metadata is not None:
            file.attrs["metadata"] = json.dumps(metadata)
    return arrays


def test_d4rl_import_round_trip(tmp_path):
    arrays = write_d4rl(tmp_path / "tiny.hdf5")
    dataset = import_d4rl(tmp_path / "tiny.hdf5", dataset_id="test/tiny/imported-v0")
    assert dataset.total_episodes == 3 and dataset.total_steps == 23
    tr = load_transitions("test/tiny/imported-v0")
    for key in ("observations", "next_observations", "actions", "rewards", "terminals"):
        np.testing.assert_array_equal(getattr(tr, key), arrays[key], err_msg=key)
    expected_timeouts = arrays["timeouts"].copy()
    expected_timeouts[-1] = True  # the unterminated tail is its own truncated episode
    np.testing.assert_array_equal(tr.timeouts, expected_timeouts)
    episodes = read_episodes(dataset, info_keys=("goal", "success"))
    np.testing.assert_array_equal(episodes.infos["goal"], arrays["infos/goal"])
    np.testing.assert_array_equal(episodes.infos["success"], arrays["infos/success"])
    assert dataset.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)


def test_d4rl_import_without_next_observations_drops_last_transitions(tmp_path):
    arrays = write_d4rl(tmp_path / "tiny.hdf5", with_next=False)
    tr = load_transitions(import_d4rl(tmp_path / "tiny.hdf5"))
    kept = np.ones(23, bool)
    kept[[6, 14, 22]] = False
    np.testing.assert_array_equal(tr.observations, arrays["observations"][kept])
    np.testing.assert_array_equal(tr.next_observations[:5], arrays["observations"][1:6])
    np.testing.assert_array_equal(np.flatnonzero(tr.timeouts), [5, 12, 19])
    assert not tr.terminals.any()


def test_d4rl_import_env_and_references(tmp_path):
    meta = {"env_id": "Pendulum-v1", "d4rl_ref": {"ref_min_score": -1000.0, "ref_max_score": 0.0}}
    path = tmp_path / "pendulum-like.hdf5"
    arrays = write_d4rl(path, metadata=meta)
    with h5py.File(path, "a") as file:  # Pendulum has one action dimension
        del file["actions"]
        file.create_dataset("actions", data=arrays["actions"][:, :1])
    dataset = load_dataset(path)
    assert dataset.id == imported_dataset_id(path)
    assert dataset.env_spec.id == "Pendulum-v1"
    assert dataset.observation_space.dtype == np.float32
    np.testing.assert_allclose(dataset.observation_space.high, [1, 1, 8])
    metadata = dataset.storage.metadata
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (-1000.0, 0.0)
    assert "D4RL" in metadata["ref_score_source"]
    assert load_dataset(path).id == dataset.id  # cached: loaded, not imported again


def test_d4rl_import_unknown_env_falls_back_to_array_spaces(tmp_path):
    path = tmp_path / "odd.hdf5"
    write_d4rl(path, metadata={"env_id": "no-such-env-v3"})
    with pytest.warns(UserWarning, match="cannot make env"):
        dataset = import_d4rl(path)
    assert dataset.env_spec is None
    assert dataset.storage.metadata["source_env_id"] == "no-such-env-v3"
    assert dataset.observation_space == gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def test_d4rl_import_names_the_extra_of_a_missing_env_package(tmp_path, monkeypatch):
    monkeypatch.setitem(d4rl._ENV_PACKAGES, "no_such_suite", ("No-Such-Suite", "nosuch"))
    path = tmp_path / "odd.hdf5"
    write_d4rl(path, metadata={"env_id": "NoSuchSuite/Task-v0"})
    with pytest.warns(
        UserWarning, match=r"No-Such-Suite is not installed, its envs need pip install 'diffgym\[nosuch\]'"
    ):
        dataset = import_d4rl(path)
    assert dataset.env_spec is None


def test_d4rl_import_rejects_multi_agent_files(tmp_path):
    write_d4rl(tmp_path / "mpe.hdf5", agents=True)
    with pytest.raises(ValueError, match="multi-agent importer"):
        import_d4rl(tmp_path / "mpe.hdf5")


MAZE_ROWS = 12  # rows of the synthetic maze file; episodes end at rows 4 and 11 (the tail)


def write_maze(path, with_next=True, with_goal=True, env_id="PointMaze_UMaze-v3"):
    """A D4RL-layout maze file as the shared ones: observations (x, y, vx, vy), goal in infos/goal.

    The goal of the first episode (rows 0-4, ended by a timeout where the goal is reached) differs from
    the second's, so a final observation that took the wrong row's goal would show.
    """
    rng = np.random.default_rng(1)
    states = rng.uniform(-1, 1, size=(MAZE_ROWS + 1, 4)).astype(np.float32)
    timeouts = np.zeros(MAZE_ROWS, bool)
    timeouts[4] = True
    goal = np.where(np.arange(MAZE_ROWS)[:, None] <= 4, [0.5, -1.0], [-1.5, 1.0]).astype(np.float32)
    arrays = {
        "observations": states[:-1],
        "next_observations": states[1:],
        "actions": rng.uniform(-1, 1, size=(MAZE_ROWS, 2)).astype(np.float32),
        "rewards": timeouts.astype(np.float32),
        "terminals": np.zeros(MAZE_ROWS, bool),
        "timeouts": timeouts,
        "infos/goal": goal,
    }
    if not with_next:
        del arrays["next_observations"]
    if not with_goal:
        del arrays["infos/goal"]
    meta = {"env_id": env_id, "env_kwargs": {"continuing_task": True, "reset_target": True}}
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)
        file.attrs["metadata"] = json.dumps(meta)
    return arrays


@pytest.mark.parametrize("with_next", [True, False])
def test_goal_env_file_imports_as_the_envs_dict(tmp_path, with_next):
    from diffgym.data import check_spaces

    arrays = write_maze(tmp_path / "maze.hdf5", with_next=with_next)
    dataset = load_dataset(tmp_path / "maze.hdf5")
    env = gym.make("PointMaze_UMaze-v3")
    assert isinstance(dataset.observation_space, gym.spaces.Dict)
    assert list(dataset.observation_space.spaces) == list(env.observation_space.spaces)
    assert {space.dtype for space in dataset.observation_space.spaces.values()} == {np.dtype(np.float32)}
    check_spaces(dataset.observation_space, env.observation_space, "observation")
    check_spaces(dataset.action_space, env.action_space, "action")
    assert dataset.env_spec.id == "PointMaze_UMaze-v3"
    assert dataset.env_spec.kwargs["reset_target"] is True  # the file's env kwargs are kept

    tr = load_transitions(dataset)
    rows = np.arange(MAZE_ROWS) if with_next else np.delete(np.arange(MAZE_ROWS), [4, 11])
    obs, goal = arrays["observations"], arrays["infos/goal"]
    np.testing.assert_array_equal(tr.observations["observation"], obs[rows])
    np.testing.assert_array_equal(tr.observations["achieved_goal"], obs[rows, :2])
    np.testing.assert_array_equal(tr.observations["desired_goal"], goal[rows])
    next_obs = arrays["next_observations"] if with_next else np.concatenate([obs[1:], obs[:1]])
    np.testing.assert_array_equal(tr.next_observations["observation"], next_obs[rows])
    np.testing.assert_array_equal(tr.next_observations["achieved_goal"], next_obs[rows, :2])
    # the final observation of the first episode keeps that episode's goal, not the next one's
    np.testing.assert_array_equal(tr.next_observations["desired_goal"], goal[rows])
    assert dataset.storage.metadata["source_env_id"] == "PointMaze_UMaze-v3"


def test_goal_env_file_without_goal_falls_back_to_a_box(tmp_path):
    write_maze(tmp_path / "maze.hdf5", with_goal=False)
    with pytest.warns(UserWarning, match="do not fit.*infos/goal"):
        dataset = import_d4rl(tmp_path / "maze.hdf5")
    assert dataset.observation_space == gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    assert dataset.env_spec is None


class GoalLast(gym.Env):
    """A goal env whose achieved goal is not at the observation's front (as FetchPush's object position)."""

    observation_space = gym.spaces.Dict(
        {
            key: gym.spaces.Box(-np.inf, np.inf, (n,))
            for key, n in [("observation", 4), ("achieved_goal", 2), ("desired_goal", 2)]
        }
    )
    action_space = gym.spaces.Box(-1, 1, (2,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        state = self.np_random.normal(size=4).astype(np.float32)
        return {"observation": state, "achieved_goal": state[2:], "desired_goal": np.zeros(2, np.float32)}, {}


def test_goal_env_whose_achieved_goal_is_not_the_prefix_falls_back(tmp_path, monkeypatch):
    spec = gym.envs.registration.EnvSpec("test/GoalLast-v0", entry_point=GoalLast)
    monkeypatch.setitem(gym.registry, spec.id, spec)  # registered for this test only
    write_maze(tmp_path / "maze.hdf5", env_id=spec.id)
    with pytest.warns(UserWarning, match=r"achieved_goal is not observation\[:2\]"):
        dataset = import_d4rl(tmp_path / "maze.hdf5", env_kwargs={})
    assert isinstance(dataset.observation_space, gym.spaces.Box)


def test_stale_cache_of_an_older_import_format_is_not_reused(tmp_path, monkeypatch):
    path = tmp_path / "maze.hdf5"
    write_maze(path)
    with monkeypatch.context() as patch:  # an import made by the previous format: a Box, under its id
        patch.setattr(d4rl, "_IMPORT_FORMAT", d4rl._IMPORT_FORMAT - 1)
        old_id = imported_dataset_id(path)
        with pytest.warns(UserWarning, match="cannot make env"):
            import_d4rl(path, dataset_id=old_id, env_id="no-such-env-v3")
    dataset = load_dataset(path)
    assert dataset.id != old_id
    assert isinstance(dataset.observation_space, gym.spaces.Dict)
