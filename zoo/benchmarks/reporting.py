"""Benchmark reports: ``<out>/<suite>.md`` and ``<out>/<suite>.json`` built from the records in
``<out>/<suite>/`` (:mod:`diffgym.zoo.benchmarks.harness` writes them): a table of last and best
(mean ± std over seeds) per (dataset, agent) with the budget and speed, the suite's own sections,
and the hardware."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgym.zoo.benchmarks.curves import plot_learning_curves
from diffgym.zoo.benchmarks.report import (
    hardware_line,
    markdown_table,
    mean_std,
    now,
    read_json,
    write_json,
    write_text,
)

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.harness import Metric, Session, Suite

__all__ = ["RECORD_FORMAT", "Report", "build_report", "load_report", "render_markdown"]

#: the version of the record layout; records of another layout in the folder are left out of reports
RECORD_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Report:
    """The records a report is built from: the runs (in suite order) and the studies by name."""

    suite: Suite
    runs: list[dict[str, Any]]
    studies: dict[str, dict[str, Any]]

    @property
    def is_empty(self) -> bool:
        return not self.runs and not self.studies

    def runs_of(self, agent: str | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.runs
            if agent in (None, r["config"]["agent"]) and dataset in (None, r["config"]["dataset"])
        ]

    def study(self, name: str) -> dict[str, Any] | None:
        """The result of a study (None if it has not run)."""
        record = self.studies.get(name)
        return None if record is None else record["result"]

    @property
    def hardware(self) -> dict[str, Any] | None:
        records = [*self.runs, *self.studies.values()]
        return records[0]["hardware"] if records else None

    @property
    def machines(self) -> dict[str, list[str]]:
        """Each machine's hardware line -> the records made on it (runs as ``agent dataset sSEED``,
        studies as ``study NAME``), in the report's order."""
        named = [(run["hardware"], "{agent} {dataset} s{seed}".format(**run["config"])) for run in self.runs]
        named += [(study.get("hardware"), f"study {name}") for name, study in self.studies.items()]
        machines: dict[str, list[str]] = {}
        for info, name in named:
            if info is not None:
                machines.setdefault(hardware_line(info), []).append(name)
        return machines


def load_report(session: Session) -> Report:
    """Every record of the current layout in the suite's folder, in the suite's order."""
    suite, folder = session.suite, session.folder
    records = map(read_json, sorted(folder.glob("*.json")))  # other JSON there (older layouts) is skipped
    runs = [r for r in records if isinstance(r, dict) and r.get("format") == RECORD_FORMAT]
    agents = [c.name for c in suite.contenders]
    order = {name: i for i, name in enumerate(suite.datasets)}
    runs.sort(
        key=lambda r: (order.get(r["config"]["dataset"], len(order)), _index(agents, r), r["config"]["seed"])
    )
    studies = {p.stem: read_json(p) for p in sorted((folder / "studies").glob("*.json"))}
    return Report(suite, runs, studies)


def build_report(session: Session) -> Path:
    """Write ``<out>/<suite>.json`` (every record) and ``<out>/<suite>.md``; returns the Markdown path."""
    report = load_report(session)
    if report.is_empty:
        raise FileNotFoundError(f"no records in {session.folder}: run the benchmark first")
    name = session.suite.name
    write_json(
        session.out / f"{name}.json",
        {
            "suite": name,
            "date": now(),
            "hardware": report.hardware,
            "machines": report.machines,
            "runs": report.runs,
            "studies": report.studies,
        },
    )
    figures = plot_learning_curves(report, session.out / f"{name}_curves")
    path = session.out / f"{name}.md"
    links = {dataset: figure.relative_to(session.out).as_posix() for dataset, figure in figures.items()}
    write_text(path, render_markdown(report, links) + "\n")
    return path


def render_markdown(report: Report, figures: dict[str, str] | None = None) -> str:
    """Title, description, the scores table, budget, links to the learning-curve ``figures``
    (``{dataset: relative path}``), the suite's sections, hardware."""
    suite = report.suite
    parts = [f"# {suite.title}", suite.description]
    if any("final" in r for r in report.runs):
        parts += [scores_table(report), budget_line(report)]
    if figures:
        links = ", ".join(f"[{dataset}]({path})" for dataset, path in figures.items())
        parts.append(f"Learning curves (mean ± std over seeds; dot: the final evaluation): {links}.")
    parts += [section(report) for section in suite.sections]
    parts.append(hardware_text(report.machines))
    return "\n\n".join(part for part in parts if part)


