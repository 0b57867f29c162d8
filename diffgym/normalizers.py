"""Per-feature normalisers whose statistics are buffers, so they travel in a model's ``state_dict``.

All act on the last dimension and broadcast over any leading dimensions: ``x`` of shape
``(..., *shape)`` where ``shape`` is the feature shape given at construction (usually ``(dim,)``).
Build one from data with ``fit``; build an identity one of the right shape with the constructor and
``load_state_dict`` into it when restoring a saved model.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_EPS",
    "CDFNormalizer",
    "GaussianNormalizer",
    "MinMaxNormalizer",
    "Normalizer",
    "NormalizerKind",
    "fit_in_chunks",
    "make_normalizer",
]

#: How a diffusion planner normalises observations: standardise, map the data's range to [-1, 1],
#: or map each feature through its empirical CDF to [-1, 1].
NormalizerKind = Literal["gaussian", "limits", "cdf"]

#: Floor of a feature's standard deviation or half-range. A constant feature normalises to 0 and
#: unnormalises back to (almost exactly) its constant instead of dividing by zero.
DEFAULT_EPS = 1e-6


def _as_matrix(data: np.ndarray | Tensor, shape: tuple[int, ...]) -> Tensor:
    """``data`` as a float64 tensor of shape ``(rows, *shape)``."""
    tensor = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
    return tensor.detach().to(torch.float64).reshape(-1, *shape)


def _feature_shape(data: np.ndarray | Tensor, n_feature_dims: int) -> tuple[int, ...]:
    if data.ndim < n_feature_dims or data.shape[0] == 0:
        raise ValueError(f"need at least one row of features, got data of shape {tuple(data.shape)}")
    return tuple(data.shape[data.ndim - n_feature_dims :])


class GaussianNormalizer(nn.Module):
    """``(x - mean) / std`` per feature.

    Buffers: ``mean`` and ``std`` of shape ``shape``; ``std`` is floored at ``eps`` when fitted.

    Args:
        shape: feature shape, e.g. ``obs_dim`` or ``(obs_dim,)``; starts as the identity.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, shape: int | tuple[int, ...]) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @classmethod
    def fit(
        cls, data: np.ndarray | Tensor, eps: float = DEFAULT_EPS, n_feature_dims: int = 1
    ) -> GaussianNormalizer:
        """Statistics over every leading dimension of ``data`` (``(..., *features)``).

        Args:
            data: the samples; the last ``n_feature_dims`` dimensions are the features.
            eps: floor of the standard deviation.
            n_feature_dims: how many trailing dimensions are features.
        """
        shape = _feature_shape(data, n_feature_dims)
        matrix = _as_matrix(data, shape)
        normalizer = cls(shape)
        normalizer.mean.copy_(matrix.mean(dim=0))
        normalizer.std.copy_(matrix.std(dim=0, unbiased=False).clamp_min(eps))
        return normalizer

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., *shape)`` -> ``(..., *shape)`` standardised."""
        return (x - self.mean) / self.std

    def unnormalize(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`."""
        return x * self.std + self.mean


class MinMaxNormalizer(nn.Module):
    """Maps each feature's range ``[low, high]`` to ``[-1, 1]``: ``(x - center) / half_range``.

    Buffers: ``center = (high + low) / 2`` and ``half_range = (high - low) / 2`` of shape ``shape``;
    ``half_range`` is floored at ``eps`` when fitted, so a constant feature maps to 0.

    Args:
        shape: feature shape; starts as the identity.
    """

    center: Tensor
    half_range: Tensor

    def __init__(self, shape: int | tuple[int, ...]) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.register_buffer("center", torch.zeros(shape))
        self.register_buffer("half_range", torch.ones(shape))

    @classmethod
    def fit(
        cls, data: np.ndarray | Tensor, eps: float = DEFAULT_EPS, n_feature_dims: int = 1
    ) -> MinMaxNormalizer:
        """Per-feature minimum and maximum over every leading dimension of ``data``.

        Args:
            data: the samples; the last ``n_feature_dims`` dimensions are the features.
            eps: floor of the half-range.
            n_feature_dims: how many trailing dimensions are features.
        """
        shape = _feature_shape(data, n_feature_dims)
        matrix = _as_matrix(data, shape)
        low, high = matrix.min(dim=0).values, matrix.max(dim=0).values
        normalizer = cls(shape)
        normalizer.center.copy_((high + low) / 2)
        normalizer.half_range.copy_(((high - low) / 2).clamp_min(eps))
        return normalizer

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., *shape)`` -> ``(..., *shape)``, the fitted range mapped to ``[-1, 1]``."""
        return (x - self.center) / self.half_range

    def unnormalize(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`."""
        return x * self.half_range + self.center


