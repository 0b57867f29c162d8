"""Training from a dataset larger than the memory a process may use (issue 14, item 13).

Builds the benchmark's hopper-like dataset of N transitions (``zoo/benchmarks/data_loading.py``),
then trains IQL inside a Linux memory cgroup (v1) whose limit is below the dataset's own size:

1. ``dataset_in_memory=False`` (the memory-mapped path): the cache is built, then
   ``data_loading.AGENT_STEPS`` gradient steps;
2. the same without the access advice (:func:`diffgym.data.mapped.advise_access` made a no-op, so
   the kernel reads ahead around every sampled row), for :data:`UNADVISED_STEPS` steps;
3. the default in-memory path, for ``data_loading.AGENT_STEPS`` steps.

The cgroup charges the page cache of the files read to the process, but the kernel may reclaim it;
anonymous memory above the limit gets the process killed (exit status -9). Each run reports its exit
status, the seconds to build the model and to learn, the bytes read from disk (``/proc/self/io``),
its peak resident memory (VmHWM, mapped file pages included) and the cgroup's peak usage (page cache
included). Writes ``memory_limit.json`` beside this script.

Needs root (it creates ``/sys/fs/cgroup/memory/diffgym-memory-limit``) and about 240 bytes of disk
per transition (the D4RL file, its Minari import and the cache); from the repository root:

    python zoo/results/larger-than-memory/memory_limit.py --transitions 30000000 --limit-mb 700
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from diffgym.zoo.benchmarks import data_loading
from diffgym.zoo.benchmarks.report import hardware, now, write_json

CGROUP = Path("/sys/fs/cgroup/memory/diffgym-memory-limit")
#: gradient steps of the run without access advice (each step reads gigabytes from disk there)
UNADVISED_STEPS = 50
_PROGRAM = """
import sys, time, json
import torch
torch.set_num_threads(1)
import diffgym.batches
from diffgym import IQL

def read_bytes():
    return int(next(line for line in open("/proc/self/io") if line.startswith("read_bytes")).split()[1])

if sys.argv[2] == "unadvised":
    diffgym.batches.advise_access = lambda arrays, pattern: None
started, first = time.perf_counter(), read_bytes()
model = IQL("MlpPolicy", "Hopper-v5", dataset=sys.argv[1], dataset_in_memory=sys.argv[2] == "in-memory",
            batch_size=256, seed=0)
built, second = time.perf_counter(), read_bytes()
model.learn(int(sys.argv[3]))
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"build_seconds": round(built - started, 1), "build_read_gib": round((second - first) / 2**30, 2),
                  "learn_seconds": round(time.perf_counter() - built, 1),
                  "learn_read_gib": round((read_bytes() - second) / 2**30, 2),
                  "peak_rss_mb": int(status["VmHWM"].split()[0]) // 1024}))
"""


def run_in_cgroup(path: str, steps: int, env: dict[str, str]) -> dict[str, object]:
    """IQL on the dataset in a fresh Python inside the cgroup (``path``: mapped, unadvised or
    in-memory); what the program prints, its exit status and the cgroup's peak usage."""
    Path("/proc/sys/vm/drop_caches").write_text("1")  # each run starts with nothing of the data cached
    (CGROUP / "memory.max_usage_in_bytes").write_text("0")
    shell = f'echo $$ > {CGROUP}/cgroup.procs && exec "{sys.executable}" -c "$0" "$1" "$2" "$3"'
    done = subprocess.run(
        ["sh", "-c", shell, _PROGRAM, data_loading._DATASET_ID, path, str(steps)],
        env=env,
        capture_output=True,
        text=True,
    )
    peak = int((CGROUP / "memory.max_usage_in_bytes").read_text()) / 2**20
    result: dict[str, object] = {
        "steps": steps,
        "returncode": done.returncode,
        "cgroup_peak_mb": round(peak, 1),
    }
    if done.returncode == 0:
        result |= json.loads(done.stdout.strip().splitlines()[-1])
    else:
        result["stderr_tail"] = done.stderr.strip().splitlines()[-3:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=30_000_000)
    parser.add_argument("--limit-mb", type=int, default=700)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in each run (the record's hardware names this process's threads)
    if not CGROUP.parent.is_dir() or os.geteuid() != 0:
        raise SystemExit(f"needs root and cgroup v1's memory controller at {CGROUP.parent}")
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.limit_in_bytes").write_text(str(args.limit_mb * 2**20))
    steps = data_loading.AGENT_STEPS
    with tempfile.TemporaryDirectory(prefix="diffgym-memory-limit-") as root:
        env = {**os.environ, "MINARI_DATASETS_PATH": str(Path(root) / "minari"), "OMP_NUM_THREADS": "1"}
        build = data_loading._child(env, "build", root, args.transitions, 0)  # outside the cgroup
        results = {  # the first run builds the cache, inside the limit too
            "memory-mapped (dataset_in_memory=False)": run_in_cgroup("mapped", steps, env),
            "memory-mapped, without the access advice": run_in_cgroup("unadvised", UNADVISED_STEPS, env),
            "in memory (default)": run_in_cgroup("in-memory", steps, env),
        }
    record = {
        "date": now(),
        "hardware": hardware(),
        "transitions": args.transitions,
        "arrays_mb": data_loading.arrays_mb(args.transitions),
        "minari_file_mb": build["minari_file_mb"],
        "limit_mb": args.limit_mb,
        "results": results,
    }
    CGROUP.rmdir()  # empty again: every run has ended
    write_json(Path(__file__).with_name("memory_limit.json"), record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
