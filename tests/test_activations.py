"""diffgym's Mish against torch's: the same function and derivative, in every dtype it meets."""

import pytest
import torch
import torch.nn.functional as F

from diffgym.activations import Mish, mish

EXTREMES = [-float("inf"), -1e4, -100.0, -20.5, -20.0, 19.9, 20.0, 20.5, 100.0, 1e4, 1e10, 1e30, float("inf")]


def grid(dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([torch.linspace(-30, 30, 20_001, dtype=dtype), torch.tensor(EXTREMES, dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_derivative_match_torch(dtype):
    x = grid(dtype)
    tolerance = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(mish(x), F.mish(x), atol=tolerance, rtol=tolerance, equal_nan=True)
    finite = x[x.isfinite()].requires_grad_()  # torch's own derivative at ±inf is NaN
    (ours,) = torch.autograd.grad(mish(finite).sum(), finite)
    (theirs,) = torch.autograd.grad(F.mish(finite).sum(), finite)
    torch.testing.assert_close(ours, theirs, atol=tolerance, rtol=tolerance)


def test_nan_propagates_and_gradcheck_passes():
    assert mish(torch.tensor([float("nan")])).isnan().all()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True) * 4
    assert torch.autograd.gradcheck(mish, (x.detach().requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_keeps_its_dtype_and_torchs_values(dtype):
    x = torch.randn(64, 32).to(dtype)
    out = mish(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out, F.mish(x.float()).to(dtype))


def test_module_is_a_parameterless_drop_in_for_nn_mish():
    assert Mish().state_dict() == {} and list(Mish().parameters()) == []
    x = torch.randn(3, 7, 9)
    torch.testing.assert_close(Mish()(x), torch.nn.Mish()(x))
