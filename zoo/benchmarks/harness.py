"""The benchmark harness: a suite's run matrix (agent × dataset × seed), one JSON record per run, and
a Markdown report built from the records.

A :class:`Suite` declares what to run: its datasets, its agents (:class:`Contender`: a registered
agent, its hyperparameter file ``zoo/hyperparams/<stem>.yml`` and how it acts when evaluated), the
env of a dataset, how an episode batch is evaluated, the budget, and what is specific to it (extra
measurements per run, studies once per session or per dataset, extra report sections). :func:`run_suite` then, for
every run of the matrix:

1. builds the agent from the registry with the hyperparameters of its (agent, dataset) key,
   ``--set`` overrides applied;
2. trains it for the budget's gradient steps, evaluating every ``eval_every`` steps (the curve),
   then evaluates the final model; scores are :func:`diffgym.scores.normalized_score` of the
   mean return (the suite's metric may be another, e.g. a success rate); "best" is the best of
   the curve and the final point, "last" the final point;
3. times ``predict`` at batch 1 with ``torch.utils.benchmark``;
4. writes ``<out>/<suite>/<agent>_<dataset>_s<seed>.json`` atomically: the config (agent, class,
   hyperparameter key and values), the budget, the data, the hardware, the curve, final and best,
   the wall times and the suite's extra measurements.

The report (``<out>/<suite>.md`` and ``<out>/<suite>.json``, :mod:`~diffgym.zoo.benchmarks.reporting`)
is rebuilt from every record in the folder, so a long matrix can be split over processes or sessions. During a session the Minari store
(``MINARI_DATASETS_PATH``) is a scratch folder removed at the end: data files are imported there,
never into the user's own store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

try:
    import fcntl
except ImportError:  # Windows: stale scratch folders are not detected
    fcntl = None  # type: ignore[assignment]

import gymnasium as gym
import h5py
import numpy as np
from filelock import FileLock
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import diffgym
from diffgym import registry
from diffgym.callbacks import StopTrainingOnLossPlateau
from diffgym.registry import AgentSpec
from diffgym.scores import get_reference, normalized_score
from diffgym.tasks.envs import make_env as make_gym_env
from diffgym.zoo.benchmarks.checkpoints import Progress, RunCheckpoint, is_finished
from diffgym.zoo.benchmarks.ray_runs import run_on_ray
from diffgym.zoo.benchmarks.report import hardware, latency_ms, log, now, ranking_value, read_json, write_json
from diffgym.zoo.benchmarks.reporting import RECORD_FORMAT, Report, build_report, load_report
from diffgym.zoo.hyperparameters import parse_override, resolve_hyperparams, split_config

__all__ = [
    "EVAL_SEED",
    "Budget",
    "Contender",
    "Dataset",
    "Evaluation",
    "Metric",
    "Report",
    "Run",
    "Session",
    "Suite",
    "build_report",
    "evaluate_episodes",
    "evaluate_team_episodes",
    "execute",
    "finish_run",
    "matrix_runs",
    "read_d4rl_file",
    "run_suite",
    "scratch_space",
    "train_and_evaluate",
    "unfinished",
]

#: episode seeds of evaluations start here (plus the run's seed), apart from any seed used in training
EVAL_SEED = 10_000


@dataclasses.dataclass(frozen=True)
class Contender:
    """One agent of a suite: a registered agent under a name, with its settings.

    Args:
        name: its name in records, tables and ``--agents`` (``"madiff-d"``).
        agent: the registry name (default: ``name``), or the spec of an agent the suite defines itself.
        hyperparams: the stem of its file ``zoo/hyperparams/<stem>.yml`` (default: the agent's).
        overrides: ``key=value`` settings fixed for this contender, applied after the file's.
        deterministic: ``predict(..., deterministic=...)`` when evaluated.
        datasets: the datasets it runs on (default: all of the suite's).
        title: its name in tables (default: the class name, "(baseline)" for baselines).
    """

    name: str
    agent: str | AgentSpec = ""
    hyperparams: str = ""
    overrides: tuple[str, ...] = ()
    deterministic: bool = True
    datasets: tuple[str, ...] = ()
    title: str = ""

    @property
    def spec(self) -> AgentSpec:
        return self.agent if isinstance(self.agent, AgentSpec) else registry.get(self.agent or self.name)

    @property
    def stem(self) -> str:
        return self.hyperparams or self.spec.hyperparams_name

    @property
    def label(self) -> str:
        spec = self.spec
        return self.title or spec.class_name + (" (baseline)" if spec.baseline else "")

    def runs_on(self, dataset: str) -> bool:
        return not self.datasets or dataset in self.datasets


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a suite trains and evaluates; ``diffgym benchmark`` options replace each field.

    Args:
        seeds: seeds per (agent, dataset): 0, 1, ...
        steps: gradient steps of every agent; None: each agent's ``n_timesteps`` from its file.
        eval_every: gradient steps between evaluations during training (0: final only).
        eval_episodes: episodes per evaluation during training.
        final_episodes: episodes of the final evaluation.
        checkpoint_every: gradient steps between checkpoints of a run, which the same command
            resumes after an interruption (:mod:`~diffgym.zoo.benchmarks.checkpoints`); 0: none.
        until_flat: train until the loss flattens, ``steps`` at most: stop once two windows of
            ``until_flat`` gradient steps in a row have not brought the agent's mean loss 1 % below the
            best earlier window's (:class:`~diffgym.callbacks.StopTrainingOnLossPlateau`); 0: train
            ``steps``.
    """

    seeds: int = 1
    steps: int | None = None
    eval_every: int = 0
    eval_episodes: int = 5
    final_episodes: int = 10
    checkpoint_every: int = 0
    until_flat: int = 0

    def __post_init__(self) -> None:
        counts = {
            "seeds": self.seeds,
            "eval_episodes": self.eval_episodes,
            "final_episodes": self.final_episodes,
        }
        counts |= {} if self.steps is None else {"steps": self.steps}
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"budget: {name} must be at least 1, got {value}")
        optional = {
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "until_flat": self.until_flat,
        }
        for name, value in optional.items():
            if value < 0:
                raise ValueError(
                    f"budget: {name} must be 0 (none) or a number of gradient steps, got {value}"
                )


class Metric(NamedTuple):
    """What "last" and "best" compare: a key of an evaluation point, its label, and a display scale."""

    key: str = "score"
    label: str = "normalised score"
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A prepared dataset: its name, what agents get as ``dataset=``, and what the record keeps."""

    name: str
    data: Any  # a path, Minari id or MinariDataset
    info: dict[str, Any]  # env id, mean return, transitions, file, ... (JSON)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Episodes of one evaluation: their returns, the env steps they took, and other metrics."""

    returns: list[float]
    env_steps: int
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


#: (model, run, episodes) -> the evaluation of that many episodes
Evaluator = Callable[[Any, "Run", int], Evaluation]
#: (model, run) -> a measurement kept in the record's "extra" ({} when it does not apply)
Measure = Callable[[Any, "Run"], dict[str, Any]]
#: (model, run) -> the record's results (train_and_evaluate: curve, final, best, wall times, latency)
Procedure = Callable[[Any, "Run"], dict[str, Any]]
#: (session, prepared datasets) -> a record of a measurement made once per session
Study = Callable[["Session", list[Dataset]], dict[str, Any]]
#: (session, one prepared dataset) -> that dataset's result, or None where the study does not apply to it
DatasetStudy = Callable[["Session", Dataset], Any]
#: report -> a Markdown section
Section = Callable[["Report"], str]


def read_d4rl_file(name: str, session: Session) -> Dataset:
    """``<data dir>/<name>.hdf5`` (D4RL layout) with the env id and mean return of its metadata."""
    path = session.data_dir / f"{name}.hdf5"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: give --data-dir (or set DIFFGYM_DATA_DIR) to the folder of the D4RL-layout files"
        )
    with h5py.File(path, "r") as file:
        metadata = _json_attribute(file, "metadata")
        transitions = int(file["rewards"].shape[0])
    info = {"file": str(path), "transitions": transitions, "env_id": metadata.get("env_id")}
    return Dataset(name, str(path), info | {"mean_return": metadata.get("mean_return")})


