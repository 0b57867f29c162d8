import numpy as np
import pytest
import torch

from diffgym.normalizers import DEFAULT_EPS, GaussianNormalizer, MinMaxNormalizer


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    values = rng.normal(loc=[1.0, -3.0, 5.0, 0.0], scale=[2.0, 0.5, 10.0, 1.0], size=(500, 4))
    values[:, 3] = 7.0  # a constant feature
    return values.astype(np.float32)


@pytest.mark.parametrize("cls", [GaussianNormalizer, MinMaxNormalizer])
def test_round_trip_any_leading_dims(cls, data):
    normalizer = cls.fit(data)
    x = torch.as_tensor(data).reshape(5, 10, 10, 4)
    z = normalizer.normalize(x)
    assert z.shape == x.shape
    torch.testing.assert_close(normalizer.unnormalize(z), x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(z[..., 3], torch.zeros(5, 10, 10))  # constant feature -> 0, no inf/nan
    assert torch.isfinite(z).all()


def test_gaussian_statistics(data):
    normalizer = GaussianNormalizer.fit(torch.as_tensor(data))
    z = normalizer.normalize(torch.as_tensor(data))
    torch.testing.assert_close(z[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :3].std(0, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    assert normalizer.std[3] == pytest.approx(DEFAULT_EPS)


def test_minmax_maps_range_to_unit_interval(data):
    normalizer = MinMaxNormalizer.fit(data)
    z = normalizer.normalize(torch.as_tensor(data))
    torch.testing.assert_close(z[:, :3].min(0).values, -torch.ones(3))
    torch.testing.assert_close(z[:, :3].max(0).values, torch.ones(3))


def test_fit_feature_dims_of_trajectories(data):
    trajectories = data.reshape(50, 10, 4)
    normalizer = GaussianNormalizer.fit(trajectories)
    assert normalizer.mean.shape == (4,)
    images = GaussianNormalizer.fit(data.reshape(500, 2, 2), n_feature_dims=2)
    assert images.mean.shape == (2, 2)
    with pytest.raises(ValueError, match="at least one row"):
        GaussianNormalizer.fit(np.zeros((0, 4)))


@pytest.mark.parametrize("cls", [GaussianNormalizer, MinMaxNormalizer])
def test_state_dict_round_trip(cls, data, tmp_path):
    fitted = cls.fit(data)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model.normalizer = fitted
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 4))
    fresh.normalizer = cls(4)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    x = torch.as_tensor(data[:7])
    torch.testing.assert_close(fresh.normalizer.normalize(x), fitted.normalize(x))
    assert set(fitted.state_dict()) <= {"mean", "std", "center", "half_range"}
