"""Noise fitted against the identity probe (after Cloak, Shredder, ResSFL): the `facesplit.noise.fit.Adversary`
that `frosted fit-noise --adversary-faces DIR` trains against.

Before every joint epoch of the fit the probe is retrained from scratch on the current noise (the noise-aware
ridge of `privacy_attack.probe`, closed form: it is the converged probe for that noise, not a stale one); every
step then adds minus its contrastive loss on a batch of the attacker's face crops under the current sigma, so
sigma grows where the probe reads identity, while the task term keeps the detector working. A profile fitted
this way must be judged by attackers trained afresh on its final noise (the table does), never by this one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from facesplit.noise.profile import NoiseProfile
from privacy_attack.crop_cache import crops_folder, crops_key, load_or_make
from privacy_attack.crop_noise import CropObserver, NoiseCondition, crop_maps
from privacy_attack.crops import CropSet, face_crops
from privacy_attack.descriptors import DescribedFace, describe
from privacy_attack.people import FacePhoto
from privacy_attack.probe import Design, LinearMap, design_for, fit_ridge
from privacy_attack.scene import Backgrounds

ADVERSARY_SIDE = 96  # the face size the target is set at


class IdentityAdversary:
    """The noise-aware ridge identity probe on attacker face crops at the fit's split."""

    def __init__(self, faces: CropSet, weight: float, batch: int = 256, seed: int = 0) -> None:
        self.faces = faces
        self.weight = weight
        self.batch = batch
        self.seed = seed
        self.centre = faces.descriptors.mean(0)
        self._design: Design | None = None
        self._probe: LinearMap | None = None
        self._energy: torch.Tensor | None = None
        self._signal = 0.0

    def _observer(self, sigma: torch.Tensor) -> CropObserver:
        profile = NoiseProfile(torch.zeros_like(sigma), sigma, 0.0, (1024, 1024), "adversary")
        return CropObserver(NoiseCondition("k=1", profile), self.faces.cells)

    def refit(self, sigma: torch.Tensor) -> dict:
        observer = self._observer(sigma)
        if self._design is None:
            self._design = design_for(self.faces, observer, self.seed)
        self._probe, log = fit_ridge(self.faces, observer, self.faces.descriptors, seed=self.seed,
                                     design=self._design)
        # per flattened crop element, what a unit of noise there adds to the read-out's energy
        self._energy = ((self._probe.weight ** 2).sum(1) / self._probe.std ** 2).detach()
        with torch.no_grad():
            clean = self._probe(observer.kept(self.faces.crops[:2048])) - self._probe.bias
        self._signal = float((clean ** 2).sum(1).mean())
        return {"probe_held_out_rank1_100": max(log.validation.values()), "probe_ridge": log.ridge}

    def loss(self, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The information the probe's read-out gets, 1/2 log(1 + S/N): S the energy of its predictions on the
        clean crops, N the energy the noise adds to them, sum_f |w_f|^2 sigma_f^2 over the crop's elements,
        averaged over where faces sit. Exact for the linear probe and smooth in sigma; a sampled contrastive
        loss moves each element of sigma by a gradient mostly made of its own noise."""
        if self._probe is None or self._energy is None:
            raise RuntimeError("refit the adversary before asking for its loss")
        pick = torch.randint(len(self.faces), (self.batch,), generator=generator)
        local = crop_maps(sigma, self.faces.origins[pick], self.faces.cells).flatten(1)
        noise = (local ** 2 * self._energy).sum(1).mean()
        return 0.5 * torch.log1p(self._signal / noise)


def adversary_crops(head: torch.nn.Module, split: str, photos: Sequence[FacePhoto],
                    side: int = ADVERSARY_SIDE, seed: int = 0, progress: bool = True) -> CropSet:
    """The attacker's faces placed at ``side`` px, as crops of ``split``'s activation (dlib's descriptors
    cached as everywhere)."""
    described: list[DescribedFace] = describe(photos, progress=progress, desc="adversary faces: dlib")
    backgrounds = Backgrounds.shipped()
    key = crops_key(head, described, backgrounds, side=side, centred=False, seed=seed, whole_frame=False)
    return load_or_make(crops_folder(), key, lambda: face_crops(
        head, described, side, backgrounds, seed=seed, whole_frame=False, progress=progress,
        desc="adversary faces"))[split]
