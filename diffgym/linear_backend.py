"""``linear_backend="onednn"``: float32 ``nn.Linear`` products on the CPU through oneDNN.

torch's CPU matrix products in float32 go to its BLAS (MKL). On AMD CPUs MKL takes its AVX2 code
path, not AVX-512: measured on this project's AMD EPYC (Zen 4, one thread), a (512 x 256) @ (256 x
1024) product runs at about 110 GFLOP/s through ``torch.mm``, against about 240 GFLOP/s through
oneDNN (which torch ships, and which picks its kernels by instruction set, not by vendor) and 250
through XLA (what the authors' JAX IDQL uses). ``zoo/results/speed/README.md`` has the figures.

:func:`use_onednn_linear` switches every ``nn.Linear`` of a module to :class:`OneDNNLinear` in place
(same parameters, same state dict): its float32 products of at least :data:`MIN_WORK` multiply-adds
(rows x in x out), forward and backward, go to oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``,
the op TorchInductor itself calls); smaller ones, where a oneDNN call costs more than it saves, and
anything under autocast, in another dtype or on another device, stay with ``F.linear``. The results
equal ``F.linear``'s up to float32 rounding (another summation order), not bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LINEAR_BACKENDS", "MIN_WORK", "OneDNNLinear", "check_linear_backend", "use_onednn_linear"]

LINEAR_BACKENDS = ("aten", "onednn")
#: rows x in x out below which F.linear is kept: measured, a oneDNN call then costs more than it saves
MIN_WORK = 1 << 21
#: in or out features below which F.linear is kept (the first and last layers of small networks)
MIN_FEATURES = 64


def onednn_available() -> bool:
    """Whether this torch has oneDNN and the matmul op :class:`OneDNNLinear` calls."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def check_linear_backend(backend: str, device: torch.device) -> str:
    """``backend`` if it can run on ``device``; ``ValueError`` naming the problem otherwise."""
    if backend not in LINEAR_BACKENDS:
        raise ValueError(f"linear_backend must be one of {', '.join(LINEAR_BACKENDS)}, got {backend!r}")
    if backend == "onednn" and (device.type != "cpu" or not onednn_available()):
        raise ValueError(
            f"linear_backend='onednn' runs float32 products on the CPU through oneDNN; this model is on "
            f"{device}{'' if onednn_available() else ' and this torch has no oneDNN matmul'}: use 'aten'"
        )
    return backend


def _matmul(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` for 2-D ``x`` (N, in) and ``weight`` (out, in), by oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    """``F.linear`` with forward and both backward products by oneDNN; ``x`` is (..., in)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        rows = x.reshape(-1, x.shape[-1])
        return _matmul(rows.contiguous(), weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1]).contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # (N, out) @ (out, in)
            grad_x = _matmul(grad_rows, weight.t().contiguous(), None).reshape(x.shape)
        if ctx.needs_input_grad[1]:  # (out, N) @ (N, in)
            grad_weight = _matmul(grad_rows.t().contiguous(), rows.t().contiguous(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose large float32 CPU products go through oneDNN (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self._through_onednn(x):
            return F.linear(x, self.weight, self.bias)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _OneDNNLinearFunction.apply(x, self.weight, self.bias)
        rows = x.reshape(-1, x.shape[-1]).contiguous()  # no graph to record: the product alone
        return _matmul(rows, self.weight, self.bias).reshape(*x.shape[:-1], self.out_features)

    def _through_onednn(self, x: Tensor) -> bool:
        weight = self.weight
        return (
            x.device.type == "cpu"
            and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and x.dim() >= 2
            and min(self.in_features, self.out_features) >= MIN_FEATURES
            and x.numel() // self.in_features * self.in_features * self.out_features >= MIN_WORK
        )


def use_onednn_linear(module: nn.Module) -> int:
    """Make every plain ``nn.Linear`` in ``module`` a :class:`OneDNNLinear` in place (parameters and
    state dict unchanged); returns how many."""
    switched = 0
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = OneDNNLinear
            switched += 1
    return switched
