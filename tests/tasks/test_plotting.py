import imageio.v3 as iio
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from diffgym.tasks.mazes import cell_to_xy
from diffgym.tasks.plotting import animate_denoising, plot_maze_plans, plot_trajectories

FREE, WALL = (244, 241, 234), (107, 91, 75)  # MAZE_COLOURS as RGB


@pytest.fixture(autouse=True)
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def plans(n=3, horizon=12, seed=0):
    """Noisy straight plans across umaze's top corridor, from cell (1, 1) to (1, 3)."""
    start, goal = cell_to_xy("umaze", (1, 1)), cell_to_xy("umaze", (1, 3))
    line = np.linspace(start, goal, horizon)
    return line + np.random.default_rng(seed).normal(0, 0.05, (n, horizon, 2)), start, goal


def lines_of(figure):
    return [c for c in figure.axes[0].collections if isinstance(c, LineCollection)]


def test_plot_maze_plans_writes_a_png_of_walls_and_plans(tmp_path):
    xy, start, goal = plans()
    figure = plot_maze_plans("umaze", xy, start=start, goal=goal, path=tmp_path / "plans.png")
    image = iio.imread(tmp_path / "plans.png")[..., :3]
    assert image.shape == (480, 480, 3)
    colours = {tuple(pixel) for pixel in image.reshape(-1, 3)}
    assert FREE in colours and WALL in colours and len(colours) > 10  # walls, floor, lines, markers
    (lines,) = lines_of(figure)
    segments = np.array(lines.get_segments())
    assert segments.shape == (3 * 11, 2, 2)
    np.testing.assert_allclose(segments[:11, 0], xy[0, :-1])  # plan 0's segments, in time order
    np.testing.assert_allclose(lines.get_array()[:11], np.arange(11) + 0.5)  # coloured by step
    # the walls sit where the env has them: cell (2, 1) is the U's wall, (3, 2) the free bottom corridor
    for cell, colour in [((2, 1), WALL), ((3, 2), FREE), ((0, 4), WALL)]:
        x, y = figure.axes[0].transData.transform(cell_to_xy("umaze", cell))
        assert tuple(image[image.shape[0] - int(y), int(x)]) == colour, cell


def test_plot_maze_plans_draws_into_a_given_axes_without_saving(tmp_path):
    figure = Figure()
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 2, 2)
    xy, _, _ = plans(n=1)
    assert plot_maze_plans("umaze", xy[0], ax=ax) is figure  # one (H, 2) plan is fine too
    assert figure.axes == [ax] and len(lines_of(figure)) == 1  # drawn into ax, no axes of its own
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"\(N, H, D\)"):
        plot_maze_plans("umaze", np.zeros(5))


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_animate_denoising_writes_one_frame_per_step(tmp_path, suffix):
    xy, start, goal = plans(n=2, horizon=8)
    noise = np.random.default_rng(1).normal(size=(4, *xy.shape))
    frames = xy + noise * np.linspace(1, 0, 4)[:, None, None, None]  # (K=4, N=2, H=8, 2), noisiest first
    path = animate_denoising(
        frames,
        "umaze",
        tmp_path / f"denoise{suffix}",
        fps=4,
        start=start,
        goal=goal,
        step_labels=[30, 20, 10, 0],
    )
    assert path.stat().st_size > 0
    video = iio.imread(path, index=None)
    assert video.shape[0] == 4 and video.shape[1:3] == (480, 480)
    assert not np.array_equal(video[0], video[-1])  # the plans (and the title) change
    with pytest.raises(ValueError, match="step_labels"):
        animate_denoising(frames, "umaze", tmp_path / "x.gif", step_labels=[1])


def test_plot_trajectories_picks_the_dimensions(tmp_path):
    states = np.random.default_rng(2).normal(size=(2, 6, 5))
    figure = plot_trajectories(states, dims=(1, 3), path=tmp_path / "states.png")
    segments = np.array(lines_of(figure)[0].get_segments())
    np.testing.assert_array_equal(segments[:5, 0], states[0, :-1][:, [1, 3]])
    assert figure.axes[0].get_xlabel() == "state[1]"
    assert iio.imread(tmp_path / "states.png").shape[:2] == (480, 480)
    with pytest.raises(ValueError, match="out of range"):
        plot_trajectories(states, dims=(0, 5))
