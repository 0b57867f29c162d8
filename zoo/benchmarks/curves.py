"""Learning-curve figures of a benchmark report: one PNG per dataset, every agent on it.

Each agent's line is the mean over its seeds of the metric at every periodic evaluation (the
run's curve), with a band of ± one standard deviation where there are several seeds, and its final
evaluation as a marker at the last step. Written by :func:`~diffgym.zoo.benchmarks.reporting.build_report`
to ``<out>/<suite>_curves/<dataset>.png`` and linked from the report.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.reporting import Report

__all__ = ["plot_learning_curves"]


def _mean_std_by_step(runs: list[dict[str, Any]], key: str, scale: float) -> tuple[list[int], Any, Any]:
    """Steps, and the mean and std over runs of ``key`` at each step (points without it are left out)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for point in run["curve"]:
            if point.get(key) is not None:
                by_step[point["step"]].append(point[key] * scale)
    steps = sorted(by_step)
    values = [np.asarray(by_step[step]) for step in steps]
    return steps, np.array([v.mean() for v in values]), np.array([v.std() for v in values])


def plot_learning_curves(report: Report, folder: Path) -> dict[str, Path]:
    """One figure per dataset whose runs have a curve; returns ``{dataset: path}``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    metric = report.suite.metric
    figures: dict[str, Path] = {}
    for dataset in dict.fromkeys(r["config"]["dataset"] for r in report.runs):
        agents = dict.fromkeys(
            r["config"]["agent"] for r in report.runs_of(dataset=dataset) if r.get("curve")
        )
        if not agents:
            continue
        figure, axes = plt.subplots(figsize=(6.4, 4.0))
        plotted = 0
        for agent in agents:
            runs = [r for r in report.runs_of(agent, dataset) if r.get("curve")]
            steps, mean, std = _mean_std_by_step(runs, metric.key, metric.scale)
            if not steps:
                continue
            label = f"{report.suite.label(agent)} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            (line,) = axes.plot(steps, mean, label=label)
            plotted += 1
            if len(runs) > 1:
                axes.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            finals = [
                r["final"][metric.key] * metric.scale for r in runs if r["final"].get(metric.key) is not None
            ]
            if finals:
                axes.plot(
                    [runs[0]["budget"]["gradient_steps"]], [np.mean(finals)], "o", color=line.get_color()
                )
        if not plotted:  # no run has the metric (an unscored suite): no figure
            plt.close(figure)
            continue
        axes.set(xlabel="gradient steps", ylabel=metric.label, title=f"{report.suite.title}: {dataset}")
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{dataset}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        figures[dataset] = path
    return figures
