"""Noise fitted against the identity probe (after Cloak, Shredder, ResSFL): the `facesplit.noise.fit.Adversary`
that `frosted fit-noise --adversary-faces DIR` trains against.

Before every joint epoch of the fit the linear probe is retrained from scratch on the current noise (the
noise-aware ridge of `privacy_attack.probe`, closed form: it is the converged probe for that noise, not a stale
one), and every step pays for the information its read-out still gets, so sigma grows where it reads identity
while the task term keeps the detector working. With ``mlp_steps``, a residual MLP probe (the table's strongest
attack) plays too, in alternating steps after ResSFL: it starts from the ridge, trains ``mlp_steps`` steps on
the current noise before every epoch and one more step beside every step of the fit, while the fit pays for
what it still identifies (its contrastive loss short of chance). With ``face_decoder``, the table's face decoder
(the noise-aware ridge from the crop to the face's 32-px pixels) is refitted beside the ridge probe and its
read-out pays the same information term, so the noise also hides what the face looks like, not only whose it
is. With a rank-R profile (`fit-noise --rank`) the adversary reads the R coordinates the edge keeps
(`in_basis`). A profile fitted this way must be judged by attackers trained afresh on its final noise (the table does),
never by these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class ReadOut:
    """What a linear attack reads off a crop, as the information term needs it: per flattened crop element, the
    energy a unit of noise there adds to its output, and its output's energy on the clean crops."""

    energy: torch.Tensor
    signal: float

    @classmethod
    def of(cls, attack: LinearMap, clean: torch.Tensor) -> ReadOut:
        energy = ((attack.weight ** 2).sum(1) / attack.std ** 2).detach()
        with torch.no_grad():
            signal = float(((attack(clean) - attack.bias) ** 2).sum(1).mean())
        return cls(energy, signal)

    def information(self, local: torch.Tensor) -> torch.Tensor:
        """1/2 log(1 + S/N) for noise of std ``local`` (B, F), N averaged over the batch's face positions."""
        noise = (local ** 2 * self.energy).sum(1).mean()
        return 0.5 * torch.log1p(self.signal / noise)


class IdentityAdversary:
    """The identity probes on attacker face crops at the fit's split: the noise-aware ridge and, with
    ``mlp_steps``, the residual MLP trained against the current noise; with ``face_decoder``, the ridge face
    decoder too."""

    def __init__(self, faces: CropSet, weight: float, batch: int = 256, seed: int = 0, mlp_steps: int = 0,
                 mlp_lr: float = 3e-4, face_decoder: bool = False) -> None:
        self.faces = faces
        self.weight = weight
        self.batch = batch
        self.seed = seed
        self.mlp_steps = mlp_steps
        self.mlp_lr = mlp_lr
        self.face_decoder = face_decoder
        self._mlp: ResidualProbe | None = None
        self._mlp_optimiser: torch.optim.Optimizer | None = None
        self._fit_index, self._val_index = holdout(faces.identities, seed)
        self._mlp_generator = torch.Generator().manual_seed(seed + 3)
        self.centre = faces.descriptors.mean(0)
        self._design: Design | None = None
        self._reads: list[ReadOut] = []

    def in_basis(self, basis: torch.Tensor) -> IdentityAdversary:
        """This adversary on the crops' coordinates along the (C, R) orthonormal ``basis`` (a rank-R profile:
        the edge sends V (V^T a + mu + sigma eps), so the attacker loses nothing by reading V^T z, and the
        directions the profile drops never reach it). Before any refit: its probes are trained afresh."""
        if self._design is not None:
            raise RuntimeError("put the adversary in the basis before it is first refitted")
        along = torch.einsum("cr,nchw->nrhw", basis.float(), self.faces.crops.float()).half()
        return IdentityAdversary(replace(self.faces, crops=along), self.weight, self.batch, self.seed, self.mlp_steps,
                                 self.mlp_lr, self.face_decoder)

    def _observer(self, sigma: torch.Tensor) -> CropObserver:
        profile = NoiseProfile(torch.zeros_like(sigma), sigma, 0.0, (1024, 1024), "adversary")
        return CropObserver(NoiseCondition("k=1", profile), self.faces.cells)

    def refit(self, sigma: torch.Tensor) -> dict:
        observer = self._observer(sigma)
        if self._design is None:
            self._design = design_for(self.faces, observer, self.seed)
        probe, log = fit_ridge(self.faces, observer, self.faces.descriptors, seed=self.seed, design=self._design)
        clean = observer.kept(self.faces.crops[:2048])
        self._reads = [ReadOut.of(probe, clean)]
        scores = {"probe_held_out_rank1_100": max(log.validation.values()), "probe_ridge": log.ridge}
        if self.face_decoder:
            pixels = self.faces.faces.float().flatten(1) / 255.0
            decoder, log = fit_ridge(self.faces, observer, pixels, seed=self.seed, score="mse", design=self._design)
            self._reads.append(ReadOut.of(decoder, clean))
            held = pixels[self._val_index]
            # the share of the held-out faces' pixel variance it explains beyond the attacker's average face
            scores["decoder_held_out_r2"] = 1.0 + max(log.validation.values()) / float(
                ((held - pixels.mean(0)) ** 2).mean())
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
        """The information each linear attack's read-out gets, 1/2 log(1 + S/N) (`ReadOut`): S the energy of its
        predictions on the clean crops, N the energy the noise adds to them, sum_f |w_f|^2 sigma_f^2 over the
        crop's elements, averaged over where faces sit. Exact for a linear attack and smooth in sigma; a sampled
        contrastive loss moves each element of sigma by a gradient mostly made of its own noise."""
        if not self._reads:
            raise RuntimeError("refit the adversary before asking for its loss")
        pick = torch.randint(len(self.faces), (self.batch,), generator=generator)
        local = crop_maps(sigma, self.faces.origins[pick], self.faces.cells).flatten(1)
        linear = sum((read.information(local) for read in self._reads), torch.zeros(()))
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
