import numpy as np
import pytest

from diffgym.scores import get_reference, normalized_score
from diffgym.tasks.mazes import (
    MAZE_TASKS,
    cell_to_xy,
    get_maze,
    make_maze_eval_env,
    maze_eval_map,
    maze_extent,
    maze_walls,
    shortest_cell_path,
    xy_to_cell,
)

GOAL_RADIUS = 0.45  # PointMaze's reach distance
GOAL_NOISE = 0.25  # PointMaze's U(-0.25, 0.25) goal noise per axis (maze_size_scaling 1)

UMAZE_WALLS = [
    [1, 1, 1, 1, 1],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 0, 1],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 1, 1],
]


@pytest.fixture(scope="module", params=sorted(MAZE_TASKS))
def maze_env(request):
    env = make_maze_eval_env(request.param)
    yield request.param, env
    env.close()


def test_eval_map_marks_the_goal_and_every_other_free_cell():
    umaze = maze_eval_map("umaze")
    np.testing.assert_array_equal(maze_walls("umaze"), UMAZE_WALLS)
    free = [(r, c) for r in range(5) for c in range(5) if not UMAZE_WALLS[r][c]]
    assert [umaze[r][c] for r, c in free] == ["g" if (r, c) == (1, 1) else "r" for r, c in free]
    assert maze_eval_map("medium")[6][6] == "g"
    assert sum(row.count("g") for row in maze_eval_map("medium")) == 1
    with pytest.raises(ValueError, match="unknown maze"):
        maze_eval_map("large")


def test_goal_is_in_the_goal_cell_after_every_reset(maze_env):
    name, env = maze_env
    goal_cell = MAZE_TASKS[name].goal_cell
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(xy_to_cell(env, obs["desired_goal"]), goal_cell)
        assert np.abs(obs["desired_goal"] - cell_to_xy(env, goal_cell)).max() <= GOAL_NOISE
        start = tuple(xy_to_cell(env, obs["achieved_goal"]))
        assert start != goal_cell and not maze_walls(env)[start]


def test_episode_length_and_the_goal_never_moves(maze_env):
    name, env = maze_env
    obs, _ = env.reset(seed=0)
    goal, steps, truncated, terminated = obs["desired_goal"].copy(), 0, False, False
    while not (terminated or truncated):
        obs, _, terminated, truncated, _ = env.step(np.zeros(2))
        steps += 1
        np.testing.assert_array_equal(obs["desired_goal"], goal)
    assert not terminated and steps == MAZE_TASKS[name].max_episode_steps


def waypoint_action(env, obs):
    """P-control (p=10, d=-1 as the data's controller) toward the next cell of the BFS path, then the goal."""
    position, velocity, goal = obs["observation"][:2], obs["observation"][2:], obs["desired_goal"]
    path = shortest_cell_path(env, xy_to_cell(env, position), xy_to_cell(env, goal))
    target = cell_to_xy(env, path[1]) if len(path) > 1 else goal
    return np.clip(10 * (target - position) - velocity, -1, 1)


def test_reward_is_one_exactly_within_reach_of_the_goal(maze_env):
    name, env = maze_env
    obs, _ = env.reset(seed=1)
    rewards, near = [], []
    for _ in range(MAZE_TASKS[name].max_episode_steps):
        obs, reward, _, _, _ = env.step(waypoint_action(env, obs))
        rewards.append(reward)
        near.append(np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]) <= GOAL_RADIUS)
    np.testing.assert_array_equal(rewards, np.array(near, dtype=float))  # sparse: 1 within reach, else 0
    assert rewards[0] == 0.0  # the reset cell is never the goal cell
    assert sum(rewards) > MAZE_TASKS[name].max_episode_steps / 3  # the controller gets there and stays


def test_cells_and_world_coordinates_follow_gymnasium_robotics(maze_env):
    name, env = maze_env
    maze = env.unwrapped.maze
    cells = np.argwhere(maze_walls(env) == 0)
    xy = cell_to_xy(env, cells)
    np.testing.assert_array_equal(xy[3], maze.cell_rowcol_to_xy(cells[3]))
    np.testing.assert_array_equal(xy_to_cell(env, xy + 0.3), cells)  # anywhere inside a cell
    np.testing.assert_array_equal(cell_to_xy(name, cells[None]), xy[None])  # by name, batched
    assert get_maze(name).maze_map == maze.maze_map
    left, right, bottom, top = maze_extent(env)
    assert (right - left, top - bottom) == (maze.map_width, maze.map_length)  # scaling 1: one unit a cell
    assert left < xy[:, 0].min() and top > xy[:, 1].max()


def test_shortest_cell_path_goes_around_the_u():
    path = shortest_cell_path("umaze", (3, 1), (1, 1))
    assert path == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    with pytest.raises(ValueError, match="wall"):
        shortest_cell_path("umaze", (2, 1), (1, 1))


def test_eval_task_references():
    for name, (random, controller) in {"umaze": (8.74, 216.82), "medium": (8.8, 427.44)}.items():
        score_name = MAZE_TASKS[name].score_name
        assert get_reference(score_name)[:2] == (random, controller)
        np.testing.assert_allclose(normalized_score(score_name, np.array([random, controller])), [0, 100])
    assert get_reference("maze2d-umaze-v1").expert == 161.86  # D4RL's own maze2d is untouched
