"""D4RL's maze2d evaluation task on gymnasium-robotics' PointMaze v3, and maze geometry helpers.

The task is the one ``shared/datasets/README.md`` defines for the ``maze2d-*.hdf5`` files: the goal
fixed in one cell (``"g"`` in the ``maze_map``), the ball reset in any other free cell (``"r"``),
``continuing_task=True, reset_target=False`` (reaching the goal neither ends the episode nor moves the
goal) and a sparse reward: 1 on every step the ball is within 0.45 of the goal, else 0. Returns are
normalised with :func:`diffgym.scores.normalized_score` under :attr:`MazeTask.score_name`.

Geometry follows gymnasium-robotics' ``Maze`` (by calling its methods): cells are ``(row, col)``
with row 0 at the top; world ``x`` grows with the column and ``y`` shrinks with the row, the maze
centred on the origin. Helpers take an env (its ``unwrapped.maze``), a ``Maze`` or a task name.

Needs gymnasium-robotics (``pip install 'diffgym[maze]'``), imported on first use.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike

from diffgym.tasks.extras import import_extra

__all__ = [
    "MAZE_TASKS",
    "MazeLike",
    "MazeName",
    "MazeSource",
    "MazeTask",
    "cell_to_xy",
    "eval_path_lengths",
    "get_maze",
    "make_maze_eval_env",
    "maze_eval_env_spec",
    "maze_eval_map",
    "maze_extent",
    "maze_walls",
    "shortest_cell_path",
    "xy_to_cell",
]

MazeName: TypeAlias = Literal["umaze", "medium"]

#: A cell of ``maze_map`` that is a wall (gymnasium-robotics' convention; free cells are 0 / "r" / "g" / "c").
WALL = 1
#: gymnasium-robotics' marker of the goal cell.
GOAL_CELL = "g"
#: gymnasium-robotics' marker of a cell the ball may be reset in.
RESET_CELL = "r"
#: The four moves between neighbouring cells, (d_row, d_col).
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


class MazeTask(NamedTuple):
    """One maze2d evaluation task (``shared/datasets/README.md``)."""

    env_id: str  #: the gymnasium-robotics env the task is built from
    layout_name: str  #: the layout in ``gymnasium_robotics.envs.maze.maps``
    goal_cell: tuple[int, int]  #: (row, col) of the fixed goal
    max_episode_steps: int  #: episode length (the env truncates there)
    score_name: str  #: the :mod:`diffgym.scores` reference name (controller = 100, random = 0)


#: The two tasks with data in ``shared/datasets`` (D4RL's goals and horizons).
MAZE_TASKS: dict[str, MazeTask] = {
    "umaze": MazeTask("PointMaze_UMaze-v3", "U_MAZE", (1, 1), 300, "maze2d-umaze-eval"),
    "medium": MazeTask("PointMaze_Medium-v3", "MEDIUM_MAZE", (6, 6), 600, "maze2d-medium-eval"),
}


class MazeLike(Protocol):
    """What the helpers use of gymnasium-robotics' ``Maze`` (``env.unwrapped.maze``)."""

    @property
    def maze_map(self) -> list[list[Any]]: ...
    @property
    def maze_size_scaling(self) -> float: ...
    @property
    def map_length(self) -> int: ...
    @property
    def map_width(self) -> int: ...
    def cell_rowcol_to_xy(self, rowcol_pos: np.ndarray) -> np.ndarray: ...
    def cell_xy_to_rowcol(self, xy_pos: np.ndarray) -> np.ndarray: ...


MazeSource: TypeAlias = "gym.Env | MazeLike | str"


def _robotics() -> Any:
    """Import gymnasium-robotics (registers its envs), with a hint when it is missing."""
    return import_extra("gymnasium_robotics", "diffgym.tasks.mazes")


def _task(name: str) -> MazeTask:
    if name not in MAZE_TASKS:
        raise ValueError(f"unknown maze {name!r}; known: {sorted(MAZE_TASKS)}")
    return MAZE_TASKS[name]


