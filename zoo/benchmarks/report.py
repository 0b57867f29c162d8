"""What every benchmark report carries: the hardware, the software, and JSON + Markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffgym.serialization import atomic_file

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def hardware() -> dict[str, Any]:
    """CPU model, core count, memory, and the torch build and threads used."""
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
    gpu = info["gpu"] or "no GPU"
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {gpu}; "
        f"torch {info['torch']} ({info['torch_threads']} threads), Python {info['python']}"
    )


def median_ms(call: Callable[[], Any], repeats: int = 50) -> float:
    """Median wall time of ``call()`` in milliseconds, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_text(path: Path, content: str) -> None:
    """Replace ``path`` with ``content`` only once it is fully written (a killed run leaves the old file)."""
    with atomic_file(path) as file:
        file.write(content.encode())


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, written atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_report(name: str, results: dict[str, Any], markdown: str, directory: Path = RESULTS_DIR) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` (atomically) and return the Markdown path."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    payload = {"benchmark": name, "date": stamp, "hardware": hardware(), **results}
    write_json(directory / f"{name}.json", payload)
    write_text(
        directory / f"{name}.md", f"{markdown}\n\nRun {stamp} on {hardware_line(payload['hardware'])}.\n"
    )
    return directory / f"{name}.md"
