"""Hyperparameter search over a suite's runs: ``diffgym benchmark SUITE --agents AGENT --tune KEY=SPACE ...``.

A *trial* is one setting of the searched keys. It runs the agent's part of the suite's matrix (the
chosen datasets × seeds, with the session's budget) with those values as ``--set`` overrides,
through the harness's own :func:`~diffgym.zoo.benchmarks.harness.execute`, so each of its runs
writes the record a plain ``diffgym benchmark`` run would. Its *objective* is the mean over its runs
of the final evaluation's metric (the suite's "last"; the mean return where a run has no score).
The search maximises it.

A trial's records go to ``<out>/<suite>-search/<agent>/trials/<id>/<suite>/``, ``<id>`` a digest
of its values, with ``trial.json`` beside them: a trial whose records are already there (same
configuration) is read back, not run again, so the same command continues an interrupted search
(with ``--checkpoint-every`` a trial's runs resume as well).

Searchers (``--searcher``):

- ``optuna`` (default): Optuna's TPE sampler with seed :data:`SEARCH_SEED`, for ``--trials`` trials.
  Without ``--ray`` it runs the trials one after another in this process (``pip install optuna``);
- ``grid``: every combination of the ``choice(...)`` values (``--trials`` is not used).

With ``--ray [ADDRESS]`` the trials are Ray Tune trials (Optuna through Ray Tune's ``OptunaSearch``),
one CPU each, side by side on a Ray instance started here or on the cluster at ADDRESS; Ray Tune
keeps its own logs under ``<out>/<suite>-search/<agent>/ray/``. A trial's records do not depend on
where it ran (a test compares). Trials running side by side are proposed from fewer finished ones,
so an Optuna search on Ray is not the same sequence as in this process.

The report, ``search.md`` and ``search.json`` beside ``trials/``, ranks this search's trials by
objective (mean ± std over its runs, and per dataset) and gives the best trial's settings as
``--set`` assignments. The best objective is measured on the seeds it was chosen on, so it is
optimistic: confirm the settings with other seeds before publishing a score.

One ``KEY=SPACE`` per searched key (KEY as in ``--set``, nested keys joined by '.'); SPACE is one of
``uniform(LOW, HIGH)``, ``loguniform(LOW, HIGH)``, ``int(LOW, HIGH)`` (both ends included) or
``choice(A, B, ...)`` (values read as YAML, as ``--set`` reads them):

>>> Dimension.parse("learning_rate=loguniform(1e-4, 1e-3)")
Dimension(key='learning_rate', kind='loguniform', values=(0.0001, 0.001))
>>> Dimension.parse("policy_kwargs.sampler=choice({name: ddim}, {name: ddpm})").value(1)
{'name': 'ddpm'}
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from diffgym.zoo.benchmarks.harness import (
    Contender,
    Dataset,
    Session,
    execute,
    finish_run,
    matrix_runs,
    scratch_space,
    train_and_evaluate,
    unfinished,
)
from diffgym.zoo.benchmarks.ray_runs import connect, in_worker, worker_variables
from diffgym.zoo.benchmarks.report import (
    hardware,
    hardware_line,
    log,
    markdown_table,
    mean_std,
    now,
    ranking_value,
    read_json,
    write_json,
    write_text,
)
from diffgym.zoo.benchmarks.reporting import RECORD_FORMAT
from diffgym.zoo.hyperparameters import read_value

__all__ = ["SEARCHERS", "SEARCH_SEED", "Dimension", "run_search", "run_trial"]

#: ``--searcher`` choices
SEARCHERS = ("optuna", "grid")
#: the seed of Optuna's sampler: the same command proposes the same trials (in this process)
SEARCH_SEED = 0
_KINDS = ("uniform", "loguniform", "int", "choice")
_SPACE = re.compile(r"(?P<kind>\w+)\((?P<arguments>.*)\)")
_SYNTAX = "uniform(LOW, HIGH), loguniform(LOW, HIGH), int(LOW, HIGH) or choice(A, B, ...)"

#: a trial's assignments ("key=value") -> its summary (see :func:`run_trial`)
Evaluate = Callable[[Sequence[str]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched key: ``kind`` (uniform, loguniform, int, choice) over ``values`` (the two ends, or
    the choices). A search draws a number for it (a choice's index), :meth:`value` turns that into
    the setting."""

    key: str
    kind: str
    values: tuple[Any, ...]

    @classmethod
    def parse(cls, text: str) -> Dimension:
        """``"KEY=SPACE"`` (see the module's docstring).

        Raises:
            ValueError: not that form, or ends that are not numbers with LOW < HIGH (LOW > 0 for
                loguniform, integers for int), or a choice of nothing.
        """
        key, sep, space = text.partition("=")
        match = _SPACE.fullmatch(space.strip())
        if not sep or not key.strip() or match is None or match["kind"] not in _KINDS:
            raise ValueError(f"--tune takes KEY=SPACE, SPACE one of {_SYNTAX}; not {text!r}")
        try:
            values = read_value(f"[{match['arguments']}]")
        except ValueError as error:
            raise ValueError(f"--tune {key.strip()}: {error}") from error
        dimension = cls(key.strip(), match["kind"], tuple(values))
        dimension._check(text)
        return dimension

    def _check(self, text: str) -> None:
        if self.kind == "choice":
            if not self.values:
                raise ValueError(f"--tune {text!r}: choice() needs at least one value")
            return
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.values)
        if len(self.values) != 2 or not numbers or not self.values[0] < self.values[1]:
            raise ValueError(f"--tune {text!r}: {self.kind}(LOW, HIGH) needs two numbers with LOW < HIGH")
        if self.kind == "loguniform" and self.values[0] <= 0:
            raise ValueError(f"--tune {text!r}: loguniform needs LOW > 0")
        if self.kind == "int" and not all(isinstance(v, int) for v in self.values):
            raise ValueError(f"--tune {text!r}: int(LOW, HIGH) needs integers")

    def value(self, drawn: Any) -> Any:
        """The setting a drawn number stands for: a choice's index -> that choice; a float rounded to
        4 significant digits, so settings read well and travel exactly as text."""
        if self.kind == "choice":
            return self.values[int(drawn)]
        return int(drawn) if self.kind == "int" else float(f"{float(drawn):.4g}")

    def assignment(self, drawn: Any) -> str:
        """``key=value`` for ``--set`` (JSON, which YAML reads back as the same value)."""
        return f"{self.key}={json.dumps(self.value(drawn))}"

    def suggest(self, trial: Any, name: str) -> Any:
        """The number an Optuna ``trial`` draws for this key, under parameter ``name``."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(range(len(self.values))))
        if self.kind == "int":
            return trial.suggest_int(name, *self.values)
        return trial.suggest_float(name, *self.values, log=self.kind == "loguniform")

    def ray_domain(self, grid: bool) -> Any:
        """The Ray Tune search space of the drawn number (a grid over the choices' indices when ``grid``)."""
        from ray import tune

        low, high = self.values[0], self.values[-1]
        domains: dict[str, Callable[[], Any]] = {
            "choice": lambda: (tune.grid_search if grid else tune.choice)(list(range(len(self.values)))),
            "int": lambda: tune.randint(low, high + 1),  # Ray's upper end is excluded
            "uniform": lambda: tune.uniform(low, high),
            "loguniform": lambda: tune.loguniform(low, high),
        }
        return domains[self.kind]()


def run_search(
    session: Session,
    agent: str,
    space: Sequence[Dimension],
    datasets: Sequence[str] = (),
    trials: int = 20,
    searcher: str = "optuna",
) -> Path:
    """Search ``space`` for ``agent`` of the session's suite (see the module's docstring); returns the
    Markdown report's path.

    Raises:
        ValueError: an empty space, a key searched twice, an unknown searcher, a grid over a range,
            fewer than one trial, a suite whose runs have no final evaluation, or an agent that runs
            on none of the chosen datasets.
        KeyError: an agent or dataset the suite does not have.
    """
    _check_search(space, trials, searcher)
    (contender,), names = session.choose([agent], datasets)
    if session.suite.procedure is not train_and_evaluate:
        raise ValueError(
            f"suite {session.suite.name!r} measures its runs without a final evaluation to search on"
        )
    if not any(contender.runs_on(name) for name in names):
        raise ValueError(f"{contender.name} runs on none of the datasets {names}")
    # absolute: Ray Tune runs each trial in a folder of its own
    session = dataclasses.replace(session, out=session.out.resolve(), data_dir=session.data_dir.resolve())
    root = session.out / f"{session.suite.name}-search" / contender.name
    with scratch_space() as scratch:
        running = dataclasses.replace(session, scratch=scratch)
        prepared = tuple(session.suite.prepare(name, running) for name in names)
        evaluate = functools.partial(run_trial, running, contender, prepared, root / "trials")
        if session.ray_address is None:
            summaries = _search_here(evaluate, space, trials, searcher)
        else:
            summaries = _search_on_ray(evaluate, space, trials, searcher, session.ray_address, root)
    return _write_report(root, session, contender, names, space, searcher, summaries)


def _check_search(space: Sequence[Dimension], trials: int, searcher: str) -> None:
    if not space:
        raise ValueError("--tune needs at least one KEY=SPACE")
    keys = [dimension.key for dimension in space]
    if len(set(keys)) < len(keys):
        raise ValueError(
            f"--tune searches each key once; repeated: {sorted({k for k in keys if keys.count(k) > 1})}"
        )
    if searcher not in SEARCHERS:
        raise ValueError(f"no searcher {searcher!r}; searchers: {', '.join(SEARCHERS)}")
    ranges = [d.key for d in space if d.kind != "choice"]
    if searcher == "grid" and ranges:
        raise ValueError(f"--searcher grid needs choice(...) for every key; ranges: {', '.join(ranges)}")
    if trials < 1:
        raise ValueError(f"--trials must be at least 1, got {trials}")


def run_trial(
    session: Session,
    contender: Contender,
    datasets: Sequence[Dataset],
    trials_folder: Path,
    assignments: Sequence[str],
) -> dict[str, Any]:
    """Run the trial of ``assignments`` (its runs whose records are not there yet) and return its
    summary: id, assignments, objective and each run's final metric."""
    digest = _digest(assignments)
    targeted = tuple(f"{contender.name}:{assignment}" for assignment in assignments)
    trial_session = dataclasses.replace(
        session, out=trials_folder / digest, overrides=(*session.overrides, *targeted), ray_address=None
    )
    runs = matrix_runs(trial_session, [contender], datasets)
    (trials_folder / digest).mkdir(parents=True, exist_ok=True)
    with FileLock(trials_folder / digest / ".lock"):  # the same values proposed twice train once
        for run in unfinished(runs):
            finish_run(run, execute(run))
        records = [read_json(trial_session.folder / f"{run.name}.json") for run in runs]
        summary = _summary(digest, assignments, records, session.suite.metric.key)
        write_json(trials_folder / digest / "trial.json", summary)
    log(f"trial {digest} ({' '.join(assignments)}): objective {summary['objective']:.4g}")
    return summary


def _digest(assignments: Sequence[str]) -> str:
    """A trial's id: its folder's name."""
    return hashlib.sha256(json.dumps(list(assignments)).encode()).hexdigest()[:12]


def _summary(
    digest: str, assignments: Sequence[str], records: list[dict[str, Any]], metric: str
) -> dict[str, Any]:
    """The trial's objective: the mean final ``metric`` of its runs (the mean return if one lacks it)."""
    key = metric if all(record["final"][metric] is not None for record in records) else "mean_return"
    runs = {
        record["run"]: {"dataset": record["config"]["dataset"], "seed": record["config"]["seed"],
                        "final": record["final"][key]}
        for record in records
    }  # fmt: skip
    finals = [run["final"] for run in runs.values()]
    return {"id": digest, "assignments": list(assignments), "objective_key": key,
            "objective": ranking_value(float(np.mean(finals))), "runs": runs}  # fmt: skip


def _search_here(
    evaluate: Evaluate, space: Sequence[Dimension], trials: int, searcher: str
) -> list[dict[str, Any]]:
    """The trials one after another in this process."""
    if searcher == "grid":
        indices = itertools.product(*(range(len(dimension.values)) for dimension in space))
        return [evaluate([d.assignment(i) for d, i in zip(space, drawn, strict=True)]) for drawn in indices]
    try:
        import optuna
    except ImportError:
        raise ImportError("--searcher optuna needs Optuna: pip install optuna (or 'diffgym[ray]')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEARCH_SEED))
    summaries: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        summary = evaluate([d.assignment(d.suggest(trial, f"p{i}")) for i, d in enumerate(space)])
        summaries.append(summary)
        return float(summary["objective"])

    study.optimize(objective, n_trials=trials)
    return summaries


def _search_on_ray(
    evaluate: Evaluate, space: Sequence[Dimension], trials: int, searcher: str, address: str, root: Path
) -> list[dict[str, Any]]:
    """The trials as Ray Tune trials, one CPU each, on ``address`` (see :func:`~diffgym.zoo.benchmarks.ray_runs.connect`).

    Raises:
        RuntimeError: a trial failed (after the others finished); the message has its error.
    """
    variables = worker_variables()
    with connect(address):
        try:
            from ray import tune
        except ImportError:
            raise ImportError("--tune with --ray needs Ray Tune: pip install 'diffgym[ray]'") from None
        grid = searcher == "grid"
        algorithm = None
        if not grid:
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            algorithm = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=SEARCH_SEED))
        trainable = functools.partial(_ray_trial, variables, evaluate, tuple(space))
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={f"p{i}": dimension.ray_domain(grid) for i, dimension in enumerate(space)},
            tune_config=tune.TuneConfig(
                metric="objective", mode="max", num_samples=1 if grid else trials, search_alg=algorithm
            ),
            run_config=tune.RunConfig(storage_path=str((root / "ray").resolve()), name="tune", verbose=0),
        )
        grid_of_results = tuner.fit()
    results = [grid_of_results[i] for i in range(len(grid_of_results))]
    failures = [result.error for result in results if result.error is not None]
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(results)} trials failed; the first: {failures[0]}")
    trials_folder = root / "trials"
    return [
        read_json(trials_folder / _digest(_assignments(space, result.config or {})) / "trial.json")
        for result in results
    ]