def maze_eval_map(name: MazeName) -> list[list[int | str]]:
    """The task's ``maze_map``: walls kept, ``"g"`` in the goal cell, ``"r"`` in every other free cell."""
    task = _task(name)
    layout = getattr(_robotics().envs.maze.maps, task.layout_name)
    return [
        [
            WALL if cell == WALL else GOAL_CELL if (row, col) == task.goal_cell else RESET_CELL
            for col, cell in enumerate(cells)
        ]
        for row, cells in enumerate(layout)
    ]


def make_maze_eval_env(name: MazeName, render_mode: str | None = None) -> gym.Env:
    """The maze2d evaluation env: goal fixed in the task's goal cell, episodes of ``max_episode_steps``.

    Observations are PointMaze's ``Dict`` (``observation`` (4,) = x, y, vx, vy; ``achieved_goal`` (2,);
    ``desired_goal`` (2,), the goal cell's centre plus U(-0.25, 0.25) noise per axis drawn at reset);
    actions (2,) in [-1, 1]; reward 1 within 0.45 of the goal, else 0; never terminates.
    """
    env_id, kwargs = maze_eval_env_spec(name)
    return gym.make(env_id, **kwargs, render_mode=render_mode)


def maze_eval_env_spec(name: MazeName) -> tuple[str, dict[str, Any]]:
    """The evaluation env of :func:`make_maze_eval_env` as ``(gymnasium id, gym.make kwargs)`` (JSON)."""
    task = _task(name)
    _robotics()
    kwargs = {
        "maze_map": maze_eval_map(name),
        "continuing_task": True,
        "reset_target": False,
        "max_episode_steps": task.max_episode_steps,
    }
    return task.env_id, kwargs


@functools.lru_cache(maxsize=len(MAZE_TASKS))
def _task_maze(name: str) -> MazeLike:
    """The ``Maze`` of a task's env (built once; the env itself is closed)."""
    env = make_maze_eval_env(name)  # type: ignore[arg-type]  # _task checks the name
    try:
        return env.unwrapped.maze  # type: ignore[attr-defined]
    finally:
        env.close()


def get_maze(source: MazeSource) -> MazeLike:
    """The ``Maze`` of a PointMaze / AntMaze env (any wrapping), a ``Maze`` itself, or a task name."""
    if isinstance(source, str):
        _task(source)  # a clear error for an unknown name
        return _task_maze(source)
    if isinstance(source, gym.Env):
        maze = getattr(source.unwrapped, "maze", None)
        if maze is None:
            raise TypeError(f"{source} is not a gymnasium-robotics maze env (no unwrapped.maze)")
        return maze
    return source


def maze_walls(source: MazeSource) -> np.ndarray:
    """``(rows, cols)`` int8 array: 1 where ``maze_map`` has a wall, 0 in free cells; row 0 at the top."""
    maze = get_maze(source)
    return np.array([[cell == WALL for cell in row] for row in maze.maze_map], dtype=np.int8)


def cell_to_xy(source: MazeSource, cells: ArrayLike) -> np.ndarray:
    """World ``(x, y)`` of cell centres: ``cells`` ``(..., 2)`` of (row, col) -> ``(..., 2)`` float64."""
    maze = get_maze(source)
    cells = np.asarray(cells)
    flat = cells.reshape(-1, 2)
    xy = [maze.cell_rowcol_to_xy(cell) for cell in flat]
    return np.asarray(xy, dtype=np.float64).reshape(cells.shape)


def xy_to_cell(source: MazeSource, xy: ArrayLike) -> np.ndarray:
    """The (row, col) containing each world point: ``xy`` ``(..., 2)`` -> ``(..., 2)`` int64."""
    maze = get_maze(source)
    xy = np.asarray(xy, dtype=np.float64)
    cells = [maze.cell_xy_to_rowcol(point) for point in xy.reshape(-1, 2)]
    return np.asarray(cells, dtype=np.int64).reshape(xy.shape)


