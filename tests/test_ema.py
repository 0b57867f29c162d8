"""Tests for diffgym.ema: one EMA for every model, with the calendars and warm-up the agents used before.

The references below are the two EMAs the agents had before :class:`~diffgym.ema.EMA`: torch's
``AveragedModel`` with a start and a frequency (Diffuser, MADiff, Diffusion-QL, IDQL) and Diffusion
Policy's warm-up decay (``warmup_ema_decay``); the new one must reproduce both bit for bit.
"""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from diffgym.denoisers import MLPDenoiser
from diffgym.ema import EMA

X_DIM, COND_DIM = 3, 4


def denoiser() -> MLPDenoiser:
    torch.manual_seed(0)
    return MLPDenoiser(X_DIM, COND_DIM, hidden_dim=32)


def train_step(model: torch.nn.Module, step: int) -> None:
    """Stands in for an optimizer step: a different change every step."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(torch.sin(torch.arange(p.numel(), dtype=p.dtype).view_as(p) + 7 * step + i))


def warmup_ema_decay(step: int, power: float, max_decay: float) -> float:
    """Diffusion Policy's decay as the agent computed it before (the reference)."""
    if step <= 0:
        return 0.0
    return min(max_decay, 1.0 - (1.0 + step) ** -power)


def test_the_average_starts_as_a_frozen_copy_and_then_tracks_the_model() -> None:
    decay, model = 0.9, denoiser()
    init = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, decay)
    assert all(not p.requires_grad for p in ema.parameters())
    for p_ema, p0 in zip(ema.module.parameters(), init, strict=True):
        torch.testing.assert_close(p_ema, p0)
    for step in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        ema.update(model, step)
    for p_ema, p0, p in zip(ema.module.parameters(), init, model.parameters(), strict=True):
        torch.testing.assert_close(p_ema, decay * (decay * p0 + (1 - decay) * (p0 + 1)) + (1 - decay) * p)
        assert bool(((p_ema > p0) & (p_ema < p)).all())  # strictly between the start and now


@pytest.mark.parametrize(("start", "every"), [(0, 1), (5, 1), (5, 3), (0, 4)])
def test_start_and_every_reproduce_the_averaged_model_calendar(start: int, every: int) -> None:
    """Copy while ``step < start``, then average at ``step % every == 0``: as ``update_ema`` did."""
    model = denoiser()
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.995), use_buffers=True)
    reference.update_parameters(model)
    reference.requires_grad_(False)  # what make_ema returned
    ema = EMA(model, 0.995)
    for step in range(20):
        train_step(model, step)
        if step < start:
            torch._foreach_copy_(list(reference.module.parameters()), list(model.parameters()))
        elif step % every == 0:
            reference.update_parameters(model)
        ema.update(model, step, start, every)
        for new, old in zip(
            ema.module.state_dict().values(), reference.module.state_dict().values(), strict=True
        ):
            assert torch.equal(new, old), step


def test_warm_up_reproduces_diffusion_policys_decay() -> None:
    ema = EMA(denoiser(), decay=0.9999, power=0.75)
    for step in [*range(50), 999, 1000, 10_000, 10**7]:
        assert ema.decay_at(step) == warmup_ema_decay(step, 0.75, 0.9999)
    assert ema.decay_at(0) == 0.0 and round(ema.decay_at(1000), 4) == 0.9944  # the old doctest's values
    assert ema.decay_at(10**7) == 0.9999  # capped


def test_warm_up_updates_as_diffusion_policy_did() -> None:
    """DP lerped every step with ``1 - warmup_ema_decay(step)`` (a copy at step 0)."""
    model = denoiser()
    reference = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, decay=0.9, power=0.75)
    for step in range(30):
        train_step(model, step)
        weight = 1.0 - warmup_ema_decay(step, 0.75, 0.9)
        torch._foreach_lerp_(reference, [p.detach() for p in model.parameters()], weight)
        ema.update(model, step)
        assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), reference, strict=True))


def test_warm_up_counts_averaging_steps_from_start() -> None:
    ema = EMA(denoiser(), decay=0.9999, power=0.75)
    assert [ema.decay_at(step, start=10, every=5) for step in (9, 10, 12, 15, 20)] == [
        0.0,
        0.0,  # the first averaging step copies
        None,
        warmup_ema_decay(1, 0.75, 0.9999),
        warmup_ema_decay(2, 0.75, 0.9999),
    ]


def test_a_decay_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"):
        EMA(denoiser(), 1.5)