def env_from_metadata(dataset: Dataset) -> gym.Env:
    """The env of the id the dataset's metadata records (its family registered first, see
    :func:`diffgym.tasks.envs.make_env`)."""
    return make_gym_env(dataset.info["env_id"])


def evaluate_episodes(model: Any, run: Run, episodes: int) -> Evaluation:
    """``evaluate_policy`` on a fresh env of the dataset, first reset with ``EVAL_SEED + seed``."""
    env = Monitor(run.make_env())
    env.reset(seed=EVAL_SEED + run.seed)
    returns, lengths = evaluate_policy(
        model,
        env,
        n_eval_episodes=episodes,
        deterministic=run.contender.deterministic,
        return_episode_rewards=True,
    )
    env.close()
    return Evaluation([float(r) for r in returns], int(np.sum(lengths)))  # type: ignore[union-attr, arg-type]


def evaluate_team_episodes(model: Any, run: Run, episodes: int) -> Evaluation:
    """:func:`diffgym.wrappers.evaluate_team` (team returns) on a fresh PettingZoo env of the dataset."""
    from diffgym.wrappers import evaluate_team

    returns, lengths = evaluate_team(
        model,
        run.make_env(),
        episodes,
        run.contender.deterministic,
        seed=EVAL_SEED + run.seed,
        return_episode_rewards=True,
    )
    return Evaluation([float(r) for r in returns], int(np.sum(lengths)))


