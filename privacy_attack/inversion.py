"""Optimisation inversion: the image whose head output best explains a noisy activation. No training data.

Given z (one frame or a k-frame average), the profile's mu and the noise std s of z, minimise

    mean((w * (head(x) + mu - z))^2) + tv_weight * TV(x),    w = (1 / s) / rms(1 / s)

(for a profile with a basis V, on the coordinates: mean((w * (V^T head(x) + mu - V^T z))^2)).

over images x with Adam. Up to its scale the first term is the Gaussian negative log-likelihood of z (the
exact noise model the edge uses), so each element counts by how little noise it carries; the total variation
term is the prior that picks a natural-looking image among the many with similar activations. With no noise
(s = 0) the data term is plain MSE. The weights are scaled to mean square 1 so that the prior's weight,
tuned without noise, keeps its meaning at every noise level: with the raw 1/s^2 a 30-frame average through
inception3-alpha-0.4 weighs its data term ~390x a clean one's and the prior vanishes (measured on a GPU,
`bench/attack_budget.py`: raw weights with TV 3 gave colour speckle, face SSIM 0.051; raw TV 300, 0.77 in
the scaled units, gave 0.318).

The prior's weight depends on where the head ends (`tv_weight_for`): the RDCL's output pins pixels down
closely and wants little smoothing; after the Inception blocks much more of the image is free and the
inversion fills it with speckle unless the prior is stronger.

For speed the image is a low-resolution parameterisation (default 128x128; conv1 samples a 1024 input at
stride 4, so 256 is the most it could use) upsampled bilinearly to the model input; pixels live in [0, 1] and are
clipped after every step so the head only sees valid 8-bit-range images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from facesplit.noise.profile import NoiseProfile
from facesplit.preprocess import BGR_MEAN


@dataclass(frozen=True)
class InversionConfig:
    steps: int = 200  # ~0.07 s each at a 1024x1024 input on 2 idle CPU cores: ~15 s per image
    # Side of the optimised image (the longer side for a non-square input). Tuned at sigma = 0 on face-crop
    # SSIM (img1, img18): 128 beat 256 (0.58-0.65 vs 0.41-0.44), a coarser image being its own smoothness
    # prior; lr 0.3 / tv 0.3 beat lr 0.1 / tv 0.1 (0.70-0.76 vs 0.60-0.66 at 200 steps).
    resolution: int = 128
    lr: float = 0.3  # Adam step, in units of the full pixel range [0, 1]
    lr_final_ratio: float = 0.1  # cosine decay to lr * this: big moves first, then settle
    tv_weight: float | None = None  # relative to the (scaled) data term; None: `tv_weight_for` the head's split
    seed: int = 0
    progress: bool = False


# Tuned on face-crop SSIM and re-identification without noise, 18 labelled victims: rdcl 0.3 (above); after
# inception3, 100 steps on 2 cores: TV 0.3 speckle (SSIM 0.105), TV 3 0.296 with 3/13 re-identified, TV 30
# 0.302 with 0/13; 1600 steps on a GPU: TV 1 0.328 5/13, TV 3 0.322 3/13, TV 10 0.290 2/13. The deeper
# splits in between were not tuned and take the deepest's.
TV_WEIGHTS = {"rdcl": 0.3}
DEEP_TV_WEIGHT = 3.0


def tv_weight_for(split: str) -> float:
    """The total-variation weight the inversion uses at a model split (see `TV_WEIGHTS`)."""
    return TV_WEIGHTS.get(split, DEEP_TV_WEIGHT)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (anisotropic L1 TV): edges survive, speckle does not."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    return dx + dy


def invert(head: nn.Module, z: torch.Tensor, profile: NoiseProfile | None = None,
           noise_std: torch.Tensor | None = None, input_size: tuple[int, int] = (1024, 1024),
           config: InversionConfig = InversionConfig()) -> np.ndarray:
    """The reconstructed model-input canvas, (H, W, 3) uint8 BGR, for one observed activation ``z``
    (1, C, h, w). ``profile`` gives mu (and the basis, if any); ``noise_std`` (mu's shape) is the std of
    ``z``'s noise (sigma / sqrt(k) for a k-frame average). No profile, or None or all-zero ``noise_std``,
    means no noise (MSE)."""
    return invert_batch(head, z, profile, noise_std, input_size, config)[0]


def invert_batch(head: nn.Module, z: torch.Tensor, profile: NoiseProfile | None = None,
                 noise_std: torch.Tensor | None = None, input_size: tuple[int, int] = (1024, 1024),
                 config: InversionConfig = InversionConfig()) -> np.ndarray:
    """`invert` for N observed activations at once, (N, C, h, w) -> (N, H, W, 3), each image optimised as if
    alone (Adam is per element and the loss a sum of per-image terms, scaled alike). Runs on ``z``'s device
    (``head`` must be there too): on a GPU, an attack budget that takes an hour on a CPU takes a minute."""
    device = z.device
    width, height = input_size
    scale = config.resolution / max(width, height)
    low = (max(1, round(height * scale)), max(1, round(width * scale)))
    if profile is not None:
        profile = profile.to(device)
    target = (z if profile is None else profile.coordinates(z.float()) - profile.mu).detach().float()
    along = nn.Identity() if profile is None else profile.coordinates
    noisy = noise_std is not None and bool((noise_std > 0).all())
    weight = None  # no noise: plain MSE
    if noisy:
        assert noise_std is not None
        inverse = 1.0 / noise_std.float().to(device)
        weight = (inverse / inverse.pow(2).mean().sqrt()).unsqueeze(0)
    tv_weight = config.tv_weight if config.tv_weight is not None else tv_weight_for(getattr(head, "split", "rdcl"))

    count = z.shape[0]
    generator = torch.Generator().manual_seed(config.seed)
    start = torch.from_numpy(BGR_MEAN / 255.0).float().view(1, 3, 1, 1).expand(count, 3, *low)
    # start from the mean colour (zero input) plus a little noise so ReLUs are not all tied at one point
    pixels = (start + 0.02 * torch.randn(count, 3, *low, generator=generator)).clamp(0, 1)
    pixels = pixels.to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([pixels], lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, config.steps),
                                                          eta_min=config.lr * config.lr_final_ratio)
    mean = torch.from_numpy(BGR_MEAN).view(1, 3, 1, 1).to(device)
    for _ in tqdm(range(config.steps), desc="inversion", disable=not config.progress, leave=False):
        x = F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False) * 255.0 - mean
        residual = along(head(x.contiguous(memory_format=torch.channels_last))) - target
        if weight is not None:
            residual = residual * weight
        # per image: mean over its elements, then summed over the batch, so each image sees its own loss
        loss = count * (residual.pow(2).mean() + tv_weight * total_variation(pixels))
        optimiser.zero_grad(set_to_none=True)
        loss.backward(inputs=[pixels])  # the head's weights need no gradient
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            pixels.clamp_(0, 1)

    with torch.no_grad():
        full = F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False)
    return np.clip(np.round(full.permute(0, 2, 3, 1).cpu().numpy() * 255.0), 0, 255).astype(np.uint8)
