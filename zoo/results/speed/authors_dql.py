"""Training speed and acting latency of the AUTHORS' released Diffusion-QL code, on CPU, 1 thread.

Their code: github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL at commit
d871f5c6b4a3a3a19a10c662a54f32d5819dfcdb (2024-04-29, "upload toy code"). Get it with::

    git clone https://github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL dql-authors
    git -C dql-authors checkout d871f5c6b4a3a3a19a10c662a54f32d5819dfcdb

and pass that folder as ``--src``.

Patches to their source: NONE. Their ``agents/`` and ``utils/`` import and run on CPU with torch 2.x
as they are. Shims, all in this script:
  - their main.py is not imported (it needs gym 0.24 + d4rl + mujoco-py); instead this script does
    what main.py's train_agent() does: builds Data_Sampler from a d4rl.qlearning_dataset-style
    dict and Diffusion_QL with main.py's arguments for hopper-medium-v2.
  - the dataset dict is read with h5py from the local D4RL-layout file instead of
    d4rl.qlearning_dataset(env) (see load_qlearning_dataset below).
  - log_writer=None, as main.py itself passes (``writer = None  # SummaryWriter(output_dir)``).
  - warnings are silenced (their sample_action calls F.softmax without dim=, which warns in torch 2.x).

Usage (from the repository root)::

    python zoo/results/speed/authors_dql.py --src DIR [--data FILE] [--steps N]

Prints one JSON line:
{"code": "authors", "steps_per_second": ..., "ms_per_action": ..., "torch_threads": 1, "n_steps": N}
"""

import argparse
import importlib
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[3]  # the repository root

DATA = Path("../shared/datasets/hopper-medium.hdf5")  # from the repository root


def load_qlearning_dataset(path: Path) -> dict[str, np.ndarray]:
    """A d4rl.qlearning_dataset-like dict from a D4RL-layout HDF5 file.

    The file has ``next_observations``, so it is used directly; rows that end in a timeout are
    dropped, roughly as d4rl.qlearning_dataset does. Only an approximation of qlearning_dataset's
    exact row selection: for a speed test only the shapes and dtypes matter.
    """
    keys = ("observations", "actions", "next_observations", "rewards", "terminals")
    with h5py.File(path, "r") as f:
        keep = ~f["timeouts"][:]
        return {k: f[k][:][keep].astype(np.float32) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description="Steps/s and acting latency of the authors' Diffusion-QL.")
    parser.add_argument("--src", type=Path, required=True, help="checkout of the authors' repository")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="D4RL-layout HDF5 file (relative: from the repo root)"
    )
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(args.src.resolve()))  # their repo root: `agents`, `utils`
    diffusion_ql = importlib.import_module("agents.ql_diffusion").Diffusion_QL
    data_sampler = importlib.import_module("utils.data_sampler").Data_Sampler

    device = "cpu"
    torch.manual_seed(0)
    np.random.seed(0)
    data = load_qlearning_dataset(ROOT / args.data)
    sampler = data_sampler(data, device, "no")  # reward_tune
    # main.py's arguments for hopper-medium-v2: hyperparameters['hopper-medium-v2'] and its argparse
    # defaults (at this commit that entry's top_k is 2, not 1; top_k only picks the reported
    # checkpoint after training, so it does not enter any timing). Diffusion_QL's own defaults, which
    # main.py does not override: ema_decay 0.995, step_start_ema 1000, update_ema_every 5.
    agent = diffusion_ql(
        state_dim=sampler.state_dim,
        action_dim=sampler.action_dim,
        max_action=1.0,  # Hopper's action space is [-1, 1]^3
        device=device,
        discount=0.99,
        tau=0.005,
        max_q_backup=False,
        beta_schedule="vp",
        n_timesteps=5,  # T
        eta=1.0,
        lr=3e-4,
        lr_decay=False,
        lr_maxt=2000,  # num_epochs
        grad_norm=9.0,  # gn
    )
    batch_size = 256

    # training: 20 warm-up steps, then N timed steps
    agent.train(sampler, iterations=20, batch_size=batch_size, log_writer=None)
    t0 = time.perf_counter()
    agent.train(sampler, iterations=args.steps, batch_size=batch_size, log_writer=None)
    train_s = time.perf_counter() - t0

    # acting: their sample_action (50 candidates, softmax over min-Q), batch 1
    states = data["observations"]
    for i in range(20):
        agent.sample_action(states[i])
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        agent.sample_action(states[1000 + i])
        times.append(time.perf_counter() - t0)

    result = {
        "code": "authors",
        "steps_per_second": args.steps / train_s,
        "ms_per_action": 1000 * statistics.median(times),
        "torch_threads": torch.get_num_threads(),
        "n_steps": args.steps,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
