"""Pictures of plans: trajectories drawn over a maze, and animations of a plan being denoised.

Figures are made with matplotlib's object API on an Agg canvas (never ``pyplot``), so nothing needs a
display and the global backend is left alone; pass ``ax=`` to draw into a figure of your own. Time runs
along each trajectory from dark to light (``viridis``: step 0 purple, the last step yellow).

Arrays are numpy (call ``.cpu().numpy()`` on tensors); ``N`` trajectories of ``H`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure, SubFigure
from numpy.typing import ArrayLike

from diffgym.tasks.mazes import MazeSource, maze_extent, maze_walls

__all__ = ["animate_denoising", "plot_maze_plans", "plot_trajectories", "write_animation"]

#: Size of the figures made here, inches; at :data:`DPI` a 480 x 480 image, a multiple of the 16-pixel
#: blocks video encoders want.
FIGSIZE = (5.0, 5.0)
#: Resolution of saved images and animation frames, dots per inch.
DPI = 96
#: Colours of free cells and walls.
MAZE_COLOURS = ListedColormap(["#f4f1ea", "#6b5b4b"])
#: Colour map of time along a trajectory.
TIME_CMAP = "viridis"
#: Width of trajectory lines, points.
LINE_WIDTH = 1.5
#: Area of the dot at each trajectory step, points squared.
DOT_SIZE = 6.0
#: Area of the start and goal markers, points squared.
MARKER_SIZE = 160.0


# --------------------------------------------------------------------------- shared pieces


def _as_trajectories(array: ArrayLike, name: str) -> np.ndarray:
    """``(N, H, D)`` float array from ``(N, H, D)`` or one ``(H, D)`` trajectory (``H >= 2``)."""
    trajectories = np.asarray(array, dtype=np.float64)
    if trajectories.ndim == 2:
        trajectories = trajectories[None]
    if trajectories.ndim != 3 or trajectories.shape[1] < 2:
        raise ValueError(f"{name} must be (N, H, D) or (H, D) with H >= 2, not {np.shape(array)}")
    return trajectories


def _as_plans_xy(array: ArrayLike, name: str = "plans_xy") -> np.ndarray:
    """``(N, H, 2)`` float array of x, y plans."""
    plans = _as_trajectories(array, name)
    if plans.shape[2] != 2:
        raise ValueError(f"{name} must hold (x, y) points in its last axis, not {plans.shape[2]} values")
    return plans


def _segments(trajectories_2d: np.ndarray) -> np.ndarray:
    """``(N, H, 2)`` points -> ``(N * (H - 1), 2, 2)`` line segments, trajectory by trajectory."""
    return np.stack([trajectories_2d[:, :-1], trajectories_2d[:, 1:]], axis=2).reshape(-1, 2, 2)


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    """A new Agg figure and axes, or ``ax`` and the figure it belongs to."""
    if ax is None:
        figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        return figure, figure.add_subplot()
    root = ax.figure
    while isinstance(root, SubFigure):
        root = root.figure
    assert isinstance(root, Figure)
    return root, ax


class _TimeLines:
    """Trajectories drawn as lines plus dots coloured by step; :meth:`update` moves them in place."""

    def __init__(self, ax: Axes, points_2d: np.ndarray) -> None:
        n, horizon = points_2d.shape[:2]
        self.lines = LineCollection(
            list(_segments(points_2d)), cmap=TIME_CMAP, linewidths=LINE_WIDTH, zorder=2
        )
        self.lines.set_array(np.tile(np.arange(horizon - 1) + 0.5, n))  # a segment's colour: its middle
        self.lines.set_clim(0, horizon - 1)
        ax.add_collection(self.lines)
        self.dots: PathCollection = ax.scatter(
            points_2d[..., 0].ravel(),
            points_2d[..., 1].ravel(),
            c=np.tile(np.arange(horizon), n),
            cmap=TIME_CMAP,
            vmin=0,
            vmax=horizon - 1,
            s=DOT_SIZE,
            zorder=3,
        )

    def update(self, points_2d: np.ndarray) -> None:
        """Redraw with new points of the same ``(N, H, 2)`` shape."""
        self.lines.set_segments(list(_segments(points_2d)))
        self.dots.set_offsets(points_2d.reshape(-1, 2))


def _draw_maze(ax: Axes, maze: MazeSource) -> None:
    """The maze's walls filling the axes (world coordinates, equal aspect, no ticks)."""
    extent = maze_extent(maze)
    ax.imshow(maze_walls(maze), cmap=MAZE_COLOURS, vmin=0, vmax=1, extent=extent, origin="upper", zorder=0)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_markers(ax: Axes, start: ArrayLike | None, goal: ArrayLike | None) -> None:
    """A white circle at ``start`` and a red star at ``goal`` (each an (x, y) pair) when given."""
    if start is not None:
        x, y = np.asarray(start, dtype=np.float64)[:2]
        ax.scatter(
            [x], [y], marker="o", s=MARKER_SIZE, c="white", edgecolors="black", zorder=4, label="start"
        )
    if goal is not None:
        x, y = np.asarray(goal, dtype=np.float64)[:2]
        ax.scatter(
            [x], [y], marker="*", s=MARKER_SIZE * 1.5, c="red", edgecolors="black", zorder=4, label="goal"
        )


