"""What face SSIM gives for knowing a little of each face and nothing of who it is: references, not attacks.

Face SSIM rewards a face's overall brightness, contrast and coarse light as much as its features, and a detector
has to keep those to find the face. Two guesses that know only that much of each victim's face put an attack's
SSIM in proportion: the attacker's average face recoloured by a ridge from the victim face's per-channel mean
and standard deviation (6 numbers, fitted on the attacker's faces), and the victim's face itself as an n x n
thumbnail, upsampled. An attack that scores no more than these has learned no more than that.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STATISTICS_SIDE = 32  # faces are compared on this grid for their statistics (the attacker's faces are 32 px)


def face_statistics(faces: torch.Tensor) -> torch.Tensor:
    """(N, 3, s, s) faces -> (N, 6) float64: each channel's mean and standard deviation at 32 px."""
    small = F.interpolate(faces.double(), size=(STATISTICS_SIDE, STATISTICS_SIDE), mode="area")
    return torch.cat([small.mean((2, 3)), small.std((2, 3))], 1)


def colour_and_contrast_faces(attacker: torch.Tensor, victims: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """The victims' faces as a ridge from their `face_statistics` predicts them, fitted on the attacker's:
    (M, 3, 32, 32) uint8 from (N, 3, s, s) and (M, 3, t, t) uint8 faces."""
    x = face_statistics(attacker)
    y = F.interpolate(attacker.double(), size=(STATISTICS_SIDE, STATISTICS_SIDE), mode="area").flatten(1)
    x_mean, y_mean, x_std = x.mean(0), y.mean(0), x.std(0).clamp_min(1e-6)
    design = (x - x_mean) / x_std
    weight = torch.linalg.solve(design.T @ design + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype),
                                design.T @ (y - y_mean))
    predicted = ((face_statistics(victims) - x_mean) / x_std) @ weight + y_mean
    return predicted.clamp(0, 255).round().to(torch.uint8).view(-1, 3, STATISTICS_SIDE, STATISTICS_SIDE)


def thumbnail_faces(faces: torch.Tensor, side: int = 4) -> torch.Tensor:
    """Each face reduced to ``side`` x ``side`` pixels (area average) and upsampled back (bilinear): uint8."""
    small = F.interpolate(faces.double(), size=(side, side), mode="area")
    return F.interpolate(small, size=faces.shape[-2:], mode="bilinear", align_corners=False
                         ).clamp(0, 255).round().to(torch.uint8)


def as_images(faces: torch.Tensor) -> list[np.ndarray]:
    return [np.ascontiguousarray(face.permute(1, 2, 0).numpy()) for face in faces]
