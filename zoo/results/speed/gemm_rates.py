"""Matrix-product rates on one thread, at the shapes of IDQL's actor (batch 512, width 256, blocks of
1024): float32 through torch's ``mm`` (MKL), oneDNN's matmul inside torch, and XLA (``jax.jit(a @ b)``);
bfloat16 through torch's ``mm`` (what ``precision="bf16"`` autocast runs; oneDNN underneath).

Run it with the project's environment for the torch rows and with the JAX environment of
``authors_idql.py`` for the XLA rows (each interpreter measures what it has), pinned to one core::

    taskset -c 1 python zoo/results/speed/gemm_rates.py >> zoo/results/speed/gemm_rates.jsonl
    taskset -c 1 ../idql-venv/bin/python zoo/results/speed/gemm_rates.py >> zoo/results/speed/gemm_rates.jsonl

Each line: ``{"backend", "shape": [m, k, n], "gflops", "reps", "env"}``, GFLOP/s of ``(m, k) @ (k, n)``,
with the ``MKL_*`` variables it ran under (``MKL_CBWR=AVX512 taskset -c 1 python ...`` asks MKL for
its AVX-512 path).
"""

import json
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

SHAPES = ((512, 256, 1024), (512, 1024, 256), (256, 512, 1024), (1024, 512, 256))
REPS = 200


def rate(product: Callable[..., Any], args: tuple[Any, ...], shape: tuple[int, int, int]) -> float:
    """GFLOP/s of ``product(*args)`` of ``shape`` (m, k, n) after 10 warm-up calls (results are waited
    for with ``block_until_ready`` where they have it: JAX dispatches asynchronously)."""

    def call() -> Any:
        result = product(*args)
        return result.block_until_ready() if hasattr(result, "block_until_ready") else result

    for _ in range(10):
        call()
    started = time.perf_counter()
    for _ in range(REPS):
        call()
    m, k, n = shape
    return 2 * m * k * n / ((time.perf_counter() - started) / REPS) / 1e9


def report(backend: str, shape: tuple[int, int, int], gflops: float) -> None:
    mkl = {key: value for key, value in os.environ.items() if key.startswith("MKL_")}  # e.g. MKL_CBWR
    print(json.dumps({"backend": backend, "shape": list(shape), "gflops": gflops, "reps": REPS, "env": mkl}))


def torch_rates() -> None:
    import torch

    torch.set_num_threads(1)

    def onednn(a: Any, weight: Any) -> Any:
        return torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], "")

    for shape in SHAPES:
        m, k, n = shape
        a, b = torch.randn(m, k), torch.randn(k, n)
        report("torch.mm (MKL)", shape, rate(torch.mm, (a, b), shape))
        weight = b.t().contiguous()  # (out, in), as nn.Linear holds it
        report("oneDNN (torch.ops.mkldnn._linear_pointwise)", shape, rate(onednn, (a, weight), shape))
        report("torch.mm, bfloat16", shape, rate(torch.mm, (a.bfloat16(), b.bfloat16()), shape))


def jax_rates() -> None:
    import jax

    product = jax.jit(lambda x, y: x @ y)
    for shape in SHAPES:
        m, k, n = shape
        a = jax.random.normal(jax.random.PRNGKey(0), (m, k))
        b = jax.random.normal(jax.random.PRNGKey(1), (k, n))
        report(f"XLA (jax {jax.__version__})", shape, rate(product, (a, b), shape))


if __name__ == "__main__":
    try:
        import torch  # noqa: F401
    except ImportError:
        jax_rates()
    else:
        torch_rates()
