"""What every benchmark report carries: the hardware, latencies, Markdown tables and atomic files."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import benchmark

from diffgym.serialization import atomic_file


def hardware() -> dict[str, Any]:
    """CPU model, core count, memory, GPU, and the torch build and threads used."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def hardware_line(info: dict[str, Any]) -> str:
    """:func:`hardware` in one sentence."""
    gpu = info["gpu"] or "no GPU"
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {gpu}; "
        f"torch {info['torch']} ({info['torch_threads']} threads), Python {info['python']}"
    )


def log(message: str) -> None:
    """A progress line with the time of day, flushed at once (runs go to log files)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def latency_ms(call: Callable[[], Any], min_run_time: float = 0.2) -> float:
    """Median time of ``call()`` in milliseconds, by ``torch.utils.benchmark`` at the current thread count.

    ``Timer.blocked_autorange`` warms up, picks how many calls make one timed block and repeats
    blocks for at least ``min_run_time`` seconds; the median is over blocks.
    """
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
    return float(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    """``"m"`` for one value, ``"m ± s"`` (population std) for several, ``"-"`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_text(path: Path, content: str) -> None:
    """Replace ``path`` with ``content`` only once it is fully written (a killed run leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as file:
        file.write(content.encode())


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, written atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def now() -> str:
    """The time of a record, in UTC to the minute."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def ranking_value(value: float | None) -> float:
    """``value``, or -inf when it is missing or not finite (a diverged run ranks last, never first).

    >>> ranking_value(float("nan")), ranking_value(None), ranking_value(2.5)
    (-inf, -inf, 2.5)
    """
    return float(value) if value is not None and math.isfinite(value) else -math.inf


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