def train_and_evaluate(model: Any, run: Run) -> dict[str, Any]:
    """Train for the run's budget with the evaluation curve (in checkpointed blocks when the budget
    has ``checkpoint_every``, resuming a checkpoint of this run), evaluate the final model, time
    ``predict``."""
    budget = run.session.budget
    checkpoint = RunCheckpoint.of(run)  # execute() resumed the model from it
    progress = checkpoint.progress(run) if budget.checkpoint_every else Progress()
    curve = EvaluationCurve(run, budget.eval_every, budget.eval_episodes, progress.points)
    plateau = _plateau_stop(budget, progress)
    callbacks = CallbackList([curve] if plateau is None else [curve, plateau])
    block = budget.checkpoint_every or run.steps
    while model.num_timesteps < run.steps and (plateau is None or plateau.stopped_at is None):
        started, eval_seconds = time.perf_counter(), curve.seconds
        model.learn(
            min(block, run.steps - model.num_timesteps), callback=callbacks, reset_num_timesteps=False
        )
        progress.train_seconds += time.perf_counter() - started - (curve.seconds - eval_seconds)
        progress.eval_seconds += curve.seconds - eval_seconds
        if plateau is not None:
            progress.plateau = plateau.state_dict()
        if budget.checkpoint_every:
            checkpoint.save(model, run, progress)
            log(_progress_line(run, model.num_timesteps, progress, curve.points))
    final = run.assess(model, budget.final_episodes)
    metric = run.session.suite.metric.key
    best = max([*curve.points, final], key=lambda point: ranking_value(point[metric]))
    return {
        "curve": curve.points,
        "final": final,
        "best": {"step": best["step"], metric: best[metric]},
        "wall_time": {
            "train_seconds": progress.train_seconds,
            "eval_seconds": progress.eval_seconds + final["seconds"],
        },
        "gradient_steps_per_second": model.num_timesteps / progress.train_seconds,
        "latency": {"predict_ms": predict_latency(model, run)},
        **({} if plateau is None else {"plateau": _plateau_record(plateau)}),
    }


def _plateau_stop(budget: Budget, progress: Progress) -> StopTrainingOnLossPlateau | None:
    """The budget's stop on a flat loss (None without ``until_flat``), continuing the progress's."""
    if not budget.until_flat:
        return None
    stop = StopTrainingOnLossPlateau(window=budget.until_flat)
    if progress.plateau:
        stop.load_state_dict(progress.plateau)
    return stop