class CDFNormalizer(nn.Module):
    """Maps each feature through its empirical CDF to ``[-1, 1]``: ``2 F(x) - 1`` (Decision
    Diffuser's ``CDFNormalizer``). Heavy-tailed or clustered features are spread evenly over the
    range, where min-max scaling squeezes most of the data into a sliver of it.

    ``F`` is the piecewise-linear interpolation of ``num_knots`` quantiles of the data (at
    probabilities ``0, 1/(K-1), …, 1``); DD interpolates between every distinct value of the data.
    With ``K`` knots the two differ by at most ``2/(K-1)`` in probability, and the statistics are
    ``K × features`` numbers whatever the dataset's size. Inputs outside the data's range are
    clipped to it (as DD's); at a value the data repeats, ``F`` is its cumulative probability
    (``P(X ≤ x)``, as DD's); a constant feature maps to 0 and back to its constant.

    Buffers: ``knots`` of shape ``(num_knots, *shape)``, non-decreasing along the first dimension.

    Args:
        shape: feature shape; starts as the identity on ``[-1, 1]``.
        num_knots: K, quantiles kept per feature.
    """

    knots: Tensor

    def __init__(self, shape: int | tuple[int, ...], num_knots: int = 1025) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if num_knots < 2:
            raise ValueError(f"num_knots must be at least 2, got {num_knots}")
        identity = torch.linspace(-1.0, 1.0, num_knots).reshape(num_knots, *(1,) * len(shape))
        self.register_buffer("knots", identity.expand(num_knots, *shape).clone())

    @classmethod
    def fit(
        cls,
        data: np.ndarray | Tensor,
        eps: float = DEFAULT_EPS,
        n_feature_dims: int = 1,
        num_knots: int = 1025,
    ) -> CDFNormalizer:
        """Per-feature quantiles over every leading dimension of ``data``.

        Args:
            data: the samples; the last ``n_feature_dims`` dimensions are the features.
            eps: unused (the CDF needs no floor); kept for the normalisers' common signature.
            n_feature_dims: how many trailing dimensions are features.
            num_knots: K, quantiles kept per feature.
        """
        shape = _feature_shape(data, n_feature_dims)
        matrix = _as_matrix(data, shape).numpy()
        probabilities = np.linspace(0.0, 1.0, num_knots)
        normalizer = cls(shape, num_knots)
        normalizer.knots.copy_(torch.as_tensor(np.quantile(matrix, probabilities, axis=0)))
        return normalizer

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., *shape)`` -> ``(..., *shape)`` in ``[-1, 1]``: ``2 F(x) - 1``."""
        knots, flat = self._columns(x)  # (F, K), (F, M)
        flat = flat.clamp(knots[:, :1], knots[:, -1:])
        upper = torch.searchsorted(knots, flat.contiguous(), right=True).clamp(1, knots.shape[1] - 1)
        low_x, high_x = knots.gather(1, upper - 1), knots.gather(1, upper)
        width = high_x - low_x
        fraction = torch.where(width > 0, (flat - low_x) / width.clamp_min(1e-30), torch.ones_like(flat))
        probability = (upper - 1 + fraction) / (knots.shape[1] - 1)
        constant = knots[:, -1:] == knots[:, :1]
        probability = torch.where(constant, torch.full_like(probability, 0.5), probability)
        return self._restore(2 * probability - 1, x)

    def unnormalize(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize` (``F⁻¹((x + 1) / 2)``, inputs clipped to ``[-1, 1]``)."""
        knots, flat = self._columns(x)
        position = ((flat.clamp(-1.0, 1.0) + 1) / 2) * (knots.shape[1] - 1)
        lower = position.floor().long().clamp(0, knots.shape[1] - 2)
        low_x, high_x = knots.gather(1, lower), knots.gather(1, lower + 1)
        return self._restore(low_x + (position - lower) * (high_x - low_x), x)

    def _columns(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Knots (F, K) and ``x`` as (F, M): one row per feature."""
        features = self.knots[0].numel()
        knots = self.knots.reshape(self.knots.shape[0], features).T.contiguous().to(x.dtype)
        return knots, x.reshape(-1, features).T

    def _restore(self, columns: Tensor, like: Tensor) -> Tensor:
        return columns.T.reshape(like.shape)


#: Any of the normalisers (they share ``fit``, ``normalize`` and ``unnormalize``).
Normalizer = GaussianNormalizer | MinMaxNormalizer | CDFNormalizer


def fit_in_chunks(cls: type[Normalizer], chunks: Iterable[Tensor], eps: float = DEFAULT_EPS) -> Normalizer:
    """``cls.fit`` over the rows of ``chunks`` ((rows, dim) each) taken together.

    One chunk: exactly ``cls.fit``. Several: Gaussian and min-max statistics are merged chunk by
    chunk (float64, never all rows at once); a CDF needs every row at once, so its chunks are joined.
    """
    iterator = iter(chunks)
    first = next(iterator)
    second = next(iterator, None)
    if second is None:
        return cls.fit(first, eps=eps)
    every = itertools.chain([first, second], iterator)
    del first, second  # each chunk is released once merged
    if cls is GaussianNormalizer:
        return _gaussian_in_chunks(every, eps)
    if cls is MinMaxNormalizer:
        return _limits_in_chunks(every, eps)
    return cls.fit(torch.cat(list(every)), eps=eps)


#: Rows converted to float64 at once when merging statistics chunk by chunk.
_PIECE_ROWS = 2**16


def _gaussian_in_chunks(chunks: Iterable[Tensor], eps: float) -> GaussianNormalizer:
    """Mean and standard deviation merged over chunks (Chan et al.'s pairwise update)."""
    count, mean, squares = 0, torch.zeros(()), torch.zeros(())
    for chunk in chunks:
        for piece in chunk.split(_PIECE_ROWS):  # float64 copies of a bounded piece at a time
            x = _as_matrix(piece, (piece.shape[1],))
            n, chunk_mean = len(x), x.mean(dim=0)
            chunk_squares = ((x - chunk_mean) ** 2).sum(dim=0)
            total = count + n
            delta = chunk_mean - mean
            mean = mean + delta * (n / total)
            squares = squares + chunk_squares + delta**2 * (count * n / total)
            count = total
            del x, piece
        del chunk  # not alive while the next chunk is read
    normalizer = GaussianNormalizer(tuple(mean.shape))
    normalizer.mean.copy_(mean)
    normalizer.std.copy_((squares / count).sqrt().clamp_min(eps))
    return normalizer


def _limits_in_chunks(chunks: Iterable[Tensor], eps: float) -> MinMaxNormalizer:
    """Per-feature minimum and maximum over chunks."""
    ranges = []
    for chunk in chunks:
        for piece in chunk.split(_PIECE_ROWS):  # float64 copies of a bounded piece at a time
            x = _as_matrix(piece, (piece.shape[1],))
            ranges.append((x.min(dim=0).values, x.max(dim=0).values))
            del x, piece
        del chunk  # not alive while the next chunk is read
    low = torch.stack([r[0] for r in ranges]).min(dim=0).values
    high = torch.stack([r[1] for r in ranges]).max(dim=0).values
    normalizer = MinMaxNormalizer(tuple(low.shape))
    normalizer.center.copy_((high + low) / 2)
    normalizer.half_range.copy_(((high - low) / 2).clamp_min(eps))
    return normalizer


def make_normalizer(kind: NormalizerKind, dim: int) -> tuple[Normalizer, tuple[float, float] | None]:
    """A (not yet fitted) normaliser of ``dim`` features and the range to clip x0 estimates to.

    ``"gaussian"`` standardises and does not clip; ``"limits"`` maps the data's range to [-1, 1]
    and clips there (Diffuser's maze2d ``LimitsNormalizer`` and MADiff's ``clip_denoised``);
    ``"cdf"`` maps each feature through its empirical CDF to [-1, 1] and clips there (Decision
    Diffuser's ``CDFNormalizer`` with ``clip_denoised``).

    >>> normalizer, clip_range = make_normalizer("limits", 3)
    >>> type(normalizer).__name__, clip_range
    ('MinMaxNormalizer', (-1.0, 1.0))
    """
    if kind == "gaussian":
        return GaussianNormalizer(dim), None
    if kind == "limits":
        return MinMaxNormalizer(dim), (-1.0, 1.0)
    if kind == "cdf":
        return CDFNormalizer(dim), (-1.0, 1.0)
    raise ValueError(f"normalizer must be 'gaussian', 'limits' or 'cdf', got {kind!r}")