def _assignments(space: Sequence[Dimension], config: dict[str, Any]) -> list[str]:
    """A Ray Tune trial's config (``p0``, ``p1``, ... drawn) as ``key=value`` assignments."""
    return [dimension.assignment(config[f"p{i}"]) for i, dimension in enumerate(space)]


def _ray_trial(
    variables: dict[str, str], evaluate: Evaluate, space: tuple[Dimension, ...], config: dict[str, Any]
) -> None:
    """One Ray Tune trial: evaluated in the worker, its objective reported (the summary is in its folder)."""
    from ray import tune

    summary = in_worker(variables, evaluate, _assignments(space, config))
    tune.report({"objective": summary["objective"]})


def _write_report(
    root: Path,
    session: Session,
    contender: Contender,
    datasets: Sequence[str],
    space: Sequence[Dimension],
    searcher: str,
    summaries: list[dict[str, Any]],
) -> Path:
    """``search.json`` and ``search.md``: the trials ranked by objective (each once, however often it was
    proposed), the best one's settings."""
    distinct = {summary["id"]: summary for summary in summaries}
    ranked = sorted(distinct.values(), key=lambda summary: -summary["objective"])
    budget = session.budget
    metric = session.suite.metric
    where = "in this process" if session.ray_address is None else f"on Ray ({session.ray_address})"
    report = {
        "format": RECORD_FORMAT, "date": now(), "suite": session.suite.name, "agent": contender.name,
        "datasets": list(datasets), "searcher": searcher, "search_seed": SEARCH_SEED, "where": where,
        "space": [dataclasses.asdict(dimension) for dimension in space],
        "budget": dataclasses.asdict(budget), "overrides": list(session.overrides),
        "hardware": hardware(), "trials": ranked,
    }  # fmt: skip
    write_json(root / "search.json", report)
    header = ["rank", "trial", *(d.key for d in space), "objective (mean ± std over runs)", *datasets]
    scale = metric.scale if ranked[0]["objective_key"] == metric.key else 1.0
    rows = [
        [rank, f"`{s['id']}`", *_values(s), *_scores(s, datasets, scale)] for rank, s in enumerate(ranked, 1)
    ]
    best = " ".join(f"{contender.name}:{assignment}" for assignment in ranked[0]["assignments"])
    text = "\n\n".join([
        f"# Hyperparameter search: {contender.label} on {session.suite.name}",
        f"{len(ranked)} trials, searcher {searcher} (seed {SEARCH_SEED}), run {where}. Each trial: "
        f"{', '.join(datasets)} × {budget.seeds} seed(s), {budget.steps or 'n_timesteps'} gradient steps; "
        f"objective: the mean final {metric.label if ranked[0]['objective_key'] == metric.key else 'mean return'} "
        f"over the trial's runs. Hardware: {hardware_line(report['hardware'])}. {now()}.",
        markdown_table(header, rows),
        f"Best: `--set {best}`. It was chosen on these seeds, so its objective is optimistic: "
        "confirm it with other seeds before publishing a score.",
    ])  # fmt: skip
    write_text(root / "search.md", text + "\n")
    log(f"search report -> {root / 'search.md'}")
    return root / "search.md"


def _values(summary: dict[str, Any]) -> list[str]:
    return [assignment.partition("=")[2] for assignment in summary["assignments"]]


def _scores(summary: dict[str, Any], datasets: Sequence[str], scale: float) -> list[str]:
    finals = [run["final"] * scale for run in summary["runs"].values()]
    per_dataset = [
        mean_std([run["final"] * scale for run in summary["runs"].values() if run["dataset"] == name])
        for name in datasets
    ]
    return [f"{mean_std(finals)} (n={len(finals)})", *per_dataset]
