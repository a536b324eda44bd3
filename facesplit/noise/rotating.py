"""A defence against k-frame averaging of a static scene.

With fresh noise per frame, an attacker who averages k noisy activations of a still scene divides the
noise's standard deviation by sqrt(k). Here each frame's noise is split in two independent Gaussian parts
of the same total variance as the profile's:

    z_t = a + mu + sigma * (sqrt(1 - f) * eps_t + sqrt(f) * xi_r),     r = t // rotation_frames

(for a profile with a basis, in its coordinates: z_t = V (V^T a + mu + ...)).

eps_t is fresh every frame; xi_r is a secret component drawn fresh (from the same CSPRNG) at each rotation
and never reused. A single frame's noise has exactly the profile's distribution, so the tail's accuracy is
unchanged; but averaging within one rotation cancels only the fresh part: the residual variance stays at
least f * sigma^2, and an attacker needs `rotation_frames` times more frames to average the secret part
away than with fresh noise alone.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from facesplit.noise.profile import NoiseProfile, ProfileError
from facesplit.noise.sampler import GaussianStream
from facesplit.noise.streams import NoiseStream

SECRET_FRACTION = 0.5  # of the profile's variance, in the secret part
ROTATION_FRAMES = 30  # frames that share one secret draw


def averaged_within_rotation(profile: NoiseProfile, k: int, secret_fraction: float = SECRET_FRACTION
                             ) -> NoiseProfile:
    """What an attacker who averages k frames of one rotation faces: the profile with sigma scaled by
    sqrt(f + (1 - f) / k), noise-aware tail dropped (a bench and attack helper; the edge never applies it)."""
    scale = math.sqrt(secret_fraction + (1 - secret_fraction) / k)
    return replace(profile, sigma=profile.sigma * scale, tail_state=None)


class RotatingObfuscator:
    """Drop-in for `Obfuscator` (callable on (N, C, H, W) activations, one frame per row, in order)."""

    def __init__(self, profile: NoiseProfile, secret_fraction: float = SECRET_FRACTION,
                 rotation_frames: int = ROTATION_FRAMES,
                 stream: NoiseStream | None = None) -> None:
        if not 0 <= secret_fraction <= 1 or rotation_frames < 1:
            raise ValueError("secret_fraction must be in [0, 1] and rotation_frames >= 1")
        self.stream = stream or GaussianStream()
        if profile.mu.device != self.stream.device:  # as `Obfuscator`: the profile where the noise is drawn
            profile = profile.to(self.stream.device)
        self.profile = profile
        self.fresh_scale = profile.sigma * math.sqrt(1 - secret_fraction)
        self.secret_scale = profile.sigma * math.sqrt(secret_fraction)
        self.rotation_frames = rotation_frames
        self.frames = 0
        self.secret = torch.empty(0)

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        if tuple(activation.shape[1:]) != self.profile.shape:
            raise ProfileError(f"activation shape {tuple(activation.shape[1:])} does not match the profile's "
                               f"{self.profile.shape}")
        if activation.device != self.stream.device:
            activation = activation.to(self.stream.device)
        coordinates = self.profile.coordinates(activation)  # the activation itself for a per-channel profile
        out = torch.empty_like(coordinates)
        shape = tuple(self.profile.mu.shape)
        for i in range(activation.shape[0]):
            if self.frames % self.rotation_frames == 0:
                self.secret = self.stream.normal(shape).mul_(self.secret_scale)  # fresh, once
            fresh = self.stream.normal(shape)
            out[i] = torch.addcmul(coordinates[i] + self.profile.mu + self.secret, self.fresh_scale, fresh)
            self.frames += 1
        return self.profile.expand(out)