def _plateau_record(stop: StopTrainingOnLossPlateau) -> dict[str, Any]:
    """What a record says of a run trained until its loss flattened: the rule, each window's mean loss,
    and the step it stopped at (None: it ran its whole budget)."""
    rule = {"window": stop.window, "min_improvement": stop.min_improvement, "patience": stop.patience}
    return rule | {"window_means": stop.windows, "stopped_at": stop.stopped_at}


def _progress_line(run: Run, step: int, progress: Progress, points: list[dict[str, Any]]) -> str:
    """A checkpointed run's progress: step, training speed so far, the last evaluation."""
    metric = run.session.suite.metric
    last = (
        f", {metric.key} at step {points[-1]['step']}: {_scaled(points[-1][metric.key], metric)}"
        if points
        else ""
    )
    speed = step / progress.train_seconds if progress.train_seconds else 0.0
    return f"{run.name}: checkpoint at gradient step {step:,} of {run.steps:,} ({speed:.1f} steps/s){last}"


def predict_latency(model: Any, run: Run) -> float:
    """Median ``predict`` of the first observation of a fresh env at batch 1, a new decision each call."""
    observation = run.make_env().reset(seed=0)[0]
    return latency_ms(lambda: model.predict(observation, deterministic=run.contender.deterministic))


@dataclasses.dataclass(frozen=True)
class Suite:
    """A benchmark: its matrix, how it is evaluated and reported, and what is specific to it.

    Args:
        name: ``diffgym benchmark NAME``; its records go to ``<out>/<name>/``.
        title: the report's heading.
        description: the report's first paragraph (what is compared, on what data, how).
        datasets: dataset names, prepared by ``prepare`` (default: ``<data dir>/<name>.hdf5``).
        agents: the contenders (``str``: a registered agent by its name).
        budget: default budget (``diffgym benchmark`` options replace its fields).
        params: suite-specific settings, replaced by ``--set suite:key=value``.
        prepare: ``(dataset name, session) -> Dataset``.
        make_env: ``Dataset -> env`` (a Gymnasium env, or a PettingZoo env for team agents).
        evaluate: the :data:`Evaluator`.
        reference: ``Dataset -> name`` for :func:`diffgym.scores.get_reference`, None: no score.
        metric: what "last" and "best" compare.
        score_data: show the dataset's own mean return, normalised, next to the agents.
        procedure: what a run does with its built agent (default :func:`train_and_evaluate`).
        measures: per-run measurements after the procedure, kept under ``extra``.
        studies: measurements made once per session, each kept in ``<out>/<name>/studies/``.
        dataset_studies: measurements made once per dataset of a session, each study's kept in
            ``<out>/<name>/studies/<study>.json`` as ``{dataset: result}``: a session adds or
            replaces its own datasets' entries and keeps the others' (sessions split by dataset).
        sections: Markdown sections appended to the report.
        zoo_env: ``Dataset -> {"id": ..., "kwargs": {...}}``, the env a zoo model of this suite names
            (what ``diffgym enjoy`` makes; default: the dataset's env id without arguments).
    """

    name: str
    title: str
    description: str
    datasets: tuple[str, ...] = ()
    agents: tuple[Contender | str, ...] = ()
    budget: Budget = Budget()
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prepare: Callable[[str, Session], Dataset] = read_d4rl_file
    make_env: Callable[[Dataset], Any] = env_from_metadata
    evaluate: Evaluator = evaluate_episodes
    reference: Callable[[Dataset], str | None] = lambda dataset: dataset.name
    metric: Metric = dataclasses.field(default_factory=Metric)
    score_data: bool = True
    procedure: Procedure = train_and_evaluate
    measures: Mapping[str, Measure] = dataclasses.field(default_factory=dict)
    studies: Mapping[str, Study] = dataclasses.field(default_factory=dict)
    dataset_studies: Mapping[str, DatasetStudy] = dataclasses.field(default_factory=dict)
    sections: tuple[Section, ...] = ()
    zoo_env: Callable[[Dataset], dict[str, Any]] = lambda dataset: {
        "id": dataset.info["env_id"],
        "kwargs": {},
    }

    @property
    def contenders(self) -> tuple[Contender, ...]:
        return tuple(a if isinstance(a, Contender) else Contender(a) for a in self.agents)

    def contender(self, name: str) -> Contender:
        """The contender called ``name``.

        Raises:
            KeyError: none; the message lists the suite's agents.
        """
        for contender in self.contenders:
            if contender.name == name:
                return contender
        known = ", ".join(c.name for c in self.contenders) or "none"
        raise KeyError(f"suite {self.name!r} has no agent {name!r}; its agents: {known}")

    def label(self, name: str) -> str:
        """The table name of the contender called ``name`` (``name`` itself if it is no longer one)."""
        return next((c.label for c in self.contenders if c.name == name), name)


