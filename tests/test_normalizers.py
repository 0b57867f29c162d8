import numpy as np
import pytest
import torch

from diffgym.normalizers import DEFAULT_EPS, CDFNormalizer, GaussianNormalizer, MinMaxNormalizer


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


def test_cdf_round_trip_any_leading_dims(data):
    normalizer = CDFNormalizer.fit(data)
    x = torch.as_tensor(data).reshape(5, 10, 10, 4)
    z = normalizer.normalize(x)
    assert z.shape == x.shape and torch.isfinite(z).all()
    assert z.min() >= -1 and z.max() <= 1
    torch.testing.assert_close(normalizer.unnormalize(z)[..., :3], x[..., :3], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z[..., 3], torch.zeros(5, 10, 10))  # constant feature -> 0
    torch.testing.assert_close(normalizer.unnormalize(z)[..., 3], torch.full((5, 10, 10), 7.0))


def test_cdf_spreads_a_heavy_tailed_feature_evenly():
    rng = np.random.default_rng(1)
    heavy = rng.standard_cauchy((20_000, 1)).astype(np.float32)
    z = CDFNormalizer.fit(heavy).normalize(torch.as_tensor(heavy))[:, 0]
    # 2 F(x) - 1 of the data is uniform on [-1, 1]: every tenth of the range holds a tenth of the data
    counts = torch.histc(z, bins=10, min=-1, max=1) / len(z)
    torch.testing.assert_close(counts, torch.full((10,), 0.1), atol=2e-3, rtol=0)
    squeezed = MinMaxNormalizer.fit(heavy).normalize(torch.as_tensor(heavy))[:, 0]
    middle_half = torch.quantile(squeezed, 0.75) - torch.quantile(squeezed, 0.25)
    assert middle_half < 0.01  # min-max puts half the data in a sliver of the range


def test_cdf_matches_decision_diffusers_interpolated_empirical_cdf():
    rng = np.random.default_rng(2)
    sample = rng.gamma(2.0, size=(4000, 1))
    normalizer = CDFNormalizer.fit(sample)
    quantiles, counts = np.unique(sample, return_counts=True)  # DD's empirical_cdf
    cumulative = np.cumsum(counts) / sample.size
    x = rng.uniform(sample.min(), sample.max(), 500)
    expected = 2 * np.interp(x, quantiles, cumulative) - 1
    got = normalizer.normalize(torch.as_tensor(x).unsqueeze(1))[:, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=4 / 1024)


def test_cdf_clips_outside_the_data_and_counts_repeated_values_up_to_their_mass():
    values = np.array([[0.0], [1.0], [1.0], [1.0], [2.0]] * 200)
    normalizer = CDFNormalizer.fit(values)
    z = normalizer.normalize(torch.tensor([[-5.0], [1.0], [9.0]]))[:, 0]
    assert z[0] == pytest.approx(2 * 0.2 - 1, abs=4 / 1024)  # clipped to the minimum: P(X <= 0) = 0.2
    assert z[1] == pytest.approx(2 * 0.8 - 1, abs=4 / 1024)  # P(X <= 1) = 0.8
    assert z[2] == pytest.approx(1)
    restored = CDFNormalizer(1)
    restored.load_state_dict(normalizer.state_dict())
    torch.testing.assert_close(
        restored.normalize(torch.tensor([[1.5]])), normalizer.normalize(torch.tensor([[1.5]]))
    )
