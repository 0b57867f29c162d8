"""``linear_backend="onednn"``: float32 ``nn.Linear`` products on the CPU through oneDNN.

torch's CPU matrix products in float32 go to its BLAS (MKL). On AMD CPUs MKL takes its AVX2 code
path, not AVX-512: measured on this project's AMD EPYC (Zen 4, one thread), a (512 x 256) @ (256 x
1024) product runs at about 115 GFLOP/s through ``torch.mm``, against about 255 GFLOP/s through
oneDNN (which torch ships, and which picks its kernels by instruction set, not by vendor) and through
XLA (what the authors' JAX IDQL uses): ``zoo/results/speed/gemm_rates.py`` and its ``.jsonl``.

:func:`use_onednn_linear` switches every ``nn.Linear`` of a module to :class:`OneDNNLinear` (and every
ensemble layer to :class:`OneDNNEnsembleLinear`) in place (same parameters, same state dict): their
float32 products of at least :data:`MIN_WORK` multiply-adds
(rows x in x out), forward and backward, go to oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``,
the op TorchInductor itself calls); smaller ones, where a oneDNN call costs more than it saves, and
anything under autocast, in another dtype, on another device or inside ``torch.compile`` (whose
Inductor makes its own products) stay with ``F.linear``. The results equal ``F.linear``'s up to
float32 rounding (another summation order), not bit for bit: a zoo model trained with it is published
with ``"aten"`` (loadable anywhere), so its card replays within the card's spread, not identically.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from diffgym.networks import EnsembleLinear

__all__ = [
    "LINEAR_BACKENDS",
    "MIN_WORK",
    "OneDNNEnsembleLinear",
    "OneDNNLinear",
    "check_linear_backend",
    "onednn_linear",
    "use_onednn_linear",
]

LINEAR_BACKENDS = ("aten", "onednn")
#: rows x in x out below which F.linear is kept: measured, a oneDNN call then costs more than it saves
MIN_WORK = 1 << 21
#: in or out features below which F.linear is kept (the first and last layers of small networks)
MIN_FEATURES = 64


def onednn_available() -> bool:
    """Whether this torch has oneDNN and the matmul op :class:`OneDNNLinear` calls."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def check_linear_backend(backend: str, device: torch.device) -> str:
    """The backend a model on ``device`` uses: ``backend``, or ``"aten"`` (with a warning) for
    ``"onednn"`` off the CPU or without oneDNN, e.g. a model trained so and loaded on a GPU.

    Raises:
        ValueError: an unknown backend.
    """
    if backend not in LINEAR_BACKENDS:
        raise ValueError(f"linear_backend must be one of {', '.join(LINEAR_BACKENDS)}, got {backend!r}")
    if backend == "onednn" and (device.type != "cpu" or not onednn_available()):
        warnings.warn(
            f"linear_backend='onednn' runs float32 products on the CPU through oneDNN; this model is on "
            f"{device}{'' if onednn_available() else ' and this torch has no oneDNN matmul'}: using 'aten'",
            stacklevel=3,
        )
        return "aten"
    return backend


def _matmul(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` for 2-D ``x`` (N, in) and ``weight`` (out, in), by oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`_matmul` for ``x`` of any leading shape (..., in) -> (..., out)."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    return _matmul(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])


class _OneDNNLinearFunction(torch.autograd.Function):
    """``F.linear`` with forward and both backward products by oneDNN; ``x`` is (..., in)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    @once_differentiable  # a second derivative through it raises instead of coming out wrong
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1]).contiguous()
        grad_x = grad_weight = grad_bias = None
        # transposed views, not copies: oneDNN reads the strides (measured: 15-20 % faster than copying)
        if ctx.needs_input_grad[0]:  # (N, out) @ (out, in)
            grad_x = _matmul(grad_rows, weight.t(), None).reshape(x.shape)
        if ctx.needs_input_grad[1]:  # (out, N) @ (N, in)
            grad_weight = _matmul(grad_rows.t(), rows.t(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def _routes(x: Tensor, weight: Tensor, in_features: int, out_features: int) -> bool:
    """Whether the product of ``x`` (..., in) with ``weight`` goes through oneDNN (module docstring)."""
    return (
        not torch.compiler.is_compiling()  # Inductor lowers this op only with frozen weights: its own products
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and x.dim() >= 2
        and min(in_features, out_features) >= MIN_FEATURES
        and x.numel() // in_features * in_features * out_features >= MIN_WORK
    )


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` by oneDNN; without a graph to record, the product alone."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _OneDNNLinearFunction.apply(x, weight, bias)
    return _product(x, weight, bias)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose large float32 CPU products go through oneDNN (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if _routes(x, self.weight, self.in_features, self.out_features):
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class OneDNNEnsembleLinear(EnsembleLinear):
    """:class:`~diffgym.networks.EnsembleLinear` whose large float32 CPU products go through oneDNN,
    one member at a time (torch's batched product, ``baddbmm``, is MKL's too)."""

    def forward(self, x: Tensor) -> Tensor:
        members, in_features, out_features = self.weight.shape
        if not _routes(x[0], self.weight, in_features, out_features):  # one member's product
            return super().forward(x)
        return torch.stack([onednn_linear(x[e], self.weight[e].t(), self.bias[e, 0]) for e in range(members)])


#: each layer class and its oneDNN subclass
_ONEDNN_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: OneDNNLinear,
    EnsembleLinear: OneDNNEnsembleLinear,
}


def use_onednn_linear(module: nn.Module) -> int:
    """Make every plain ``nn.Linear`` (and :class:`~diffgym.networks.EnsembleLinear`) in ``module`` its
    oneDNN subclass in place (parameters and state dict unchanged); returns how many layers."""
    layers = [layer for layer in module.modules() if type(layer) in _ONEDNN_CLASSES]
    for layer in layers:
        layer.__class__ = _ONEDNN_CLASSES[type(layer)]
    return len(layers)
