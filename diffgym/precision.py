"""Training precision: float32, or bfloat16 autocast of the gradient step (``precision="bf16"``).

With ``"bf16"`` each gradient step runs under :func:`torch.autocast` with ``torch.bfloat16``: matrix
products and convolutions take bfloat16 inputs and accumulate in float32; weights, gradients and
optimiser state stay float32, and losses are computed in float32 (a denoiser's bfloat16 output is
promoted when its target is subtracted). Acting (``predict``) is not affected. Two places keep
float32 on purpose: the output layer of value and Q networks (:func:`~diffgym.networks.exact_output`,
in the critics, IQL / IDQL value networks and Diffuser's value guide; a Q of a few hundred would
otherwise round to steps of 1–2) and Mish
(:func:`~diffgym.activations.mish`, computed in float32 from its bfloat16 input).

On a CPU with native bfloat16 instructions (AVX512-BF16 or AMX) matrix products run up to 4x faster
(measured in ``zoo/results/train_speed.md``: the products of Diffusion-QL's and IDQL's steps 3.2–4.2x,
the U-Nets' convolutions with their backward 1.3–1.4x);
without them bfloat16 is emulated and slower than float32, so :func:`check_precision` warns. The
accuracy cost, measured on Diffusion-QL, is in ``zoo/results/README.md`` (speed).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

__all__ = ["PRECISIONS", "check_precision", "step_autocast"]

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` (and, on a GPU, one that has bfloat16); warns
    when bf16 would be emulated on this CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16': this GPU has no bfloat16 support; use precision='fp32'")
    if precision == "bf16" and device.type == "cpu" and not _cpu_has_native_bf16():
        warnings.warn(
            "precision='bf16': this CPU has no native bfloat16 instructions (AVX512-BF16 or AMX), so "
            "bfloat16 products are emulated and slower than float32; use precision='fp32'",
            stacklevel=3,
        )
    return precision


def _cpu_has_native_bf16() -> bool:
    """Whether oneDNN finds AVX512-BF16 or AMX on this CPU (False where torch cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def step_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a gradient step runs in: nothing for fp32, bfloat16 autocast on ``device`` for bf16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
