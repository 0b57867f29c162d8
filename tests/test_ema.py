"""Tests for diffgym.ema: the moving average tracks a denoiser's parameters and is callable."""

import torch

from diffgym.denoisers import MLPDenoiser
from diffgym.ema import make_ema

X_DIM, COND_DIM = 3, 4


def test_make_ema_tracks_parameters() -> None:
    decay = 0.9
    torch.manual_seed(0)
    model = MLPDenoiser(X_DIM, COND_DIM, hidden_dim=32).eval()
    init = [p.detach().clone() for p in model.parameters()]
    ema = make_ema(model, decay)
    assert all(not p.requires_grad for p in ema.parameters())
    for p_ema, p0 in zip(ema.module.parameters(), init, strict=True):
        torch.testing.assert_close(p_ema, p0)

    with torch.no_grad():  # one "training step"
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)
    for p_ema, p0, p in zip(ema.module.parameters(), init, model.parameters(), strict=True):
        torch.testing.assert_close(p_ema, decay * p0 + (1 - decay) * p)

    with torch.no_grad():  # further steps keep the average strictly between init and current
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)
    for p_ema, p0, p in zip(ema.module.parameters(), init, model.parameters(), strict=True):
        assert bool(((p_ema > p0) & (p_ema < p)).all())

    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, X_DIM, generator=g), torch.randint(0, 100, (2,), generator=g)
    assert ema(x, t, torch.randn(2, COND_DIM, generator=g)).shape == x.shape
