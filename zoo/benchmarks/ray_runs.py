"""A suite's matrix on Ray: each run (agent × dataset × seed) a Ray task with one CPU.

``diffgym benchmark SUITE --ray`` starts a Ray instance on this machine (one task per CPU Ray
finds); ``--ray ADDRESS`` joins a running cluster (``ray start --head`` on one machine, ``ray
start --address ...`` on the others). Each task builds, trains and evaluates one run with one torch
thread and returns its record; this process writes the records and the report, exactly as without
``--ray`` (a test compares the two). Ray retries a task whose worker died; with
``--checkpoint-every N`` the retry resumes from the run's last checkpoint.

Tasks run in other processes: what this process registered at run time (a score reference by
``register_reference``, an agent added to the registry in code) is not there; register it where
the workers import it (an entry point, or the module that defines the suite).

On a cluster, every machine needs diffgym installed and the paths this process uses: the data
folder and the results folder (``--data-dir``, ``--out``) on a shared filesystem, since the tasks
read the data and write checkpoints there. Ray is an extra: ``pip install 'diffgym[ray]'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.harness import Run

__all__ = ["LOCAL", "run_on_ray"]

#: ``--ray`` without an address: a Ray instance started on this machine for the session
LOCAL = "local"

Execute = Callable[["Run"], dict[str, Any]]


def _execute_with_one_thread(execute: Execute, run: Run) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return execute(run)


def run_on_ray(
    runs: Sequence[Run], address: str, execute: Execute, finish: Callable[[Run, dict[str, Any]], None]
) -> None:
    """``execute`` every run as a Ray task (one CPU each) on ``address`` (:data:`LOCAL`: start one
    here), calling ``finish(run, record)`` in this process as each completes.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'diffgym[ray]'") from None
    variables = {"OMP_NUM_THREADS": "1"}
    if "MINARI_DATASETS_PATH" in os.environ:  # the session's store of prepared data
        variables["MINARI_DATASETS_PATH"] = os.environ["MINARI_DATASETS_PATH"]
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=None if address == LOCAL else address,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    task = ray.remote(num_cpus=1, runtime_env={"env_vars": variables})(_execute_with_one_thread)
    pending = {task.remote(execute, run): run for run in runs}
    try:
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            finish(pending.pop(ready), ray.get(ready))
    finally:
        for reference in pending:
            ray.cancel(reference)
        if started_here:
            ray.shutdown()
