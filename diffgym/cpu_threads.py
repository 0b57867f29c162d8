"""How many torch threads a training process takes: the cores that nothing else is using.

Measured on a 2-core machine (``zoo/results/speed/``, Diffusion-QL): alone, 2 threads train
1.7x faster than 1; with one other busy process, 2 threads run at half the speed of 1 (their OpenMP
workers spin waiting for a core that is taken), and OpenMP's passive wait policy only halves that
loss while costing 60 % when the machine is idle. So ``diffgym train`` takes the idle cores
(``--threads auto``): the cores this process may use (its affinity, capped by a cgroup's CPU quota)
minus the cores busy right now (sampled from
``/proc/stat`` over a quarter second; where there is none, the 1-minute load average, which lags a
job that has just ended or started), at least 1.

>>> choose_threads(cores=2, load=0.1)
2
>>> choose_threads(cores=2, load=1.2)
1
>>> choose_threads(cores=2, load=7.0)
1
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

__all__ = ["available_cores", "busy_cores", "choose_threads", "cpu_quota", "parse_threads"]


def available_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """Cores this process may run on: its CPU affinity where the OS has one, capped by the cgroup's CPU
    quota where one is set (a container started with ``--cpus 2`` on a 64-core host gets 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def cpu_quota(cgroup_root: str = "/sys/fs/cgroup") -> float | None:
    """The CPUs' worth of time the cgroup may use (cgroup v2 ``cpu.max``, else v1
    ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us``); None where no quota is set or readable.

    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "cpu.max").write_text("150000 100000")
    >>> cpu_quota(str(root))
    1.5
    >>> _ = (root / "cpu.max").write_text("max 100000")
    >>> cpu_quota(str(root)) is None
    True
    """
    root = Path(cgroup_root)
    try:
        if (root / "cpu.max").exists():
            quota, period = (root / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").exists():
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat`` (None where it cannot be read)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = 0.25) -> float:
    """How many CPUs are busy now: their busy share over ``seconds`` times the CPU count; the
    1-minute load average where ``/proc/stat`` is missing."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def choose_threads(cores: int | None = None, load: float | None = None) -> int:
    """``cores - round(load)``, at least 1: by default this process's cores and :func:`busy_cores`."""
    cores = available_cores() if cores is None else cores
    load = busy_cores() if load is None else load
    return max(1, cores - round(load))


def parse_threads(value: str) -> int | None:
    """``--threads``: a positive count, or ``"auto"`` (None: :func:`choose_threads` decides)."""
    if value == "auto":
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise ValueError(f"--threads takes a positive number or 'auto', got {value!r}")
