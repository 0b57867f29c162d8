"""The floor of a computation: the time its matrix products and convolutions take on their own.

:func:`record_products` runs a callable (one gradient step, one ``predict``) under a
``TorchDispatchMode`` that notes every call of an op that ``torch.utils.flop_counter`` counts
(``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions and their backward, attention): the op,
its arguments' shapes, strides and dtypes, and its FLOPs. :func:`floor_seconds` then replays each
distinct call alone on fresh tensors of the same layout, timed by ``torch.utils.benchmark``, and
adds up the times. That sum is what the step would cost if everything else (activations, norms,
the optimiser, Python) were free: the network's own price at these shapes on this machine. A
step's ratio to it says how much is left to win without smaller networks or lower precision.

Under bf16 autocast the recorded products are bfloat16 ones, so the floor is bfloat16's.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

__all__ = ["Floor", "ProductCall", "floor_seconds", "measure_floor", "record_products"]


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """What a replayed argument needs: shape, strides, dtype, device."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def fresh(self) -> torch.Tensor:
        """A new tensor of this layout (an expanded one, of stride 0, too) with standard-normal values
        (floating) or zeros."""
        size = (
            1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
            if all(self.shape)
            else 0
        )
        storage = torch.empty(size, dtype=self.dtype, device=self.device)
        storage = storage.normal_() if storage.is_floating_point() else storage.zero_()
        return storage.as_strided(self.shape, self.stride)


@dataclasses.dataclass(frozen=True)
class ProductCall:
    """One counted op call: the op, its arguments (tensors as :class:`TensorLayout`), its FLOPs."""

    op: Any
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    flops: int

    def replay(self) -> Callable[[], Any]:
        """A zero-argument callable running the op on fresh tensors of the recorded layouts."""
        args, kwargs = _fresh(self.args), {name: _fresh(value) for name, value in self.kwargs}
        return lambda: self.op(*args, **kwargs)


def _fresh(value: Any) -> Any:
    """An argument for a replay: a fresh tensor for each layout, anything else as recorded."""
    if isinstance(value, TensorLayout):
        return value.fresh()
    if isinstance(value, tuple):
        return tuple(_fresh(item) for item in value)
    return value


def _layout(value: Any) -> Any:
    """A hashable stand-in for an op argument: tensors by layout, lists (strides, padding) as tuples."""
    if isinstance(value, torch.Tensor):
        return TensorLayout(tuple(value.shape), tuple(value.stride()), value.dtype, value.device)
    if isinstance(value, list | tuple):
        return tuple(_layout(item) for item in value)
    return value


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ProductCall] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func.overloadpacket)
        if count is not None:
            flops = int(count(*args, **kwargs, out_val=out))
            layout_kwargs = tuple(sorted((name, _layout(value)) for name, value in kwargs.items()))
            self.calls.append(ProductCall(func, _layout(args), layout_kwargs, flops))
        return out


def record_products(fn: Callable[[], Any]) -> list[ProductCall]:
    """Run ``fn()`` once and return its counted op calls, in order."""
    recorder = _Recorder()
    with recorder:
        fn()
    return recorder.calls


def floor_seconds(calls: list[ProductCall], min_run_time: float = 0.05) -> float:
    """Σ over ``calls`` of each call's median time alone (each distinct call timed once)."""
    counts = collections.Counter(calls)
    total = 0.0
    for call, count in counts.items():
        timer = benchmark.Timer(
            stmt="run()", globals={"run": call.replay()}, num_threads=torch.get_num_threads()
        )
        total += count * timer.blocked_autorange(min_run_time=min_run_time).median
    return total


@dataclasses.dataclass(frozen=True)
class Floor:
    """A computation's products: their count, FLOPs, time alone (s) and the throughput that makes."""

    calls: int
    flops: int
    seconds: float

    @property
    def gflops_per_second(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds else 0.0


def measure_floor(fn: Callable[[], Any]) -> Floor:
    """:func:`record_products` of one ``fn()``, then :func:`floor_seconds` of what it recorded."""
    calls = record_products(fn)
    return Floor(len(calls), sum(c.flops for c in calls), floor_seconds(calls))
