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


#: where cgroup file systems are mounted, and where this process's cgroups are listed
CGROUP_ROOT = "/sys/fs/cgroup"
SELF_CGROUP = "/proc/self/cgroup"


def available_cores(cgroup_root: str = CGROUP_ROOT, self_cgroup: str = SELF_CGROUP) -> int:
    """Cores this process may run on: its CPU affinity where the OS has one, capped by its cgroup's CPU
    quota where one is set (a container started with ``--cpus 2`` on a 64-core host gets 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup_root, self_cgroup)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def cpu_quota(cgroup_root: str = CGROUP_ROOT, self_cgroup: str = SELF_CGROUP) -> float | None:
    """The CPUs' worth of time this process's cgroup may use: the smallest quota on its cgroup and its
    ancestors (cgroup v2 ``cpu.max``; v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), found
    through ``self_cgroup``; None where no quota is set or readable.

    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "own").write_text("0::/")  # a container's own cgroup namespace
    >>> _ = (root / "cpu.max").write_text("150000 100000")
    >>> cpu_quota(str(root), str(root / "own"))
    1.5
    >>> _ = (root / "cpu.max").write_text("max 100000")
    >>> cpu_quota(str(root), str(root / "own")) is None
    True
    """
    quotas = [quota for folder in _cgroup_folders(cgroup_root, self_cgroup) if (quota := _quota(folder))]
    return min(quotas, default=None)


def _cgroup_folders(cgroup_root: str, self_cgroup: str, controller: str = "cpu") -> list[Path]:
    """This process's cgroup folders for ``controller`` and their ancestors up to the mount, innermost
    first (v2 from the ``0::`` line, v1 from the line naming the controller); the mount's own folders
    where ``self_cgroup`` cannot be read."""
    root = Path(cgroup_root)
    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    folders: list[Path] = []
    for line in lines:
        number, controllers, path = [*line.split(":", 2), "", ""][:3]
        if number == "0" and controllers == "":  # v2: at the root, or beside v1 ("hybrid")
            unified = root / "unified"
            mount = unified if not (root / "cgroup.controllers").exists() and unified.is_dir() else root
        elif controller in controllers.split(","):
            mount = next(
                (root / name for name in (controllers, controller) if (root / name).is_dir()),
                root / controller,
            )
        else:
            continue
        inner = mount / path.lstrip("/")
        folders += [inner, *(parent for parent in inner.parents if parent.is_relative_to(mount))]
    return folders or [root, root / controller]


def _quota(folder: Path) -> float | None:
    """The quota set in one cgroup folder, in CPUs (None: none or unreadable)."""
    try:
        if (folder / "cpu.max").is_file():
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (folder / "cpu.cfs_quota_us").is_file():
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            return None if quota_us <= 0 else quota_us / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def _cgroup_cpu_seconds(cgroup_root: str = CGROUP_ROOT, self_cgroup: str = SELF_CGROUP) -> float | None:
    """CPU seconds used so far by this process's cgroup (v2 ``cpu.stat`` ``usage_usec``; v1
    ``cpuacct.usage``), None where it cannot be read."""
    for folder in (
        _cgroup_folders(cgroup_root, self_cgroup)[:1]
        + _cgroup_folders(cgroup_root, self_cgroup, "cpuacct")[:1]
    ):
        try:
            if (folder / "cpu.stat").is_file():
                for line in (folder / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec"):
                        return int(line.split()[1]) / 1e6
            if (folder / "cpuacct.usage").is_file():
                return int((folder / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            continue
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
    """How many CPUs are busy now, sampled over ``seconds``: in this process's cgroup where a CPU
    quota limits it (a container: the host's other work is not its concern), else on the whole
    machine from ``/proc/stat``; the 1-minute load average where neither can be read."""
    if cpu_quota() is not None and (used := _cgroup_cpu_seconds()) is not None:
        started = time.perf_counter()
        time.sleep(seconds)
        after = _cgroup_cpu_seconds()
        if after is not None:
            return (after - used) / (time.perf_counter() - started)
    before = _cpu_times()
    time.sleep(seconds)
    after_times = _cpu_times()
    if before is None or after_times is None or after_times[1] == before[1]:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return (after_times[0] - before[0]) / (after_times[1] - before[1]) * (os.cpu_count() or 1)


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
