"""Where one agent's gradient steps spend their time: ``torch.profiler`` over N steps on hopper-medium,
CPU, 1 thread, the ops by self CPU time. The agent is built as ``steps.py`` builds it.

Usage, from the repository root (``PYTHONPATH`` at an earlier install profiles that code)::

    python zoo/results/speed/profile_step.py dql --steps 50
"""

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[3]  # the repository root
DATA = Path("../shared/datasets/hopper-medium.hdf5")  # from the repository root


def main() -> None:
    parser = argparse.ArgumentParser(description="Profile an agent's gradient steps on hopper-medium.")
    parser.add_argument("agent", help="registered agent name, e.g. dql")
    parser.add_argument("--steps", type=int, default=50, help="profiled gradient steps (after 20 warm-up)")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="D4RL-layout HDF5 file (relative: from the repo root)"
    )
    parser.add_argument("--linear-backend", choices=("aten", "onednn"), default="aten", help="linear_backend")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import gymnasium as gym

    from diffgym import registry
    from diffgym.zoo.hyperparameters import resolve_hyperparams, split_config

    spec = registry.get(args.agent)
    _, config = resolve_hyperparams(spec.hyperparams_name, ["hopper-medium"])
    _, policy, kwargs = split_config(config)
    model = spec.make(
        policy,
        gym.make("Hopper-v5"),
        dataset=str(ROOT / args.data),
        seed=0,
        device="cpu",
        linear_backend=args.linear_backend,
        **kwargs,
    )
    model.learn(20)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        model.learn(args.steps)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
