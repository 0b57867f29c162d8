"""Per-feature normalisers whose statistics are buffers, so they travel in a model's ``state_dict``.

Both act on the last dimension and broadcast over any leading dimensions: ``x`` of shape
``(..., *shape)`` where ``shape`` is the feature shape given at construction (usually ``(dim,)``).
Build one from data with ``fit``; build an identity one of the right shape with the constructor and
``load_state_dict`` into it when restoring a saved model.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["DEFAULT_EPS", "GaussianNormalizer", "MinMaxNormalizer", "NormalizerKind", "make_normalizer"]

#: How a diffusion planner normalises observations: standardise, or map the data's range to [-1, 1].
NormalizerKind = Literal["gaussian", "limits"]

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


def make_normalizer(
    kind: NormalizerKind, dim: int
) -> tuple[GaussianNormalizer | MinMaxNormalizer, tuple[float, float] | None]:
    """A (not yet fitted) normaliser of ``dim`` features and the range to clip x0 estimates to.

    ``"gaussian"`` standardises and does not clip; ``"limits"`` maps the data's range to [-1, 1]
    and clips there (Diffuser's maze2d ``LimitsNormalizer`` and Decision Diffuser's / MADiff's
    ``clip_denoised``).

    >>> normalizer, clip_range = make_normalizer("limits", 3)
    >>> type(normalizer).__name__, clip_range
    ('MinMaxNormalizer', (-1.0, 1.0))
    """
    if kind == "gaussian":
        return GaussianNormalizer(dim), None
    if kind == "limits":
        return MinMaxNormalizer(dim), (-1.0, 1.0)
    raise ValueError(f"normalizer must be 'gaussian' or 'limits', got {kind!r}")
