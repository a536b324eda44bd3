"""Noise fitted against the identity probe (after Cloak, Shredder, ResSFL): the `facesplit.noise.fit.Adversary`
that `frosted fit-noise --adversary-faces DIR` trains against.

Before every joint epoch of the fit the linear probe is retrained from scratch on the current noise (the
noise-aware ridge of `privacy_attack.probe`, closed form: it is the converged probe for that noise, not a stale
one), and every step pays for the information its read-out still gets, so sigma grows where it reads identity
while the task term keeps the detector working. With ``mlp_steps``, a residual MLP probe (the table's strongest
attack) plays too, in alternating steps after ResSFL: it starts from the ridge, trains ``mlp_steps`` steps on
the current noise before every epoch and one more step beside every step of the fit, while the fit pays for
what it still identifies (its contrastive loss short of chance). A profile fitted this way must be judged by
attackers trained afresh on its final noise (the table does), never by these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from facesplit.noise.profile import NoiseProfile
from privacy_attack.crop_cache import crops_folder, crops_key, load_or_make
from privacy_attack.crop_noise import CropObserver, NoiseCondition, crop_maps
from privacy_attack.crops import CropSet, face_crops
from privacy_attack.descriptors import DescribedFace, describe
from privacy_attack.people import FacePhoto
from privacy_attack.probe import (
    Design,
    LinearMap,
    ResidualProbe,
    contrastive_loss,
    design_for,
    fit_ridge,
    holdout,
    identification_score,
)
from privacy_attack.scene import Backgrounds

ADVERSARY_SIDE = 96  # the face size the target is set at


class IdentityAdversary:
    """The identity probes on attacker face crops at the fit's split: the noise-aware ridge and, with
    ``mlp_steps``, the residual MLP trained against the current noise."""

    def __init__(self, faces: CropSet, weight: float, batch: int = 256, seed: int = 0, mlp_steps: int = 0,
                 mlp_lr: float = 3e-4) -> None:
        self.faces = faces
        self.weight = weight
        self.batch = batch
        self.seed = seed
        self.mlp_steps = mlp_steps
        self.mlp_lr = mlp_lr
        self._mlp: ResidualProbe | None = None
        self._mlp_optimiser: torch.optim.Optimizer | None = None
        self._fit_index, self._val_index = holdout(faces.identities, seed)
        self._mlp_generator = torch.Generator().manual_seed(seed + 3)
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
        scores = {"probe_held_out_rank1_100": max(log.validation.values()), "probe_ridge": log.ridge}
        if self.mlp_steps:
            scores["mlp_held_out_rank1_100"] = self._train_mlp(sigma, observer)
        return scores

    def _train_mlp(self, sigma: torch.Tensor, observer: CropObserver) -> float:
        """``mlp_steps`` steps of the MLP probe on the current noise (from an honest ridge the first time);
        returns its held-out rank-1 among 100 on the attacker's held-out identities."""
        if self._mlp is None:
            start, _ = fit_ridge(self.faces, observer, self.faces.descriptors, seed=self.seed, design=self._design,
                                 refit=False)
            self._mlp = ResidualProbe(start)
            self._mlp_optimiser = torch.optim.AdamW(self._mlp.parameters(), lr=self.mlp_lr, weight_decay=1e-2)
        for _ in range(self.mlp_steps):
            self._mlp_step(sigma.detach())
        val = self._val_index
        observed = observer.observe(self.faces.crops[val], self.faces.origins[val], self._mlp_generator)
        self._mlp.eval()
        with torch.no_grad():
            score = identification_score(self._mlp(observed), self.faces.descriptors[val], self.centre)
        return score

    def _noisy_batch(self, sigma: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of the attacker's fit crops under ``sigma`` (differentiable in it) and their descriptors."""
        pick = self._fit_index[torch.randint(len(self._fit_index), (self.batch,), generator=generator)]
        local = crop_maps(sigma, self.faces.origins[pick], self.faces.cells)
        noisy = self.faces.crops[pick].float() + torch.randn(local.shape, generator=generator) * local
        return noisy, self.faces.descriptors[pick]

    def _mlp_step(self, sigma: torch.Tensor) -> None:
        assert self._mlp is not None and self._mlp_optimiser is not None
        noisy, targets = self._noisy_batch(sigma, self._mlp_generator)
        self._mlp.train()
        loss = contrastive_loss(self._mlp(noisy), targets, self.centre)
        self._mlp_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self._mlp_optimiser.step()

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
        linear = 0.5 * torch.log1p(self._signal / noise)
        if not self.mlp_steps:
            return linear
        self._mlp_step(sigma.detach())  # the probe's move, then the noise's
        assert self._mlp is not None
        noisy, targets = self._noisy_batch(sigma, generator)
        self._mlp.eval()
        # what the MLP still identifies: its contrastive loss short of chance's, log(batch)
        short = math.log(self.batch) - contrastive_loss(self._mlp(noisy), targets, self.centre)
        return linear + torch.relu(short)


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