def _finish(figure: Figure, ax: Axes, title: str | None, path: str | Path | None) -> Figure:
    """Set the title, save a PNG to ``path`` when given, and return the figure."""
    if title is not None:
        ax.set_title(title)
    if path is not None:
        figure.savefig(Path(path), dpi=DPI)
    return figure


# --------------------------------------------------------------------------- public


def plot_maze_plans(
    env_or_maze: MazeSource,
    plans_xy: ArrayLike,
    start: ArrayLike | None = None,
    goal: ArrayLike | None = None,
    path: str | Path | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a maze's walls and plans over it, coloured by plan step.

    Args:
        env_or_maze: a gymnasium-robotics maze env, its ``unwrapped.maze`` or a task name
            (``"umaze"`` / ``"medium"``, see :mod:`diffgym.tasks.mazes`).
        plans_xy: ``(N, H, 2)`` world x, y of ``N`` plans of ``H`` steps (or one ``(H, 2)`` plan), e.g.
            ``plans[..., :2]`` of PointMaze observations.
        start: ``(2,)`` x, y marked with a white circle.
        goal: ``(2,)`` x, y marked with a red star.
        path: save a PNG there.
        ax: draw into these axes instead of a new figure.
        title: the axes' title.

    Returns:
        The figure drawn on (``ax``'s when given).
    """
    figure, ax = _axes(ax)
    _draw_maze(ax, env_or_maze)
    _TimeLines(ax, _as_plans_xy(plans_xy))
    _draw_markers(ax, start, goal)
    return _finish(figure, ax, title, path)


def plot_trajectories(
    states: ArrayLike,
    dims: tuple[int, int] = (0, 1),
    path: str | Path | None = None,
    ax: Axes | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Plot two state dimensions of trajectories against each other, coloured by step (any task).

    Args:
        states: ``(N, H, D)`` (or one ``(H, D)``) states.
        dims: the dimensions on the x and y axes.
        path: save a PNG there.
        ax: draw into these axes instead of a new figure.
        labels: the axis labels; default ``state[i]``.
        title: the axes' title.
    """
    trajectories = _as_trajectories(states, "states")
    if not all(-trajectories.shape[2] <= dim < trajectories.shape[2] for dim in dims):
        raise ValueError(f"dims {dims} out of range for states with {trajectories.shape[2]} dimensions")
    figure, ax = _axes(ax)
    _TimeLines(ax, trajectories[..., list(dims)])
    ax.autoscale_view()
    x_label, y_label = labels if labels is not None else (f"state[{dims[0]}]", f"state[{dims[1]}]")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    return _finish(figure, ax, title, path)


def animate_denoising(
    frames_xy: ArrayLike,
    env_or_maze: MazeSource,
    path: str | Path,
    fps: float = 8.0,
    start: ArrayLike | None = None,
    goal: ArrayLike | None = None,
    step_labels: Sequence[object] | None = None,
) -> Path:
    """Write an animation of plans being denoised: one frame per denoising step, the step in the title.

    Args:
        frames_xy: ``(K, N, H, 2)``: world x, y of ``N`` plans of ``H`` steps after each of ``K``
            denoising steps (the sampler's intermediate results, first the noisiest).
        env_or_maze: as in :func:`plot_maze_plans`.
        path: ``.gif`` (Pillow, loops forever) or any video suffix ffmpeg writes (``.mp4``).
        fps: frames per second.
        start, goal: ``(2,)`` x, y markers, as in :func:`plot_maze_plans`.
        step_labels: ``K`` labels shown after the step count, e.g. the diffusion times ``t``.

    Returns:
        ``path``, with its ``K`` frames of 480 x 480 pixels.
    """
    frames = np.asarray(frames_xy, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise ValueError(f"frames_xy must be (K, N, H, 2), not {frames.shape}")
    _as_plans_xy(frames[0], "frames_xy[k]")
    if step_labels is not None and len(step_labels) != len(frames):
        raise ValueError(f"{len(step_labels)} step_labels for {len(frames)} frames")
    figure, ax = _axes(None)
    _draw_maze(ax, env_or_maze)
    lines = _TimeLines(ax, frames[0])
    _draw_markers(ax, start, goal)
    images = []
    for k, plans in enumerate(frames):
        lines.update(plans)
        label = "" if step_labels is None else f" ({step_labels[k]})"
        ax.set_title(f"denoising step {k + 1}/{len(frames)}{label}")
        images.append(_render(figure))
    return write_animation(Path(path), images, fps)


def _render(figure: Figure) -> np.ndarray:
    """The figure as an ``(height, width, 3)`` uint8 image."""
    canvas = figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_animation(path: Path, images: list[np.ndarray], fps: float) -> Path:
    """Write frames (each ``(H, W, 3)`` uint8) as a looping GIF or, for other suffixes (``.mp4``), a
    video through imageio's ffmpeg (H.264; frames are padded to even sizes by imageio)."""
    if path.suffix.lower() == ".gif":
        iio.imwrite(path, np.stack(images), extension=".gif", duration=1000.0 / fps, loop=0)
    else:
        iio.imwrite(path, np.stack(images), fps=fps)
    return path
