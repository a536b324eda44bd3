"""The noise an attacker sees in a crop of the activation, drawn for crops directly.

Centred (mu subtracted, which anyone who knows the profile does), a crop of what the edge sends is the crop
of the clean activation's kept part plus the crop of the noise, and the noise does not depend on the frame.
So a crop's observation can be drawn without the rest of the frame: per element or along a channel basis,
from sigma's own crop; per spatial frequency (the noise is correlated across the whole map), from a whole
map of noise, cropped. `tests/test_identity_attack.py` checks these against the product's `Obfuscator`.

k-frame averaging and the rotating secret only rescale sigma (`observe.effective_sigma`,
`facesplit.noise.rotating.averaged_within_rotation`): a `NoiseCondition` names a profile and that scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from facesplit.noise.dct import from_frequencies
from facesplit.noise.profile import NoiseProfile
from facesplit.noise.rotating import ROTATION_FRAMES, SECRET_FRACTION


@dataclass(frozen=True)
class NoiseCondition:
    """What one attack faces: a profile (None: the clean activation) at ``scale`` times its sigma."""

    label: str  # "clean", "k=1", "k=30", "k=30 rotating"
    profile: NoiseProfile | None
    scale: float = 1.0
    k: int = 1


def noise_conditions(profile: NoiseProfile | None, k_values: tuple[int, ...] = (1, 30),
                     rotating: bool = True) -> list[NoiseCondition]:
    """The conditions an attack is run at: each k (sigma / sqrt(k)) and, with ``rotating``, the rotating
    secret averaged over a whole rotation (sigma * sqrt(f + (1 - f) / k) at k = `ROTATION_FRAMES`)."""
    if profile is None:
        return [NoiseCondition("clean", None)]
    out = [NoiseCondition(f"k={k}", profile, 1 / math.sqrt(k), k) for k in k_values]
    if rotating:
        k = ROTATION_FRAMES
        out.append(NoiseCondition(f"k={k} rotating", profile,
                                  math.sqrt(SECRET_FRACTION + (1 - SECRET_FRACTION) / k), k))
    return out


def crop_maps(maps: torch.Tensor, origins: torch.Tensor, cells: int) -> torch.Tensor:
    """(C, H, W) or (N, C, H, W) maps -> (N, C, cells, cells): the crop at each of ``origins`` (N, 2)."""
    steps = torch.arange(cells, device=origins.device)
    rows = (origins[:, 0, None] + steps)[:, :, None]  # (N, n, 1)
    columns = (origins[:, 1, None] + steps)[:, None, :]  # (N, 1, n)
    if maps.dim() == 3:
        return maps[:, rows, columns].permute(1, 0, 2, 3)
    index = torch.arange(len(origins), device=origins.device)[:, None, None]
    return maps.permute(0, 2, 3, 1)[index, rows, columns].permute(0, 3, 1, 2)


class CropObserver:
    """Turns clean crops into what the attacker observes under a `NoiseCondition`, fresh noise each call."""

    def __init__(self, condition: NoiseCondition, cells: int) -> None:
        self.condition = condition
        self.cells = cells
        profile = condition.profile
        self._projection = None
        if profile is not None and profile.basis is not None and profile.basis.shape[1] < profile.basis.shape[0]:
            # directions the profile drops never leave the edge: the attacker sees the kept part only
            self._projection = profile.basis @ profile.basis.T

    @property
    def projects(self) -> bool:
        """Whether the attacker sees a projection of the crops (a profile that drops directions)."""
        return self._projection is not None

    def kept(self, crops: torch.Tensor) -> torch.Tensor:
        crops = crops.float()
        if self._projection is None:
            return crops
        return torch.einsum("cd,ndhw->nchw", self._projection, crops)

    def noise(self, origins: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, C, n, n) noise for crops at ``origins``; zeros for the clean condition."""
        profile, n = self.condition.profile, len(origins)
        if profile is None:
            raise ValueError("the clean condition has no noise")
        sigma = profile.sigma * self.condition.scale
        if not profile.dct:
            local = crop_maps(sigma, origins, self.cells)
            noise = torch.randn(local.shape, generator=generator) * local
            return noise if profile.basis is None else torch.einsum("cr,nrhw->nchw", profile.basis, noise)
        whole = from_frequencies(torch.randn((n, *sigma.shape), generator=generator) * sigma)
        if profile.basis is not None:
            whole = torch.einsum("cr,nrhw->nchw", profile.basis, whole)
        return crop_maps(whole, origins, self.cells)

    def observe(self, crops: torch.Tensor, origins: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Centred observations of ``crops`` (N, C, n, n) at ``origins``: kept part + fresh noise."""
        kept = self.kept(crops)
        if self.condition.profile is None:
            return kept
        return kept + self.noise(origins, generator)
