"""Fresh Gaussian noise for every frame, from a cryptographic keystream.

The keystream is AES-256 in counter mode keyed from ``os.urandom``: an observer of any number of noisy
activations learns nothing about the noise of other frames (unlike Mersenne Twister, whose state its outputs
reveal), and a counter that only moves forward never repeats a block, so no two frames share noise. A process
forked from one holding a stream (multiprocessing's workers, a notebook's pool) would carry on the same keystream
as its parent, and the difference of two such frames would cancel their noise: each stream takes a fresh key in
a process other than the one it was keyed in. A fixed seed exists only for reproducible evaluation, and must be
asked for by name.
"""

from __future__ import annotations

import hashlib
import math
import os
from functools import lru_cache

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

_MANTISSA_MASK = (1 << 23) - 1  # float32 mantissa bits
_ONE_BITS = 0x3F800000  # the bits of 1.0f
_BLOCK_WORDS = 4  # one AES block, in float32 words


class GaussianStream:
    """Standard normal float32 tensors from AES-256-CTR + Box-Muller; never the same draw twice."""

    device = torch.device("cpu")  # where its tensors are drawn (`facesplit.noise.chacha` draws on any device)

    def __init__(self, *, seed_for_reproducible_evaluation: int | None = None) -> None:
        self._seeded = seed_for_reproducible_evaluation is not None
        if seed_for_reproducible_evaluation is None:
            key = os.urandom(32)
        else:
            key = hashlib.sha256(f"frosted-eval-seed:{seed_for_reproducible_evaluation}".encode()).digest()
        self._keyed_in = os.getpid()
        self._keystream = _aes_ctr(key)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        if os.getpid() != self._keyed_in and not self._seeded:  # a forked copy: never its parent's keystream
            self._keyed_in = os.getpid()
            self._keystream = _aes_ctr(os.urandom(32))
        count = math.prod(shape)
        pairs = (count + 1) // 2
        # The keystream is written straight into the output's memory (CTR's update_into may need up to one
        # block beyond the data), then turned into normals there: no copies, one temporary of half size.
        out = torch.empty(2 * pairs + _BLOCK_WORDS, dtype=torch.float32)
        written = self._keystream.update_into(_zeros(8 * pairs), out.numpy().view(np.uint8))
        assert written == 8 * pairs
        out = out[:2 * pairs]
        # 23 random bits as the mantissa of a float in [1, 2) (the exponent bits of 1.0 OR-ed in), then 2 - x:
        # uniform on (0, 1], so log() is finite; three integer/float ops instead of a conversion and scaling
        out.view(torch.int32).bitwise_right_shift_(9).bitwise_and_(_MANTISSA_MASK).bitwise_or_(_ONE_BITS)
        out.neg_().add_(2.0)
        return box_muller_(out)[:count].view(shape)


def _aes_ctr(key: bytes) -> CipherContext:
    """AES-256-CTR from block 0 of a fresh ``key``: the keystream is the encryption of zeros."""
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()


def box_muller_(uniform: torch.Tensor) -> torch.Tensor:
    """2k uniforms on (0, 1] -> 2k standard normals, in place: the first half gives the radii, the second
    the angles (shared with `facesplit.noise.chacha`, so both streams map words to normals the same way)."""
    pairs = uniform.numel() // 2
    radius = uniform[:pairs].log_().mul_(-2.0).sqrt_()  # Box-Muller, in place on the two halves
    angle = uniform[pairs:].mul_(2 * math.pi)
    cosine = torch.cos(angle)
    angle.sin_().mul_(radius)
    radius.mul_(cosine)
    return uniform


@lru_cache(maxsize=4)
def _zeros(size: int) -> bytes:
    """Plaintext for the keystream (encrypting zeros yields the keystream itself), kept for the next frame."""
    return bytes(size)
