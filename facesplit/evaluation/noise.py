"""Evaluation noise that does not depend on which process evaluates an image.

With ``--seed``, image KEY's noise comes from a stream keyed by (seed, KEY) alone: the same in a single run, in
the process that evaluates only KEY's fold, and whatever images came before it. Without a seed every image's
noise is fresh from the OS's CSPRNG, as in the product. The stream is the one for the device the activations are
on (`facesplit.noise.streams.gaussian_stream`): AES-CTR on the CPU, ChaCha20 on a GPU, so a seed reproduces
noise per device, not across them.
"""

from __future__ import annotations

import copy
import hashlib

import torch

from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.streams import gaussian_stream


def image_seed(seed: int, key: str) -> int:
    """The evaluation seed of one image: 64 bits of sha256(seed, image key)."""
    return int.from_bytes(hashlib.sha256(f"frosted-eval-image:{seed}:{key}".encode()).digest()[:8], "big")


class ImageNoise:
    """A profile's noise, one stream per image (see the module's docstring)."""

    def __init__(self, profile: NoiseProfile, seed: int | None, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.device = torch.device(device)
        self._obfuscator = Obfuscator(profile, gaussian_stream(self.device))  # used as is without a seed

    def for_image(self, key: str) -> Obfuscator:
        if self.seed is None:
            return self._obfuscator
        one = copy.copy(self._obfuscator)  # shares the profile's tensors; only the stream is its own
        one.stream = gaussian_stream(self.device, seed_for_reproducible_evaluation=image_seed(self.seed, key))
        return one

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        """As a plain transform (no image key): the unseeded stream."""
        return self._obfuscator(activation)
