"""Path lengths from the maze2d evaluation starts, measured on a continual stream of goal legs."""

import numpy as np
import pytest

from diffgym.tasks.mazes import cell_to_xy, eval_path_lengths

# umaze's free cells in order along the U, from its goal cell (1, 1): distance k = index k
UMAZE_LINE = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]


def stream(legs):
    """Rows of legs ``(start cell, goal cell, steps)``; each leg sits at its start cell, a timeout on its last row."""
    observations, goals, timeouts = [], [], []
    for start, goal, steps in legs:
        observations.append(np.tile(np.append(cell_to_xy("umaze", start), [0.0, 0.0]), (steps, 1)))
        goals.append(np.tile(cell_to_xy("umaze", goal), (steps, 1)))
        timeouts.append(np.arange(steps) == steps - 1)
    return np.concatenate(observations), np.concatenate(goals), np.concatenate(timeouts)


def test_each_eval_start_gets_the_legs_of_its_distance():
    # a leg of every distance k = 1..6 (10 k steps) and another of distance 1 (20 steps)
    legs = [(UMAZE_LINE[6 - k], UMAZE_LINE[6], 10 * k) for k in range(1, 7)]
    legs.append((UMAZE_LINE[0], UMAZE_LINE[1], 20))
    observations, goals, timeouts = stream(legs)
    timeouts[-1] = False  # the tail after the last timeout is a leg too
    lengths, weights = eval_path_lengths("umaze", observations, goals, timeouts)
    np.testing.assert_allclose(weights.sum(), 1.0)
    by_length = {int(length): float(weights[lengths == length].sum()) for length in np.unique(lengths)}
    # six starts, one per distance; the start next to the goal shares its sixth between two legs
    expected = {10: 1 / 12, 20: 1 / 6 + 1 / 12, 30: 1 / 6, 40: 1 / 6, 50: 1 / 6, 60: 1 / 6}
    assert by_length == pytest.approx(expected)
    assert np.quantile(lengths, 0.5, weights=weights, method="inverted_cdf") == 30


def test_a_distance_without_legs_is_named():
    observations, goals, timeouts = stream([(UMAZE_LINE[0], UMAZE_LINE[1], 5)])
    with pytest.raises(ValueError, match="no leg"):
        eval_path_lengths("umaze", observations, goals, timeouts)