def maze_extent(source: MazeSource) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` world coordinates of the map's outer edges (matplotlib's extent)."""
    maze = get_maze(source)
    half = maze.maze_size_scaling / 2
    left, top = maze.cell_rowcol_to_xy(np.array([0, 0]))
    right, bottom = maze.cell_rowcol_to_xy(np.array([maze.map_length - 1, maze.map_width - 1]))
    return float(left - half), float(right + half), float(bottom - half), float(top + half)


def shortest_cell_path(
    source: MazeSource, start_cell: Sequence[int], goal_cell: Sequence[int]
) -> list[tuple[int, int]]:
    """The shortest path of free cells from ``start_cell`` to ``goal_cell`` (both included), by BFS.

    Moves go to the four neighbours. The waypoint controller that made the shared maze data follows
    this path.

    Raises:
        ValueError: either cell is a wall, or the goal cannot be reached.
    """
    walls = maze_walls(source)
    start, goal = (int(start_cell[0]), int(start_cell[1])), (int(goal_cell[0]), int(goal_cell[1]))
    for cell in (start, goal):
        if walls[cell]:
            raise ValueError(f"cell {cell} is a wall")
    previous: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    while queue and goal not in previous:
        row, col = queue.popleft()
        for d_row, d_col in _MOVES:
            cell = (row + d_row, col + d_col)
            inside = 0 <= cell[0] < walls.shape[0] and 0 <= cell[1] < walls.shape[1]
            if inside and not walls[cell] and cell not in previous:
                previous[cell] = (row, col)
                queue.append(cell)
    if goal not in previous:
        raise ValueError(f"no path from {start} to {goal}")
    path: list[tuple[int, int]] = []
    node: tuple[int, int] | None = goal
    while node is not None:
        path.append(node)
        node = previous[node]
    return path[::-1]


def eval_path_lengths(
    name: MazeName, observations: np.ndarray, goals: np.ndarray, timeouts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How many steps the data's controller takes from the evaluation task's starts to its goal.

    In a continual maze stream (the shared ``maze2d-*.hdf5`` files) a *leg* runs from one goal
    re-draw (a ``timeouts`` row) to the next; the last rows after the final timeout form a leg too.
    A leg's length depends mostly on the number of cells on the shortest path from its start cell
    to its goal cell, so each evaluation start (every free cell but the goal, drawn uniformly at
    reset) is given the lengths of all legs of its distance. Weighted quantiles of the result,
    e.g. ``np.quantile(lengths, 0.9, weights=weights, method="inverted_cdf")``, give the path length
    a plan of ``H`` steps must hold to reach the goal (it is inpainted at step ``H - 1``).

    Args:
        name: the task (its maze and goal cell).
        observations: (N, >= 2) rows of the stream, ``x, y`` first.
        goals: (N, 2) the goal of each row (``infos/goal``).
        timeouts: (N,) bool, True on a leg's last row.

    Returns:
        ``(lengths, weights)``, both (L,): a leg length per (start, leg) pair whose distance matches,
        and its probability under the uniform start (the weights sum to 1).

    Raises:
        ValueError: an evaluation start at a distance no leg of the data covers.
    """
    task = _task(name)
    ends = np.flatnonzero(timeouts)
    if len(ends) == 0 or ends[-1] != len(timeouts) - 1:
        ends = np.append(ends, len(timeouts) - 1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    start_cells, goal_cells = xy_to_cell(name, observations[starts, :2]), xy_to_cell(name, goals[starts])
    distances = np.array(
        [len(shortest_cell_path(name, a, b)) - 1 for a, b in zip(start_cells, goal_cells, strict=True)]
    )
    leg_lengths = ends - starts + 1
    walls = maze_walls(name)
    free = [(int(row), int(col)) for row, col in np.argwhere(walls == 0) if (row, col) != task.goal_cell]
    lengths, weights = [], []
    for cell in free:
        same = leg_lengths[distances == len(shortest_cell_path(name, cell, task.goal_cell)) - 1]
        if len(same) == 0:
            raise ValueError(f"no leg of the data covers the distance from {cell} to the goal")
        lengths.append(same)
        weights.append(np.full(len(same), 1.0 / (len(free) * len(same))))
    return np.concatenate(lengths), np.concatenate(weights)
