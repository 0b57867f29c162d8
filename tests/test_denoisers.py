"""Tests for diffgym.denoisers: shapes, conditioning and its dropout, gradients, t dependence,
and a tiny overfit check."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from diffgym.denoisers import (
    GaussianFourierEmb,
    MLPDenoiser,
    ResidualMLPDenoiser,
    SinusoidalPosEmb,
    TemporalUnet,
    TransformerDenoiser,
)

X_DIM, COND_DIM, HORIZON, T_MAX = 3, 4, 8, 100


# name -> (factory(cond_dim) -> model, whether x is a sequence (B, H, D))
SMALL: dict[str, tuple[Callable[[int], nn.Module], bool]] = {
    "mlp": (lambda c: MLPDenoiser(X_DIM, c, hidden_dim=32), False),
    "resmlp": (lambda c: ResidualMLPDenoiser(X_DIM, c, hidden_dim=32, num_blocks=2, time_dim=16), False),
    "unet": (lambda c: TemporalUnet(X_DIM, c, dim=8, dim_mults=(1, 2)), True),
    "unet_film_attn": (
        lambda c: TemporalUnet(X_DIM, c, dim=8, dim_mults=(1, 2), film=True, attention=True),
        True,
    ),
    "transformer": (lambda c: TransformerDenoiser(X_DIM, c, horizon=HORIZON, d_model=16, num_layers=2), True),
}


def make(name: str, cond_dim: int) -> nn.Module:
    torch.manual_seed(0)
    return SMALL[name][0](cond_dim).eval()


def inputs(name: str, batch: int, cond_dim: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, HORIZON, X_DIM) if SMALL[name][1] else (batch, X_DIM)
    x = torch.randn(shape, generator=g)
    t = torch.randint(0, T_MAX, (batch,), generator=g)
    cond = torch.randn(batch, cond_dim, generator=g) if cond_dim else None
    return x, t, cond


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("cond_dim", [0, COND_DIM])
@pytest.mark.parametrize("batch", [1, 5])
def test_output_shape_matches_input(name: str, cond_dim: int, batch: int) -> None:
    model = make(name, cond_dim)
    x, t, cond = inputs(name, batch, cond_dim)
    assert model(x, t, cond).shape == x.shape
    assert model(x, t.float(), cond).shape == x.shape  # float steps are accepted too


def test_default_sizes_shapes() -> None:
    x, t = torch.randn(2, 16, X_DIM), torch.randint(0, T_MAX, (2,))
    cond = torch.randn(2, COND_DIM)
    for model in (TemporalUnet(X_DIM, COND_DIM), TransformerDenoiser(X_DIM, COND_DIM, horizon=16)):
        assert model(x, t, cond).shape == x.shape
    for model in (MLPDenoiser(X_DIM, COND_DIM), ResidualMLPDenoiser(X_DIM, COND_DIM)):
        assert model(x[:, 0], t, cond).shape == (2, X_DIM)


def test_transformer_accepts_shorter_sequences_and_refuses_longer() -> None:
    model = make("transformer", 0)
    assert model(torch.randn(2, 5, X_DIM), torch.zeros(2, dtype=torch.long)).shape == (2, 5, X_DIM)
    with pytest.raises(ValueError, match="horizon=8 got H=9"):
        model(torch.randn(2, 9, X_DIM), torch.zeros(2, dtype=torch.long))


def test_temporal_unet_rejects_bad_horizon() -> None:
    model = TemporalUnet(X_DIM, dim=8)
    with pytest.raises(ValueError, match=r"H=12.*multiple of 8"):
        model(torch.randn(2, 12, X_DIM), torch.zeros(2, dtype=torch.long))


def test_temporal_unet_rejects_bad_widths_and_kernel() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        TemporalUnet(X_DIM, dim=12)
    with pytest.raises(ValueError, match="odd kernel_size"):
        TemporalUnet(X_DIM, dim=8, kernel_size=4)


@pytest.mark.parametrize("name", SMALL)
def test_cond_presence_is_checked(name: str) -> None:
    x, t, cond = inputs(name, 2, COND_DIM)
    with pytest.raises(ValueError, match="cond_dim=0"):
        make(name, 0)(x, t, cond)
    with pytest.raises(ValueError, match=f"cond_dim={COND_DIM}"):
        make(name, COND_DIM)(x, t)


@pytest.mark.parametrize("name", SMALL)
def test_cond_mask_drops_the_condition(name: str) -> None:
    model = make(name, COND_DIM)
    x, t, cond = inputs(name, 4, COND_DIM)
    other = cond + 3.0
    off = torch.zeros(4, dtype=torch.bool)
    on = torch.ones(4, dtype=torch.bool)
    with torch.no_grad():
        # Dropped: the condition's value no longer matters ...
        torch.testing.assert_close(model(x, t, cond, off), model(x, t, other, off))
        # ... kept: it does, and a True mask is the same as no mask.
        assert not torch.allclose(model(x, t, cond, on), model(x, t, other, on))
        torch.testing.assert_close(model(x, t, cond, on), model(x, t, cond))
        # Per sample: only the rows with mask False ignore the condition.
        mixed = torch.tensor([True, False, True, False])
        a, b = model(x, t, cond, mixed), model(x, t, other, mixed)
        torch.testing.assert_close(a[~mixed], b[~mixed])
        assert not torch.allclose(a[mixed], b[mixed])


@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_raw_cond_null_condition_is_zero_vector(name: str) -> None:
    model = make(name, COND_DIM)
    x, t, cond = inputs(name, 4, COND_DIM)
    with torch.no_grad():
        dropped = model(x, t, cond, torch.zeros(4, dtype=torch.bool))
        torch.testing.assert_close(dropped, model(x, t, torch.zeros_like(cond)))


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("cond_dim", [0, COND_DIM])
def test_gradients_reach_every_parameter(name: str, cond_dim: int) -> None:
    model = make(name, cond_dim).train()
    x, t, cond = inputs(name, 3, cond_dim)
    model(x, t, cond).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", SMALL)
def test_output_depends_on_t(name: str) -> None:
    model = make(name, COND_DIM)
    x, _, cond = inputs(name, 3, COND_DIM)
    with torch.no_grad():
        a = model(x, torch.zeros(3, dtype=torch.long), cond)
        b = model(x, torch.full((3,), 50), cond)
    assert not torch.allclose(a, b)


def test_time_embeddings() -> None:
    t = torch.arange(5)
    emb = SinusoidalPosEmb(16)(t)
    assert emb.shape == (5, 16)
    torch.testing.assert_close(emb[0], torch.cat((torch.zeros(8), torch.ones(8))))
    fixed, learned = GaussianFourierEmb(8), GaussianFourierEmb(8, scale=0.2, learnable=True)
    assert fixed(t).shape == learned(t).shape == (5, 8)
    assert "weight" in fixed.state_dict() and not list(fixed.parameters())  # saved, not trained
    assert [n for n, _ in learned.named_parameters()] == ["weight"]
    with pytest.raises(ValueError):
        SinusoidalPosEmb(7)
    with pytest.raises(ValueError):
        GaussianFourierEmb(7)


def test_dropout_only_in_train_mode() -> None:
    model = ResidualMLPDenoiser(X_DIM, COND_DIM, hidden_dim=32, dropout=0.5)
    x, t, cond = inputs("resmlp", 8, COND_DIM)
    model.eval()
    torch.testing.assert_close(model(x, t, cond), model(x, t, cond))
    model.train()
    assert not torch.allclose(model(x, t, cond), model(x, t, cond))


def _overfit(model: nn.Module, x: Tensor, cond: Tensor | None, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    t = torch.randint(0, T_MAX, (x.shape[0],))
    target = torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = (model(x, t, cond) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses[0].item(), losses[-1].item()


def test_temporal_unet_overfits_small_batch() -> None:
    torch.manual_seed(0)
    model = TemporalUnet(X_DIM, COND_DIM, dim=16, dim_mults=(1, 2))
    x, _, cond = inputs("unet", 8, COND_DIM)
    first, last = _overfit(model, x, cond, steps=200)
    assert last < first / 10


def test_residual_mlp_overfits_small_batch() -> None:
    torch.manual_seed(0)
    model = ResidualMLPDenoiser(X_DIM, COND_DIM, hidden_dim=64, num_blocks=2, dropout=0.0)
    x, _, cond = inputs("resmlp", 32, COND_DIM)
    first, last = _overfit(model, x, cond, steps=200)
    assert last < first / 10