def hardware_text(machines: dict[str, list[str]]) -> str:
    """The hardware sentence: the one machine, or each machine with the records made on it (the
    largest group by its count)."""
    if len(machines) <= 1:
        return "".join(f"Hardware: {line}." for line in machines)
    largest = max(machines, key=lambda line: len(machines[line]))
    others = "; ".join(f"{line} ({', '.join(names)})" for line, names in machines.items() if line != largest)
    return (
        f"Hardware: these records come from {len(machines)} machines, so their speeds compare only within one: "
        f"{largest} ({_records(len(machines[largest]))}); {others}."
    )


def scores_table(report: Report) -> str:
    """One row per (dataset, agent): last and best (mean ± std over seeds), budget, speed."""
    metric = report.suite.metric
    rows = []
    for dataset in dict.fromkeys(r["config"]["dataset"] for r in report.runs):
        for agent in dict.fromkeys(r["config"]["agent"] for r in report.runs_of(dataset=dataset)):
            runs = [r for r in report.runs_of(agent, dataset) if "final" in r]
            if runs:
                rows.append(_score_row(report, runs, metric))
    header = [
        "dataset",
        "agent",
        f"last {metric.label}",
        f"best {metric.label}",
        "seeds",
        "gradient steps",
        "steps / s",
        "predict ms",
        "ms per env step",
    ]
    if report.suite.score_data:
        header.insert(2, "data's own")
    return markdown_table(header, rows)


def _score_row(report: Report, runs: list[dict[str, Any]], metric: Metric) -> list[Any]:
    first = runs[0]

    def values(part: str) -> list[float]:
        return [r[part][metric.key] * metric.scale for r in runs if r[part][metric.key] is not None]

    row = [
        first["config"]["dataset"],
        report.suite.label(first["config"]["agent"]),
        mean_std(values("final")),
        mean_std(values("best")),
        len(runs),
        _steps_trained(runs),
        mean_std([r["gradient_steps_per_second"] for r in runs]),
        mean_std([r["latency"]["predict_ms"] for r in runs], digits=2),
        mean_std([r["final"]["ms_per_env_step"] for r in runs], digits=2),
    ]
    if report.suite.score_data:
        score = first["data"].get("score")
        row.insert(2, "-" if score is None else f"{score:.1f}")
    return row


def _steps_trained(runs: list[dict[str, Any]]) -> str:
    """The budget's steps, or, for runs trained until their loss flattened, where each seed stopped."""
    budget = f"{runs[0]['budget']['gradient_steps']:,}"
    if "plateau" not in runs[0]:
        return budget
    stopped = " / ".join(f"{r['final']['step']:,}" for r in runs)
    return f"{stopped} (until flat, ≤ {budget})"


def budget_line(report: Report) -> str:
    """The budget the table's runs had, from their records."""
    budgets = [r["budget"] for r in report.runs if "final" in r]
    steps = sorted({b["gradient_steps"] for b in budgets})
    first = budgets[0]
    periodic = (
        f"evaluated every {first['eval_every']:,} gradient steps over {first['eval_episodes']} episodes and "
        if first["eval_every"]
        else ""
    )
    return (
        f"Budget: {', '.join(f'{s:,}' for s in steps)} gradient steps per run, up to {max(b['seeds'] for b in budgets)} "
        f"seed(s); {periodic}the final model over {first['final_episodes']} episodes. *last* = the final model "
        "(mean ± std over seeds); *best* = the best of the final and the periodic evaluations, which flatters. "
        "*predict ms*: `predict` of one observation at batch 1 (median, `torch.utils.benchmark`)."
        + _until_flat_sentence(report)
    )


def _until_flat_sentence(report: Report) -> str:
    """How runs trained until their loss flattened were stopped ("" where none was)."""
    rules = [r["plateau"] for r in report.runs if "plateau" in r]
    if not rules:
        return ""
    rule = rules[0]
    return (
        f" *Until flat*: a run stops once {rule['patience']} windows of {rule['window']:,} gradient steps in a "
        f"row have not brought its mean loss {rule['min_improvement']:.0%} below the best earlier window's; "
        "the steps column gives where each seed stopped."
    )


def _index(names: list[str], record: dict[str, Any]) -> int:
    name = record["config"]["agent"]
    return names.index(name) if name in names else len(names)


def _records(count: int) -> str:
    return f"{count} record" + ("" if count == 1 else "s")
