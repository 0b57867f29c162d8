"""The two measurements behind the memory-mapped path's bounded memory (issue 14, item 13).

On the benchmark's hopper-like data of N transitions (``zoo/benchmarks/data_loading.py``), each
task in a fresh process, its peak anonymous memory above the process's baseline polled every
millisecond (``data_loading._PeakRSS``), alternated A, B, A, B:

- ``episodes``: every episode read through Minari with the file opened once
  (``dataset.iterate_episodes()``) against :func:`diffgym.data.iterate_episodes` (reopened every
  ``EPISODES_PER_OPEN`` episodes);
- ``chunks``: what an agent does with the cache (``data_loading._task_mapped_training_data``:
  statistics and IQL's reward scale read in chunks, then 100 batches) with chunks of 64 MiB against
  16 MiB of observations (``diffgym.batches.CHUNK_BYTES``).

Writes ``probes.json`` beside this script; from the repository root, on a quiet machine:

    python zoo/results/larger-than-memory/probes.py --transitions 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from diffgym.zoo.benchmarks import data_loading
from diffgym.zoo.benchmarks.report import hardware, now, write_json

REPEATS = 2


def child(task: str, variant: str) -> dict[str, Any]:
    """One measured task in this (fresh) process."""
    import torch

    import diffgym.batches
    from diffgym.data import iterate_episodes

    torch.set_num_threads(1)
    dataset = data_loading._load(data_loading._DATASET_ID)
    baseline = data_loading._anon_mb()
    monitor, started = data_loading._PeakRSS(), time.perf_counter()
    monitor.start()
    if task == "episodes":
        episodes = dataset.iterate_episodes() if variant == "one opening" else iterate_episodes(dataset)
        count = sum(1 for _ in episodes)
    else:
        diffgym.batches.CHUNK_BYTES = int(variant.split()[0]) * 2**20
        data_loading._task_mapped_training_data("", 0, 256)
        count = 0
    seconds = time.perf_counter() - started
    _, peak_anon = monitor.stop()
    return {"seconds": round(seconds, 3), "peak_anon_mb": round(peak_anon - baseline, 1), "episodes": count}


def measure(task: str, variant: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", task, variant],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return {"task": task, "variant": variant, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=10_000_000)
    parser.add_argument("--child", nargs=2, metavar=("TASK", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    variants = {"episodes": ("one opening", "reopened"), "chunks": ("64 MiB", "16 MiB")}
    with tempfile.TemporaryDirectory(prefix="diffgym-probes-") as root:
        env = {**os.environ, "MINARI_DATASETS_PATH": str(Path(root) / "minari"), "OMP_NUM_THREADS": "1"}
        data_loading._child(env, "build", root, args.transitions, 0)
        subprocess.run(  # the cache, before the chunk probes read it
            [sys.executable, "-c", f"from diffgym.data import map_episodes; map_episodes({data_loading._DATASET_ID!r})"],
            env=env, check=True,
        )  # fmt: skip
        rows = [
            measure(task, variant, env)
            for task, pair in variants.items()
            for _ in range(REPEATS)
            for variant in pair
        ]
    record = {"date": now(), "hardware": hardware(), "transitions": args.transitions, "rows": rows}
    write_json(Path(__file__).with_name("probes.json"), record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
