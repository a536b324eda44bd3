"""The orthonormal 2-D DCT-II over an activation's last two (H, W) dimensions.

Neighbouring positions of an activation map are strongly correlated, so independent noise per position is
partly averaged away by anyone who smooths it (an image prior does exactly that). Per spatial frequency,
the coefficients are nearly uncorrelated, and a profile can put its noise on the frequencies that carry
detail the tail does not need. The transform is orthonormal: Gaussian noise keeps its total power, and the
likelihood of an observation is the same computed on either side.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def dct_matrix(size: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(size, size) orthonormal DCT-II matrix: row k is the k-th cosine, so ``D @ x`` transforms a column."""
    if device.type != "cpu":
        return dct_matrix(size).to(device)
    k = torch.arange(size, dtype=torch.float64).view(-1, 1)
    n = torch.arange(size, dtype=torch.float64).view(1, -1)
    matrix = torch.cos(math.pi * (n + 0.5) * k / size) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix.float()


def to_frequencies(maps: torch.Tensor) -> torch.Tensor:
    """(..., H, W) maps -> their (..., H, W) DCT coefficients, lowest frequency at [..., 0, 0]."""
    height, width = maps.shape[-2:]
    return dct_matrix(height, maps.device) @ maps @ dct_matrix(width, maps.device).T


def from_frequencies(coefficients: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_frequencies`."""
    height, width = coefficients.shape[-2:]
    return dct_matrix(height, coefficients.device).T @ coefficients @ dct_matrix(width, coefficients.device)


def to_frequencies_channels_last(values: torch.Tensor) -> torch.Tensor:
    """`to_frequencies` for (N, H, W, R) values (the maps' index last): two plain matrix products."""
    n, height, width, r = values.shape
    rows = (dct_matrix(height) @ values.reshape(n, height, width * r)).view(n, height, width, r)
    return dct_matrix(width) @ rows


def from_frequencies_channels_last(coefficients: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_frequencies_channels_last`."""
    n, height, width, r = coefficients.shape
    rows = (dct_matrix(height).T @ coefficients.reshape(n, height, width * r)).view(n, height, width, r)
    return dct_matrix(width).T @ rows
