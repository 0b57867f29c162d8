"""The core benchmark: sampler cost against the network limit, and the data layer at 1M transitions.

No agents: two studies, each one record. ``samplers``: for a Diffusion-QL-sized MLP and a
Diffuser-sized U-Net, the time of a whole sampling chain ÷ (denoiser calls × one bare forward at
the same batch). ``data``: a D4RL-layout file of ``suite:transitions`` random hopper-sized rows,
imported into Minari, then each read path timed in a fresh process with its peak memory, the
memory-mapped path (``dataset_in_memory=False``) among them. ``mapped``: the memory-mapped path alone
(building its cache, reading it in chunks, an agent training on it) at each size of
``suite:mapped_transitions`` (1M, 10M and 30M rows: its memory must not grow with the data; the
in-memory path is not run there), next to the arrays' own size.

    diffgym benchmark core                              # about 10 minutes on 2 CPU cores (up to 30M rows)
    diffgym benchmark core --set suite:transitions=20000 --set 'suite:mapped_transitions=[50000]'
"""

from __future__ import annotations

from typing import Any

from diffgym.zoo.benchmarks import data_loading, samplers
from diffgym.zoo.benchmarks.harness import Dataset, Report, Session, Suite
from diffgym.zoo.benchmarks.report import markdown_table


def sampler_study(session: Session, datasets: list[Dataset]) -> dict[str, Any]:
    return {"rows": samplers.measure()}


def data_study(session: Session, datasets: list[Dataset]) -> dict[str, Any]:
    return data_loading.run(n_transitions=session.params["transitions"], scratch=session.workdir)


def mapped_study(session: Session, datasets: list[Dataset]) -> dict[str, Any]:
    sizes = session.params["mapped_transitions"]
    sizes = [sizes] if isinstance(sizes, int) else sizes
    valid = isinstance(sizes, list) and sizes and all(type(n) is int and n > 0 for n in sizes)
    if not valid:
        raise ValueError(f"suite:mapped_transitions takes a number of rows or a list of them, not {sizes!r}")
    return {"sizes": [data_loading.run_mapped(n_transitions=n, scratch=session.workdir) for n in sizes]}


def sampler_section(report: Report) -> str:
    result = report.study("samplers")
    if result is None:
        return ""
    rows = [
        [r["model"], r["batch"], r["sampler"], r["steps"], f"{r['forward_ms']:.3f}", f"{r['sample_ms']:.2f}",
         f"{r['ratio']:.2f}"]
        for r in result["rows"]
    ]  # fmt: skip
    header = ["model", "batch", "sampler", "denoiser calls", "one forward (ms)", "sample (ms)", "ratio"]
    return "\n\n".join(
        [
            "## Sampling cost relative to the network",
            f"ratio = sampling time ÷ (denoiser calls × one bare forward at the same batch); T = "
            f"{samplers.NUM_TIMESTEPS} training steps, no grad, medians by `torch.utils.benchmark`.",
            markdown_table(header, rows),
        ]
    )


def data_section(report: Report) -> str:
    data = report.study("data")
    if data is None:
        return ""
    setup = data["setup"]
    operations = [name for name in data if name != "setup"]
    table = markdown_table(
        ["operation", "seconds", "peak RSS above baseline (MB)", "peak anonymous (MB)"],
        [[name, data[name]["seconds"], data[name]["peak_rss_mb"], data[name].get("peak_anon_mb", "")]
         for name in operations],
    )  # fmt: skip
    return "\n\n".join(
        [
            "## Data layer",
            f"A D4RL-layout file of {setup['n_transitions']:,} transitions ({setup['obs_dim']}-dim observations, "
            f"{setup['act_dim']}-dim actions, episodes of {setup['episode_length']} steps) imported into Minari "
            f"in {setup['build_import_d4rl_seconds']} s; each operation below runs in a fresh process. "
            f"Segments: H = {setup['horizon']}, batches of {setup['batch_size']}.",
            table,
            mapped_table(report),
        ]
    )


def mapped_table(report: Report) -> str:
    """Loading time and peak memory of the in-memory and memory-mapped paths beside the arrays' size."""
    data, mapped = report.study("data"), report.study("mapped")
    in_memory = [("in memory (load_transitions)", "load_transitions")]
    tasks = [("memory-mapped: build the cache", "map_episodes"),
             ("memory-mapped: open, statistics, 100 batches", "mapped_training_data"),
             (f"memory-mapped: IQL built, {data_loading.AGENT_STEPS} gradient steps", "mapped_agent")]  # fmt: skip
    studies = [(data, in_memory)] if data is not None else []
    if mapped is not None:  # records before the study took several sizes hold one
        studies += [(result, tasks) for result in mapped.get("sizes", [mapped])]
    rows = [
        [f"{result['setup']['n_transitions']:,}", result["setup"]["arrays_mb"], label, result[task]["seconds"],
         result[task]["peak_rss_mb"], result[task]["peak_anon_mb"]]
        for result, chosen in studies
        for label, task in chosen
        if task in result
    ]  # fmt: skip
    header = ["transitions", "arrays (MB)", "path", "seconds", "peak RSS (MB)", "peak anonymous (MB)"]
    return "\n\n".join(
        [
            "### Datasets larger than memory",
            "Peak memory above each fresh process's baseline (the agent's: with its modules imported). RSS "
            "counts the resident pages of memory-mapped files, which the kernel drops under memory pressure; "
            "anonymous memory is what must fit in RAM. The in-memory path is run at the data study's size only "
            "(its memory-mapped rows there are in the table above).",
            markdown_table(header, rows),
        ]
    )


SUITE = Suite(
    name="core",
    title="Core benchmark",
    description="The diffusion engine and the data layer, without agents.",
    params={"transitions": 1_000_000, "mapped_transitions": [1_000_000, 10_000_000, 30_000_000]},  # rows
    studies={"samplers": sampler_study, "data": data_study, "mapped": mapped_study},
    sections=(sampler_section, data_section),
)
