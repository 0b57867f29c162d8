"""linear_backend="onednn": float32 nn.Linear products through oneDNN equal F.linear's up to rounding."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffgym import IDQL
from diffgym.linear_backend import (
    MIN_WORK,
    OneDNNEnsembleLinear,
    OneDNNLinear,
    check_linear_backend,
    onednn_available,
    use_onednn_linear,
)
from diffgym.networks import EnsembleLinear

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN matmul")


def test_large_products_go_through_onednn_and_equal_f_linear_forward_and_backward(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(256, 512)
    x = torch.randn(4, 32, 256, requires_grad=True)  # (..., in): 128 rows x 256 x 512 >= MIN_WORK
    assert MIN_WORK <= 128 * 256 * 512
    expected = F.linear(x, layer.weight, layer.bias)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, layer.weight, layer.bias), grad)
    assert use_onednn_linear(layer) == 1 and isinstance(layer, OneDNNLinear)
    calls = []
    original = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(
        torch.ops.mkldnn, "_linear_pointwise", lambda *args: calls.append(1) or original(*args)
    )
    output = layer(x)
    grads = torch.autograd.grad(output, (x, layer.weight, layer.bias), grad)
    assert len(calls) == 3  # forward, and the input's and the weight's gradients
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-4)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-3)


def test_small_products_autocast_and_other_dtypes_stay_with_f_linear(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *args: pytest.fail("oneDNN was called"))
    layer = nn.Linear(256, 256)
    use_onednn_linear(layer)
    layer(torch.randn(8, 256))  # 8 x 256 x 256 < MIN_WORK
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(torch.randn(512, 256))
    layer.double()(torch.randn(512, 256, dtype=torch.float64))
    narrow = nn.Linear(256, 3)  # an output layer: too few features
    use_onednn_linear(narrow)
    narrow(torch.randn(4096, 256))


def test_an_agent_with_the_onednn_backend_acts_as_with_aten_up_to_rounding(pendulum_dataset):
    env = gym.make("Pendulum-v1")
    kwargs = dict(dataset=pendulum_dataset, seed=0, batch_size=64, device="cpu")
    aten = IDQL("MlpPolicy", env, **kwargs)
    onednn = IDQL("MlpPolicy", env, linear_backend="onednn", **kwargs)
    assert sum(isinstance(m, OneDNNLinear) for m in onednn.policy.modules()) > 0
    onednn.policy.load_state_dict(aten.policy.state_dict())  # the same keys: the layers' classes changed only
    features = torch.as_tensor(np.random.default_rng(0).normal(size=(4096, 3)), dtype=torch.float32)
    actions = torch.zeros(4096, 1)  # 4096 rows: the hidden layers' products go through oneDNN
    with torch.no_grad():
        torch.testing.assert_close(onednn.policy.value(features), aten.policy.value(features))
        torch.testing.assert_close(
            onednn.policy.score_actions(features, actions), aten.policy.score_actions(features, actions)
        )
    onednn.learn(5)  # trains
    assert onednn.get_parameters()["policy"].keys() == aten.get_parameters()["policy"].keys()


def test_an_unknown_backend_is_refused_and_onednn_off_the_cpu_falls_back_to_aten():
    with pytest.raises(ValueError, match="linear_backend must be one of aten, onednn"):
        IDQL("MlpPolicy", gym.make("Pendulum-v1"), linear_backend="mkl", device="cpu")
    with pytest.warns(UserWarning, match="this model is on meta.*using 'aten'"):  # e.g. loaded on a GPU
        assert check_linear_backend("onednn", torch.device("meta")) == "aten"


def test_inside_torch_compile_the_products_stay_with_f_linear(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *args: pytest.fail("oneDNN was called"))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as while Dynamo traces the layer
    layer = nn.Linear(256, 256)
    use_onednn_linear(layer)
    layer(torch.randn(512, 256))


def test_a_second_derivative_through_it_raises_instead_of_coming_out_wrong():
    layer = nn.Linear(256, 256)
    use_onednn_linear(layer)
    x = torch.randn(512, 256, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_ensemble_layers_go_through_onednn_member_by_member_and_equal_their_batched_product():
    torch.manual_seed(0)
    layer = EnsembleLinear(256, 256, members=2)
    x = torch.randn(512, 256).unsqueeze(0).expand(2, -1, -1).requires_grad_(False)
    expected = layer(x)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (layer.weight, layer.bias), grad)
    assert use_onednn_linear(layer) == 1 and isinstance(layer, OneDNNEnsembleLinear)
    output = layer(x)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-4)
    for mine, theirs in zip(
        torch.autograd.grad(output, (layer.weight, layer.bias), grad), expected_grads, strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-3)
