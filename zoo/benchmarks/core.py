"""The core benchmark: sampler cost against the network limit, and the data layer at 1M transitions.

Run with ``diffgym benchmark core`` (about two minutes on 2 CPU cores); writes
``zoo/results/core.json`` and ``zoo/results/core.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from diffgym.zoo.benchmarks import data_loading, samplers
from diffgym.zoo.benchmarks.report import markdown_table, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffgym benchmark core", description=__doc__)
    parser.add_argument("--transitions", type=int, default=1_000_000, help="dataset size for the data layer")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the sampler timings")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sampler_rows = samplers.measure()
    data = data_loading.run(n_transitions=args.transitions)
    path = write_report("core", {"samplers": sampler_rows, "data": data}, _markdown(sampler_rows, data))
    print(path.read_text())
    return 0


def _markdown(sampler_rows: list[dict[str, Any]], data: dict[str, Any]) -> str:
    sampler_table = markdown_table(
        ["model", "batch", "sampler", "denoiser calls", "one forward (ms)", "sample (ms)", "ratio"],
        [
            [
                r["model"],
                r["batch"],
                r["sampler"],
                r["steps"],
                f"{r['forward_ms']:.3f}",
                f"{r['sample_ms']:.2f}",
                f"{r['ratio']:.2f}",
            ]
            for r in sampler_rows
        ],
    )
    setup = data["setup"]
    operations = [name for name in data if name != "setup"]
    data_table = markdown_table(
        ["operation", "seconds", "peak RSS above baseline (MB)"],
        [[name, data[name]["seconds"], data[name]["peak_rss_mb"]] for name in operations],
    )
    return "\n\n".join(
        [
            "# Core benchmark",
            "## Sampling cost relative to the network",
            f"ratio = sampling time ÷ (denoiser calls × one bare forward at the same batch); T = "
            f"{samplers.NUM_TIMESTEPS} training steps, no grad, median of repeats.",
            sampler_table,
            "## Data layer",
            f"A D4RL-layout file of {setup['n_transitions']:,} transitions ({setup['obs_dim']}-dim observations, "
            f"{setup['act_dim']}-dim actions, episodes of {setup['episode_length']} steps) imported into Minari "
            f"in {setup['build_import_d4rl_seconds']} s; each operation below runs in a fresh process. "
            f"Segments: H = {setup['horizon']}, batches of {setup['batch_size']}.",
            data_table,
        ]
    )
