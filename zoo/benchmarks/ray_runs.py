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

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from diffgym.zoo.benchmarks.harness import Run

__all__ = ["LOCAL", "connect", "in_worker", "run_on_ray"]

#: ``--ray`` without an address: a Ray instance started on this machine for the session
LOCAL = "local"

Execute = Callable[["Run"], dict[str, Any]]
Result = TypeVar("Result")


def in_worker(variables: dict[str, str], work: Callable[..., Result], *args: Any) -> Result:
    """``work(*args)`` in a Ray worker: with the driver's environment ``variables`` (the session's
    data store; also set as the job's environment where :func:`connect` started Ray) and one torch
    thread, as Ray gives each task one CPU."""
    import torch

    os.environ.update(variables)
    torch.set_num_threads(1)
    return work(*args)


def worker_variables() -> dict[str, str]:
    """What a worker needs of this process's environment: one OpenMP thread, the session's data store."""
    variables = {"OMP_NUM_THREADS": "1"}
    if "MINARI_DATASETS_PATH" in os.environ:
        variables["MINARI_DATASETS_PATH"] = os.environ["MINARI_DATASETS_PATH"]
    return variables


@contextlib.contextmanager
def connect(address: str) -> Iterator[Any]:
    """The ``ray`` module, joined to the cluster at ``address`` (:data:`LOCAL`: a Ray instance started
    here and stopped after the block); a Ray this process had already started is used as it is.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'diffgym[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=None if address == LOCAL else address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            runtime_env={"env_vars": worker_variables()},  # set before each worker starts
        )
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_on_ray(
    runs: Sequence[Run], address: str, execute: Execute, finish: Callable[[Run, dict[str, Any]], None]
) -> None:
    """``execute`` every run as a Ray task (one CPU each) on ``address`` (:data:`LOCAL`: start one
    here), calling ``finish(run, record)`` in this process as each completes.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
    """
    variables = worker_variables()
    with connect(address) as ray:
        task = ray.remote(num_cpus=1)(in_worker)
        pending = {task.remote(variables, execute, run): run for run in runs}
        try:
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                finish(pending.pop(ready), ray.get(ready))
        finally:
            for reference in pending:
                ray.cancel(reference)
