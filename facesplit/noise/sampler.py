"""Fresh Gaussian noise for every frame, from a cryptographic keystream.

The keystream is AES-256 in counter mode keyed from ``os.urandom``: an observer of any number of noisy
activations learns nothing about the noise of other frames (unlike Mersenne Twister, whose state its outputs
reveal), and a counter that only moves forward never repeats a block, so no two frames share noise.
A fixed seed exists only for reproducible evaluation, and must be asked for by name.
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_MANTISSA_MASK = (1 << 23) - 1  # float32 mantissa bits
_ONE_BITS = 0x3F800000  # the bits of 1.0f


class GaussianStream:
    """Standard normal float32 tensors from AES-256-CTR + Box-Muller; never the same draw twice."""

    def __init__(self, *, seed_for_reproducible_evaluation: int | None = None) -> None:
        if seed_for_reproducible_evaluation is None:
            key = os.urandom(32)
        else:
            key = hashlib.sha256(f"frosted-eval-seed:{seed_for_reproducible_evaluation}".encode()).digest()
        self._keystream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def _uniform_pairs(self, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self._keystream.update(bytes(8 * pairs))  # encrypting zeros yields the keystream itself
        bits = torch.frombuffer(bytearray(raw), dtype=torch.int32)
        # 23 random bits as the mantissa of a float in [1, 2) (exponent bits of 1.0 OR-ed in), then 2 - x:
        # uniform on (0, 1], so log() is finite; three integer/float ops instead of a conversion and scaling
        uniform = bits.bitwise_right_shift_(9).bitwise_and_(_MANTISSA_MASK).bitwise_or_(_ONE_BITS)
        uniform = uniform.view(torch.float32).neg_().add_(2.0)
        return uniform[:pairs], uniform[pairs:]

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        count = math.prod(shape)
        pairs = (count + 1) // 2
        u1, u2 = self._uniform_pairs(pairs)
        radius = u1.log_().mul_(-2.0).sqrt_()
        angle = u2.mul_(2 * math.pi)
        out = torch.empty(2 * pairs)
        torch.cos(angle, out=out[:pairs]).mul_(radius)
        torch.sin(angle, out=out[pairs:]).mul_(radius)
        return out[:count].view(shape)
