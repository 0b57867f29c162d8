"""What one Diffusion Policy gradient step costs at the U-Net widths we train and at the paper's.

Counts the floating-point operations of one training step's U-Net forward and backward
(``torch.utils.flop_counter``; the optimiser's element-wise update is not counted) on the Meta-World
benchmark's shapes: batch 256 chunks of T_p = 16 actions of 4 dimensions, conditioned on T_o = 2
observations of 39, widths ``dim * (1, 2, 4)`` with kernel 5 and FiLM conditioning, as
:class:`~agents.diffusion_policy.policies.DiffusionPolicyPolicy` builds it. Widths 32 (the benchmark's)
and 64 (the library's default) against 256 (Chi et al.'s). FLOPs do not depend on the machine or its
load; the time of one step at each width is printed too, and is only as good as the machine was quiet.

Usage (from the repository root)::

    python zoo/results/speed/dp_width_flops.py >> zoo/results/speed/dp_width_flops.jsonl
"""

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffgym.denoisers.temporal_unet import TemporalUnet

BATCH, HORIZON, ACTION_DIM, OBS_DIM, OBS_STEPS = 256, 16, 4, 39, 2


def unet(dim: int) -> TemporalUnet:
    return TemporalUnet(
        ACTION_DIM, cond_dim=OBS_STEPS * OBS_DIM, dim=dim, dim_mults=(1, 2, 4), kernel_size=5, film=True
    )


def training_step(net: TemporalUnet) -> None:
    """The U-Net part of one DP step: predict the noise of a batch of noised chunks, MSE, backward."""
    noisy = torch.randn(BATCH, HORIZON, ACTION_DIM)
    timesteps = torch.randint(0, 100, (BATCH,))
    cond = torch.randn(BATCH, OBS_STEPS * OBS_DIM)
    loss = (net(noisy, timesteps, cond) - torch.randn_like(noisy)).pow(2).mean()
    loss.backward()


def measure(dim: int, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = unet(dim)
    counter = FlopCounterMode(display=False)
    with counter:
        training_step(net)
    training_step(net)  # warm-up
    started = time.perf_counter()
    for _ in range(reps):
        training_step(net)
    seconds = (time.perf_counter() - started) / reps
    return {
        "dim": dim,
        "parameters": sum(p.numel() for p in net.parameters()),
        "gflop_per_step": counter.get_total_flops() / 1e9,
        "seconds_per_step": seconds,
        "reps": reps,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed steps per width")
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64, 256])
    args = parser.parse_args()
    for dim in args.dims:
        print(json.dumps(measure(dim, args.reps)), flush=True)


if __name__ == "__main__":
    main()
