"""Resumable benchmark runs: a run's model and progress, saved every ``checkpoint_every`` steps.

A run with ``Budget.checkpoint_every = N`` (``diffgym benchmark --checkpoint-every N``) trains in
blocks of N gradient steps. After each block it writes, in ``<out>/<suite>/checkpoints/<run>/``,
``model-<step>.zip`` (:meth:`~diffgym.algorithm.OfflineAlgorithm.save`: the networks, the
optimisers, the training and sampling generators and the step counts), then ``progress.json``
(which model file is current, the evaluation points so far, the seconds spent, and what the run
is: agent, dataset, seed, hyperparameters and budget), then removes the older model. Each file is
written to a temporary name and renamed, and the progress file names its model, so a run killed
at any moment leaves a whole checkpoint.

Starting the same run again (same command) loads the checkpoint and trains the remaining steps:
the result equals that of an uninterrupted run, evaluation points and final score included (a test
interrupts a run and compares). A checkpoint of a different run (other hyperparameters, budget or
seed) is not resumed: the run starts afresh and says so. The checkpoint is removed once the run's
record is written, and a run whose record is there already (same identity) is skipped, so one
command, repeated until it finishes, completes a whole matrix. The same command started twice on one
results folder (two processes, two machines on a shared disk) shares the matrix out: each run is
claimed by a lock while it runs, and a session skips the runs another one holds.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgym.zoo.benchmarks.report import log, write_json

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.harness import Run

__all__ = ["Progress", "RunCheckpoint", "is_finished", "record_identity", "run_identity"]


@dataclasses.dataclass
class Progress:
    """What a run has done besides its model: evaluation points, seconds spent so far and, for a run
    trained until its loss flattens, the state of that stop (:class:`~diffgym.callbacks.StopTrainingOnLossPlateau`)."""

    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    plateau: dict[str, Any] = dataclasses.field(default_factory=dict)


def _identity(
    suite: Any, agent: Any, dataset: Any, seed: Any, key: Any, values: Any, budget: dict[str, Any]
) -> dict[str, Any]:
    """What makes two runs the same run, as JSON reads it back: the budget without how many seeds the
    session has or how often it checkpoints, which change no run's result (and without ``until_flat``
    where it is off, as records written before it existed have none)."""
    outcome_budget = {
        name: value
        for name, value in budget.items()
        if name not in ("seeds", "checkpoint_every") and not (name == "until_flat" and not value)
    }
    fields = {"suite": suite, "agent": agent, "dataset": dataset, "seed": seed,
              "hyperparams": {"key": key, "values": values}, "budget": outcome_budget}  # fmt: skip
    return json.loads(json.dumps(fields, default=str))


def run_identity(run: Run) -> dict[str, Any]:
    """The identity of a run to do: a checkpoint is resumed, and a record counts, only for its own run."""
    key, values = run.hyperparameters
    budget = {**dataclasses.asdict(run.session.budget), "gradient_steps": run.steps}
    return _identity(
        run.session.suite.name, run.contender.name, run.dataset.name, run.seed, key, values, budget
    )


def is_finished(run: Run) -> bool:
    """Whether the run's record exists and is of this very run (same identity): a checkpointed session
    started again skips it."""
    path = run.session.folder / f"{run.name}.json"
    if not path.exists():
        return False
    return bool(record_identity(json.loads(path.read_text())) == run_identity(run))


def record_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The identity of the run a record was written by (see :func:`run_identity`)."""
    config, hyperparams = record.get("config", {}), record.get("config", {}).get("hyperparams", {})
    return _identity(
        record.get("suite"), config.get("agent"), config.get("dataset"), config.get("seed"),
        hyperparams.get("key"), hyperparams.get("values"), record.get("budget") or {},
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """The checkpoint folder of one run."""

    folder: Path

    @classmethod
    def of(cls, run: Run) -> RunCheckpoint:
        return cls(run.session.folder / "checkpoints" / run.name)

    @property
    def progress_path(self) -> Path:
        return self.folder / "progress.json"

    def _saved(self, run: Run) -> dict[str, Any] | None:
        """The progress file's content when it is this run's (see :func:`run_identity`), else None."""
        if not self.progress_path.exists():
            return None
        saved = json.loads(self.progress_path.read_text())
        return saved if saved.get("run") == run_identity(run) else None

    def resume_model(self, model: Any, run: Run) -> Any:
        """The checkpoint's model when this run has one, else ``model``. A checkpoint of another run is
        left for :meth:`save` to replace."""
        saved = self._saved(run)
        if saved is None:
            if self.progress_path.exists():
                log(
                    f"{run.name}: the checkpoint in {self.folder} is of another configuration; starting afresh"
                )
            return model
        loaded = type(model).load(self.folder / saved["model"], env=run.make_env(), dataset=run.dataset.data)
        log(f"{run.name}: resuming from gradient step {loaded.num_timesteps} ({self.folder})")
        return loaded

    def progress(self, run: Run) -> Progress:
        """What the checkpoint of this run had done besides its model (nothing without one)."""
        saved = self._saved(run)
        return Progress() if saved is None else Progress(**saved["progress"])

    def save(self, model: Any, run: Run, progress: Progress) -> None:
        """The model, then the progress naming it (each atomically), then older models go."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"model-{model.num_timesteps}.zip"
        model.save(self.folder / name)
        record = {"run": run_identity(run), "model": name, "progress": dataclasses.asdict(progress)}
        write_json(self.progress_path, record)
        for old in self.folder.glob("model-*.zip"):
            if old.name != name:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