@dataclasses.dataclass(frozen=True)
class Session:
    """One ``diffgym benchmark`` invocation: the suite, where data and results live, budget and overrides.

    ``overrides`` are ``[TARGET:]key=value``: without a target for every agent, with an agent's
    name (or registry name) for that agent, with ``suite:`` for :attr:`Suite.params`.
    """

    suite: Suite
    data_dir: Path
    out: Path
    budget: Budget
    overrides: tuple[str, ...] = ()
    save_models: bool = False
    scratch: Path | None = None  # the session's scratch folder (run_suite makes one)
    #: run the matrix on Ray: :data:`~diffgym.zoo.benchmarks.ray_runs.LOCAL` or a cluster's address
    ray_address: str | None = None

    @property
    def folder(self) -> Path:
        """Where the suite's records go: ``<out>/<suite>/``."""
        return self.out / self.suite.name

    @property
    def workdir(self) -> Path:
        """The scratch folder of a running session (removed when it ends)."""
        if self.scratch is None:
            raise RuntimeError("the session is not running: use run_suite")
        return self.scratch

    @functools.cached_property
    def params(self) -> dict[str, Any]:
        """The suite's params with the ``suite:`` overrides applied."""
        params = dict(self.suite.params)
        for key, value in (parse_override(text) for target, text in self._targets() if target == "suite"):
            if len(key) != 1 or key[0] not in params:
                raise KeyError(
                    f"suite {self.suite.name!r} has no setting {'.'.join(key)!r}; its settings: "
                    f"{', '.join(params) or 'none'}"
                )
            params[key[0]] = value
        return params

    def validate(self) -> None:
        """Fail before anything runs on an override whose target or suite setting is unknown."""
        contenders = self.suite.contenders
        known = {"suite", *(c.name for c in contenders), *(c.spec.name for c in contenders)}
        unknown = sorted({target for target, _ in self._targets() if target is not None} - known)
        if unknown:
            raise KeyError(f"--set targets {unknown} are neither 'suite' nor agents of {self.suite.name!r}")
        self.params  # noqa: B018  (parsing the suite: overrides checks them)
        if self.budget.until_flat and self.suite.procedure is not train_and_evaluate:
            raise ValueError(
                f"--until-flat does not apply to {self.suite.name!r}: its runs train their own way"
            )

    def choose(self, agents: Sequence[str], datasets: Sequence[str]) -> tuple[list[Contender], list[str]]:
        """The contenders called ``agents`` and the ``datasets`` of the suite (all of each when empty),
        the overrides checked.

        Raises:
            KeyError: an agent or dataset the suite does not have, or an unknown override target.
        """
        suite = self.suite
        chosen = [suite.contender(name) for name in agents] or list(suite.contenders)
        unknown = sorted(set(datasets) - set(suite.datasets))
        if unknown:
            raise KeyError(
                f"suite {suite.name!r} has no dataset {unknown}; its datasets: {', '.join(suite.datasets)}"
            )
        self.validate()
        return chosen, [name for name in suite.datasets if not datasets or name in datasets]

    def overrides_for(self, contender: Contender) -> list[str]:
        """The overrides that apply to ``contender``, in order."""
        names = {None, contender.name, contender.spec.name}
        return [text for target, text in self._targets() if target in names]

    def _targets(self) -> list[tuple[str | None, str]]:
        pairs: list[tuple[str | None, str]] = []
        for override in self.overrides:
            head, sep, tail = override.partition(":")
            targeted = sep and "=" not in head
            pairs.append((head, tail) if targeted else (None, override))
        return pairs


