"""Which sampler draws a profile's noise: the one place that picks it for a device.

On the CPU, AES-256-CTR in OpenSSL (`facesplit.noise.sampler`, its numbers unchanged); on any other device,
ChaCha20 in torch ops on that device (`facesplit.noise.chacha`), so noise for activations already on a GPU
never crosses the bus. Both are keyed from ``os.urandom`` and never repeat a draw.
"""

from __future__ import annotations

from typing import Protocol

import torch

from facesplit.noise.chacha import ChaChaGaussianStream
from facesplit.noise.sampler import GaussianStream


class NoiseStream(Protocol):
    """Fresh standard normal float32 tensors on ``device``, never the same draw twice."""

    device: torch.device

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor: ...


def gaussian_stream(device: torch.device | str = "cpu", *,
                    seed_for_reproducible_evaluation: int | None = None) -> NoiseStream:
    """The sampler for activations on ``device``; a fixed seed only for reproducible evaluation, by name."""
    where = torch.device(device)
    if where.type == "cpu":
        return GaussianStream(seed_for_reproducible_evaluation=seed_for_reproducible_evaluation)
    # compiled on CUDA: one fused kernel per draw instead of ~700 launches of small integer ops
    return ChaChaGaussianStream(where, seed_for_reproducible_evaluation=seed_for_reproducible_evaluation,
                                compiled=where.type == "cuda")
