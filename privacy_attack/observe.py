"""What the attacker sees: noisy activations, and their average over k frames of a static scene.

The noise is fresh per frame, so averaging k frames of a camera that looks at a still scene divides its
standard deviation by sqrt(k) while the signal and mu stay: a static camera leaks more the longer it runs.
"""

from __future__ import annotations

import math

import torch

from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.sampler import GaussianStream


def observe(activation: torch.Tensor, profile: NoiseProfile | None, k: int = 1,
            stream: GaussianStream | None = None) -> torch.Tensor:
    """The mean of ``k`` noisy copies of ``activation`` (1, C, H, W), each with fresh noise from the product's
    own `Obfuscator` (so the attack sees exactly what the edge sends); the clean activation without a profile."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if profile is None:
        return activation.detach().clone()
    obfuscate = Obfuscator(profile, stream)
    total = torch.zeros_like(activation)
    for _ in range(k):
        total += obfuscate(activation.detach())
    return total / k


def effective_sigma(profile: NoiseProfile | None, k: int = 1) -> torch.Tensor | None:
    """Per-element noise std of a k-frame average: sigma / sqrt(k) (None: no noise at all)."""
    if profile is None:
        return None
    return profile.sigma / math.sqrt(k)