@dataclasses.dataclass(frozen=True)
class Run:
    """One cell of the matrix: a contender on a dataset with a seed."""

    session: Session
    contender: Contender
    dataset: Dataset
    seed: int

    @property
    def name(self) -> str:
        return f"{self.contender.name}_{self.dataset.name}_s{self.seed}"

    @functools.cached_property
    def hyperparameters(self) -> tuple[str, dict[str, Any]]:
        """``(key, merged settings)`` from the contender's file, its and the session's overrides applied."""
        names = [self.dataset.name, str(self.dataset.info.get("env_id") or "")]
        overrides = [*self.contender.overrides, *self.session.overrides_for(self.contender)]
        return resolve_hyperparams(self.contender.stem, names, overrides=overrides)

    @property
    def steps(self) -> int:
        """The budget's steps, else the hyperparameters' ``n_timesteps``."""
        steps = self.session.budget.steps or split_config(self.hyperparameters[1])[0]
        if not steps:
            raise ValueError(
                f"{self.name}: no budget (give --steps or n_timesteps in {self.contender.stem}.yml)"
            )
        return int(steps)

    def make_env(self) -> Any:
        return self.session.suite.make_env(self.dataset)

    def build(self) -> Any:
        """The agent, built from the registry with this run's hyperparameters and seed."""
        _, policy, kwargs = split_config(self.hyperparameters[1])
        return self.contender.spec.make(
            policy, self.make_env(), dataset=self.dataset.data, seed=self.seed, **kwargs
        )

    def score(self, mean_return: float | None) -> float | None:
        """:func:`diffgym.scores.normalized_score` of a mean return (None without a reference)."""
        reference = self.session.suite.reference(self.dataset)
        if mean_return is None or reference is None:
            return None
        return float(normalized_score(reference, mean_return))

    def assess(self, model: Any, episodes: int) -> dict[str, Any]:
        """One evaluation point: step, returns, mean return, score, metrics, seconds, ms per env step.

        The env's first reset and the agent's sampling generator are seeded from the run's seed, so
        an evaluation of the same weights replays exactly, sampled actions included (``diffgym zoo
        check``)."""
        if (generator := getattr(model.policy, "sampling_generator", None)) is not None:
            generator.manual_seed(EVAL_SEED + self.seed)
        started = time.perf_counter()
        evaluation = self.session.suite.evaluate(model, self, episodes)
        seconds = time.perf_counter() - started
        mean = float(np.mean(evaluation.returns)) if evaluation.returns else None
        return {
            "step": int(model.num_timesteps),
            "returns": evaluation.returns,
            "mean_return": mean,
            "score": self.score(mean),
            **evaluation.metrics,
            "seconds": seconds,
            "ms_per_env_step": 1e3 * seconds / max(evaluation.env_steps, 1),
        }


class EvaluationCurve(BaseCallback):
    """Evaluates the model every ``every`` gradient steps (offline, callbacks fire once per step; the
    model's step count, so a resumed run continues its ``points``), keeping each point and the time
    spent evaluating."""

    def __init__(self, run: Run, every: int, episodes: int, points: list[dict[str, Any]]) -> None:
        super().__init__()
        self.run, self.every, self.episodes = run, every, episodes
        self.points = points
        self.seconds = 0.0

    def _on_step(self) -> bool:
        if self.every > 0 and self.model.num_timesteps % self.every == 0:
            point = self.run.assess(self.model, self.episodes)
            self.points.append(point)
            self.seconds += point["seconds"]
        return True


# ----------------------------------------------------------------------------- sessions


def run_suite(
    session: Session, agents: Sequence[str] = (), datasets: Sequence[str] = (), report_only: bool = False
) -> Path | None:
    """Run the matrix (or the chosen ``agents`` and ``datasets`` of it) and the studies, write a record
    per run, then the report; returns the Markdown report's path, or None where there is nothing to
    report yet (every chosen run held by another session, none finished)."""
    chosen, names = session.choose(agents, datasets)
    if not report_only:
        with scratch_space() as scratch:
            _run_matrix(dataclasses.replace(session, scratch=scratch), chosen, names)
        if load_report(session).is_empty:
            log(
                f"no records in {session.folder} yet: the runs are another session's, whose records make the report"
            )
            return None
    return build_report(session)


