"""Gradient steps/s (and optionally acting latency) of one registered agent on hopper-medium, on CPU.

The agent is built as ``diffgym train`` builds it: its zoo hyperparameters for the key that fits
``hopper-medium`` (``zoo/hyperparams/<agent>.yml``), the Hopper-v5 env, seed 0, ``device="cpu"``.
Training: 20 warm-up gradient steps (40 with ``--compile``, whose first steps compile), then
``--steps`` timed ones. ``--predict``: the median time of ``predict(obs, deterministic=True)`` at
batch 1 over 200 calls, after 20 warm-up calls.

Usage (from the repository root)::

    python zoo/results/speed/steps.py AGENT [--steps N] [--precision fp32|bf16] [--compile]
        [--threads N] [--predict] [--data FILE]

Prints one JSON line. ``OMP_WAIT_POLICY`` is read from the environment and only reported.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]  # the repository root
DATA = Path("../shared/datasets/hopper-medium.hdf5")  # from the repository root


def main() -> None:
    parser = argparse.ArgumentParser(description="Gradient steps/s of a registered agent on hopper-medium.")
    parser.add_argument("agent", help="registered agent name, e.g. dql")
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps")
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="passed on only when given")
    parser.add_argument("--compile", action="store_true", help="compile_networks=True")
    parser.add_argument("--linear-backend", choices=("aten", "onednn"), help="passed on only when given")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--predict", action="store_true", help="also time predict() at batch 1")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="D4RL-layout HDF5 file (relative: from the repo root)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # before gymnasium and diffgym are imported

    import gymnasium as gym

    import diffgym
    from diffgym import registry
    from diffgym.zoo.hyperparameters import resolve_hyperparams, split_config

    spec = registry.get(args.agent)
    key, config = resolve_hyperparams(spec.hyperparams_name, ["hopper-medium"])
    _, policy, kwargs = split_config(config)
    if args.precision:
        kwargs["precision"] = args.precision
    if args.compile:
        kwargs["compile_networks"] = True
    if args.linear_backend:
        kwargs["linear_backend"] = args.linear_backend
    kwargs["device"] = "cpu"
    env = gym.make("Hopper-v5")
    model = spec.make(policy, env, dataset=str(ROOT / args.data), seed=0, **kwargs)

    warm = time.perf_counter()
    model.learn(40 if args.compile else 20)
    warm = time.perf_counter() - warm
    started = time.perf_counter()
    model.learn(args.steps)
    seconds = time.perf_counter() - started

    result = {
        "agent": args.agent,
        "code": str(Path(diffgym.__file__).parent),  # which diffgym ran (before_after.sh runs two)
        "key": key,
        "precision": args.precision or "fp32",
        "compiled": args.compile,
        "linear_backend": args.linear_backend or "aten",
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "steps": args.steps,
        "steps_per_second": args.steps / seconds,
        "warm_up_seconds": warm,
    }
    if args.predict:
        obs, _ = env.reset(seed=0)
        for _ in range(20):
            model.predict(obs, deterministic=True)
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            model.predict(obs, deterministic=True)
            times.append(time.perf_counter() - t0)
        result["ms_per_action"] = 1000 * statistics.median(times)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
