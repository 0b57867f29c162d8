"""Mish forward + backward: ``torch.nn.functional.mish`` against ``diffgym.activations.mish``, CPU, 1 thread.

Shapes: Diffusion-QL's hidden layer at batch 256 (256 × 256) and a U-Net activation (32, 256, 64).
Median of ``torch.utils.benchmark`` blocks (at least 0.5 s each), alternated twice. One JSON line
per (shape, function, round). Usage, from the repository root::

    python zoo/results/speed/mish.py >> zoo/results/speed/mish.jsonl
"""

import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from diffgym.activations import mish

SHAPES = ((256, 256), (32, 256, 64))


def forward_backward(fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> float:
    """Median microseconds of ``fn(x).backward(g)`` for standard-normal ``x`` and ``g`` of ``shape``."""
    x, g = torch.randn(*shape, requires_grad=True), torch.randn(*shape)
    timer = benchmark.Timer(stmt="fn(x).backward(g)", globals={"fn": fn, "x": x, "g": g}, num_threads=1)
    return timer.blocked_autorange(min_run_time=0.5).median * 1e6


def main() -> None:
    torch.set_num_threads(1)
    for shape in SHAPES:
        for round_ in (1, 2):
            for name, fn in (("torch F.mish", F.mish), ("diffgym mish", mish)):
                line = {"shape": shape, "function": name, "round": round_, "us": forward_backward(fn, shape)}
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