def matrix_runs(session: Session, contenders: Sequence[Contender], datasets: Sequence[Dataset]) -> list[Run]:
    """Every (dataset, contender, seed) of the session, in that order (contenders on their datasets)."""
    return [
        Run(session, contender, dataset, seed)
        for dataset in datasets
        for contender in contenders
        if contender.runs_on(dataset.name)
        for seed in range(session.budget.seeds)
    ]


def unfinished(runs: Sequence[Run]) -> list[Run]:
    """The runs without their record (same configuration), saying which are skipped."""
    finished = {run.name for run in runs if is_finished(run)}
    for name in sorted(finished):
        log(f"{name}: its record is there already (same configuration); skipped")
    return [run for run in runs if run.name not in finished]


def _run_matrix(session: Session, contenders: list[Contender], names: list[str]) -> None:
    prepared = [session.suite.prepare(name, session) for name in names]
    runs = matrix_runs(session, contenders, prepared)
    if session.budget.checkpoint_every:  # a resumed session: runs with their record are done
        runs = unfinished(runs)
    if session.ray_address is not None:
        run_on_ray(runs, session.ray_address, execute, finish_run)
    else:
        for run in runs:
            with claimed(run) as ours:
                if not ours:
                    log(f"{run.name}: another session on {session.folder} is running it; skipped")
                elif not (session.budget.checkpoint_every and is_finished(run)):  # not finished meanwhile
                    finish_run(run, execute(run))
    for study_name, study in session.suite.studies.items():
        path = session.folder / "studies" / f"{study_name}.json"
        write_json(path, _timed_record(functools.partial(study, session, prepared)))
        log(f"study {study_name} -> {path}")
    for study_name, dataset_study in session.suite.dataset_studies.items():
        path = session.folder / "studies" / f"{study_name}.json"
        for dataset in prepared:
            started = time.perf_counter()
            result = dataset_study(session, dataset)
            if result is not None:
                merge_dataset_study(path, dataset.name, result, time.perf_counter() - started)
                log(f"study {study_name} of {dataset.name} -> {path}")


def merge_dataset_study(path: Path, dataset: str, result: Any, seconds: float) -> None:
    """Put ``dataset``'s ``result`` into the per-dataset study record at ``path`` (atomically, under a
    lock): other datasets' entries, from other sessions, stay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):
        record = read_json(path) if path.exists() else {}
        results, times = (_mapping(record.get(key)) for key in ("result", "seconds"))
        write_json(
            path,
            {
                "format": RECORD_FORMAT,
                "date": now(),
                "hardware": hardware(),
                "seconds": {**times, dataset: seconds},
                "result": {**results, dataset: result},
            },
        )


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one (a study file of the older layout)."""
    return dict(value) if isinstance(value, Mapping) else {}


def finish_run(run: Run, record: dict[str, Any]) -> None:
    """Write a run's record, then drop its checkpoint."""
    path = run.session.folder / f"{run.name}.json"
    write_json(path, record)
    RunCheckpoint.of(run).clear()
    log(f"{run.name}: {_summary(record, run.session.suite.metric)} -> {path}")


def execute(run: Run) -> dict[str, Any]:
    """Build, run and measure one run; returns its record."""
    suite, started = run.session.suite, time.perf_counter()
    model = run.build()
    if run.session.budget.checkpoint_every:
        model = RunCheckpoint.of(run).resume_model(model, run)
    build_seconds = time.perf_counter() - started
    results = suite.procedure(model, run)
    extra = {name: measure(model, run) for name, measure in suite.measures.items()}
    if run.session.save_models:
        model.save(run.session.folder / "models" / run.name)
    key, values = run.hyperparameters
    wall_time = {"build_seconds": build_seconds, **results.pop("wall_time", {})}
    return {
        "format": RECORD_FORMAT,
        "suite": suite.name,
        "run": run.name,
        "date": now(),
        "diffgym": diffgym.__version__,
        "config": {
            "agent": run.contender.name,
            "registry_name": run.contender.spec.name,
            "class": run.contender.spec.class_name,
            "dataset": run.dataset.name,
            "seed": run.seed,
            "hyperparams": {"file": f"{run.contender.stem}.yml", "key": key, "values": values},
            "deterministic": run.contender.deterministic,
            "reference": _reference(suite.reference(run.dataset)),
        },
        "budget": {**dataclasses.asdict(run.session.budget), "gradient_steps": run.steps},
        "data": {
            **run.dataset.info,
            "score": run.score(run.dataset.info.get("mean_return")) if suite.score_data else None,
        },
        "hardware": hardware(),
        **results,
        "wall_time": wall_time | {"total_seconds": time.perf_counter() - started},
        "extra": extra,
    }


