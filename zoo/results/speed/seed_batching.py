"""Would training K seeds as one batched model pay on this CPU? A probe before building it.

One gradient step (forward, MSE loss, backward, Adam) of K independent MLPs stacked as one batched
model (:class:`~diffgym.networks.EnsembleMLP`, the layers Diffusion-QL's and IDQL's twin critics
already use: ``baddbmm`` over the members) against K = 1, at Diffusion-QL's sizes (3 hidden layers of
256, batch 256, input 17 = Hopper's state + action), one thread, with torch's products and with
``linear_backend="onednn"``. The loss is the sum of the members' mean losses, so each member's
gradient is the one it would get alone. K = 3 costing well under 3x K = 1 would make batching seeds
worth building (the speed issue's "several seeds in one process").

Usage (from the repository root, on an otherwise idle machine)::

    taskset -c 1 python zoo/results/speed/seed_batching.py [--reps N] >> zoo/results/speed/seed_batching.jsonl
"""

import argparse
import json
import time

import torch

from diffgym.linear_backend import use_onednn_linear
from diffgym.networks import EnsembleMLP


def step_ms(members: int, backend: str, reps: int) -> float:
    """Mean ms of one gradient step of ``members`` stacked MLPs, after 10 warm-up steps."""
    torch.manual_seed(0)
    net = EnsembleMLP(17, 3, members, hidden_dim=256, num_hidden=3)
    if backend == "onednn":
        use_onednn_linear(net)
    optimizer = torch.optim.Adam(net.parameters(), 3e-4)
    x, y = torch.randn(members, 256, 17), torch.randn(members, 256, 3)

    def step() -> None:
        loss = ((net(x) - y) ** 2).mean(dim=(1, 2)).sum()  # each member's own mean loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(10):
        step()
    started = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - started) / reps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="timed steps per configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for backend in ("aten", "onednn"):
        times: dict[int, list[float]] = {1: [], 3: []}
        for members in (1, 3, 1, 3):  # alternated
            times[members].append(step_ms(members, backend, args.reps))
        k1, k3 = (sum(times[k]) / len(times[k]) for k in (1, 3))
        print(json.dumps({"backend": backend, "ms_k1": k1, "ms_k3": k3, "k3_over_k1": k3 / k1,
                          "reps": args.reps, "threads": torch.get_num_threads()}))  # fmt: skip


if __name__ == "__main__":
    main()