#: scratch folders are ``<temp dir>/<prefix><random>``
SCRATCH_PREFIX = "diffgym-bench-"
#: the file a running session holds locked in its scratch folder
_ALIVE = ".alive"


@contextlib.contextmanager
def scratch_space() -> Iterator[Path]:
    """A temporary folder, with the Minari store inside it while the block runs. The session holds a
    lock on a file in it; the folders whose lock nobody holds (sessions killed before they could
    remove theirs) are removed first."""
    remove_stale_scratch(Path(tempfile.gettempdir()))
    previous = os.environ.get("MINARI_DATASETS_PATH")
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as folder, _held(Path(folder) / _ALIVE):
        os.environ["MINARI_DATASETS_PATH"] = str(Path(folder) / "minari")
        try:
            yield Path(folder)
        finally:
            if previous is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous


def remove_stale_scratch(temp: Path) -> list[Path]:
    """Remove the scratch folders in ``temp`` whose lock file no session holds; returns them. A
    folder without one (another layout) is left alone, and so is every folder where ``flock`` is
    missing (Windows). The lock is the kernel's, so a session in another container on the same
    machine keeps its folder whatever its process ids."""
    if fcntl is None:
        return []
    removed = []
    for folder in temp.glob(f"{SCRATCH_PREFIX}*"):
        alive = folder / _ALIVE
        if not alive.is_file():
            continue
        with open(alive, "rb") as file:
            if not _locked_now(file):  # held: that session runs
                continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextlib.contextmanager
def claimed(run: Run) -> Iterator[bool]:
    """Whether this session may do ``run``: True while it holds the run's claim (``flock`` on
    ``<out>/<suite>/claims/<run>.lock``), False when another session holds it. Sessions started on
    one results folder thus share its matrix out, each run done by one of them (every run is ours
    where flock is missing)."""
    path = run.session.folder / "claims" / f"{run.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as file:
        yield _locked_now(file)


def _locked_now(file: IO[bytes]) -> bool:
    """Take ``file``'s exclusive ``flock`` without waiting: False when another process holds it,
    True once taken (and where flock is missing)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """``path`` created and locked (``flock``) while the block runs; no lock where flock is missing.
    It is locked under another name and then renamed, so that it is never seen unlocked."""
    unlocked = path.with_name(f"{path.name}.new")
    with open(unlocked, "wb") as file:
        if fcntl is not None:
            fcntl.flock(file, fcntl.LOCK_EX)
        unlocked.rename(path)
        yield


def _timed_record(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    result = measure()
    return {
        "format": RECORD_FORMAT,
        "date": now(),
        "hardware": hardware(),
        "seconds": time.perf_counter() - started,
        "result": result,
    }


def _reference(name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    try:
        return {"name": name, **get_reference(name)._asdict()}
    except KeyError:
        return None


def _summary(record: dict[str, Any], metric: Metric) -> str:
    if "final" not in record:
        return f"done in {record['wall_time']['total_seconds']:.0f} s"
    last, best = record["final"][metric.key], record["best"][metric.key]
    return f"last {metric.key} {_scaled(last, metric)}, best {_scaled(best, metric)}"


def _scaled(value: float | None, metric: Metric) -> str:
    return "-" if value is None else f"{value * metric.scale:.1f}"


def _json_attribute(file: h5py.File, name: str) -> dict[str, Any]:
    return json.loads(file.attrs[name]) if name in file.attrs else {}
