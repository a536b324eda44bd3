"""Attacks that read identity straight off the activation crop around a face.

- `fit_ridge`: the best linear map from a noisy crop to a target (dlib's descriptor for the identity probe,
  the face's pixels for the face decoder), trained on the attacker's faces. Training with fresh noise every
  step converges, in the limit of infinitely many steps, to ridge regression whose Gram matrix carries the
  noise's covariance: (X'X + N Cov(noise) + lambda N I) W = X'Y. It is solved in closed form, so it has no
  training budget to fall short of; lambda is picked on held-out attacker faces.
- `train_probe`: that linear probe plus a residual MLP (its last layer starts at zero, so training starts from
  the ridge's answer), trained with fresh noise every step on a contrastive loss: each prediction must be
  nearer its own face's descriptor than every other face's in the batch, which is identification itself.
  It stops at its time budget or when held-out identification has not improved for ``patience`` checks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from facesplit.errors import FrostedError
from privacy_attack.crop_noise import CropObserver, crop_maps
from privacy_attack.crops import CropSet
from privacy_attack.identity import GALLERY_SIZE, Scored, cosine_scores, rank1_rates

LAMBDAS = (1e-2, 1e-1, 1.0, 10.0)  # ridge strengths tried, per sample in standardised units
VALIDATION_SHARE = 0.1
COVARIANCE_DRAWS = 8192  # noise crops that estimate a correlated profile's covariance


@dataclass
class LinearMap:
    """x -> ((x - mean) / std) W + bias, on flattened crops."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    ridge: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1) - self.mean) / self.std) @ self.weight + self.bias


def _noise_covariance(observer: CropObserver, origins: torch.Tensor, std: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor | None:
    """The noise's covariance in standardised flattened crop coordinates, averaged over where the training
    faces sit (None: no noise). Exact (diagonal) for a per-element profile, estimated from draws otherwise."""
    profile = observer.condition.profile
    if profile is None:
        return None
    if profile.basis is None and not profile.dct:
        variance = crop_maps((profile.sigma * observer.condition.scale) ** 2, origins, observer.cells)
        return torch.diag(variance.flatten(1).mean(0).double() / std.double() ** 2)
    total = torch.zeros(std.numel(), std.numel(), dtype=torch.float64)
    drawn = 0
    while drawn < COVARIANCE_DRAWS:
        pick = origins[torch.randint(len(origins), (512,), generator=generator)]
        noise = observer.noise(pick, generator).flatten(1).double() / std.double()
        total += noise.T @ noise
        drawn += len(pick)
    return total / drawn


def _gram(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, y: torch.Tensor, chunk: int = 2048,
          cross_only: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
    """X'X (None with ``cross_only``) and X'Y of the standardised rows of ``x``, in float64."""
    features = int(np.prod(x.shape[1:]))
    xtx = None if cross_only else torch.zeros(features, features, dtype=torch.float64)
    xty = torch.zeros(features, y.shape[1], dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = ((x[start:start + chunk].float().flatten(1) - mean) / std).double()
        if xtx is not None:
            xtx += part.T @ part
        xty += part.T @ y[start:start + chunk].double()
    return xtx, xty


def _system(xtx: torch.Tensor, noise: torch.Tensor | None, n: int) -> torch.Tensor:
    """X'X + n Sigma in float32 (standardised, and regularised by `_solve`: float32 is enough, and twice as fast),
    built once per design and shared by every ridge strength tried on it."""
    system = xtx.float()
    if noise is not None:
        system.add_(noise.float(), alpha=n)
    return system


def _solve(system: torch.Tensor, xty: torch.Tensor, n: int, ridge: float) -> torch.Tensor:
    """(system + ridge n I)^-1 X'Y. The matrix is symmetric positive definite (a Gram matrix, a covariance, a
    positive ridge), so Cholesky, which is faster than LU; LU if rounding says it is not."""
    regularised = system.clone()
    regularised.diagonal().add_(ridge * n)
    factor, info = torch.linalg.cholesky_ex(regularised)
    if int(info) == 0:
        return torch.cholesky_solve(xty.float(), factor)
    return torch.linalg.solve(regularised, xty.float())


def identification_score(predicted: torch.Tensor, truth: torch.Tensor, centre: torch.Tensor,
                         size: int = GALLERY_SIZE) -> float:
    """Held-out attacker faces as their own gallery: the rank-1 rate among ``size`` of them."""
    scores = cosine_scores(predicted.numpy(), truth.numpy(), centre.numpy())
    return float(rank1_rates(Scored(scores, np.arange(len(truth))), size).mean())


@dataclass
class FitLog:
    """What a fit cost and how it went: JSON-able (`as_dict`)."""

    kind: str
    samples: int
    seconds: float = 0.0
    steps: int = 0
    ridge: float | None = None
    validation: dict = field(default_factory=dict)  # lambda or step -> held-out score
    losses: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {"kind": self.kind, "samples": self.samples, "seconds": round(self.seconds, 1), "steps": self.steps,
               "ridge": self.ridge, "validation": self.validation}
        if self.losses:
            tenth = max(1, len(self.losses) // 10)
            out["loss_curve"] = [round(float(np.mean(self.losses[i:i + tenth])), 4)
                                 for i in range(0, len(self.losses), tenth)]
        return out


def holdout(identities: Sequence[str], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held-out) row indices, a tenth of the identities held out whole: every placement of a face lies
    on one side, or a model that memorises the faces it fitted would look as if it generalised."""
    names = sorted(set(identities))
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    held = {names[i] for i in order[:max(1, int(len(names) * VALIDATION_SHARE))]}
    flags = torch.tensor([name in held for name in identities], dtype=torch.bool)  # bool even when empty
    return torch.nonzero(~flags).flatten(), torch.nonzero(flags).flatten()


@dataclass
class Design:
    """A crop set's standardised design, computed once and shared by every target and noise condition at the
    same split (its Gram matrices are most of a ridge fit's cost)."""

    mean: torch.Tensor
    std: torch.Tensor
    fit_index: torch.Tensor
    val_index: torch.Tensor
    xtx_fit: torch.Tensor
    xtx_val: torch.Tensor
    kept: torch.Tensor  # (N, F) the crops' kept part, flattened

    def xty(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, fit = _gram(self.kept[self.fit_index], self.mean, self.std, targets[self.fit_index], cross_only=True)
        _, val = _gram(self.kept[self.val_index], self.mean, self.std, targets[self.val_index], cross_only=True)
        return fit, val


class TooFewFacesError(FrostedError):
    """Too few usable attacker faces (a face found in the photo) to fit a probe and judge it on held-out ones."""


def design_for(train: CropSet, observer: CropObserver, seed: int = 0) -> Design:
    fit_index, val_index = holdout(train.identities, seed)
    if not len(fit_index) or not len(val_index):  # the solver would have nothing to solve, or nothing to judge
        raise TooFewFacesError(f"{len(train)} usable attacker faces (photos where a face was found), too few to "
                               "fit a probe and hold some out: give the attacker more photos of faces")
    kept = observer.kept(train.crops).flatten(1)
    mean, std = kept.mean(0), kept.std(0).clamp_min(1e-3)
    nothing = torch.zeros(len(train), 0)
    xtx_fit, _ = _gram(kept[fit_index], mean, std, nothing[fit_index])
    xtx_val, _ = _gram(kept[val_index], mean, std, nothing[val_index])
    return Design(mean, std, fit_index, val_index, xtx_fit, xtx_val, kept)


def fit_ridge(train: CropSet, observer: CropObserver, targets: torch.Tensor, seed: int = 0,
              score: str = "identification", lambdas: tuple[float, ...] = LAMBDAS,
              design: Design | None = None, refit: bool = True) -> tuple[LinearMap, FitLog]:
    """The noise-aware ridge from ``train``'s crops to ``targets`` (N, T), lambda picked on a held-out tenth
    of the identities (``score``: "identification" for descriptors, "mse" for pixels), then, with ``refit``,
    refitted on everything; without, the map fitted on the rest, which the held-out tenth can still judge
    (the start of `train_probe`). ``design``: `design_for` of the same crops and kept part, when several fits
    share it."""
    start = time.monotonic()
    generator = torch.Generator().manual_seed(seed)
    design = design or design_for(train, observer, seed)
    mean, std, fit_index, val_index = design.mean, design.std, design.fit_index, design.val_index
    target_mean = targets.mean(0)
    xty_fit, xty_val = design.xty(targets - target_mean)
    noise = _noise_covariance(observer, train.origins, std, generator)
    observed_val = observer.observe(train.crops[val_index], train.origins[val_index], generator)
    log = FitLog("ridge", len(train))
    fit_system = _system(design.xtx_fit, noise, len(fit_index))
    for ridge in lambdas:
        weight = _solve(fit_system, xty_fit, len(fit_index), ridge)
        predicted = LinearMap(mean, std, weight, target_mean, ridge)(observed_val)
        if score == "identification":
            log.validation[f"{ridge:g}"] = identification_score(predicted, targets[val_index], target_mean)
        else:
            log.validation[f"{ridge:g}"] = -float(((predicted - targets[val_index]) ** 2).mean())
    best = max(lambdas, key=lambda r: log.validation[f"{r:g}"])
    weight = (_solve(_system(design.xtx_fit + design.xtx_val, noise, len(train)), xty_fit + xty_val, len(train), best)
              if refit else _solve(fit_system, xty_fit, len(fit_index), best))
    log.ridge, log.seconds = best, time.monotonic() - start
    return LinearMap(mean, std, weight, target_mean, best), log


class ResidualProbe(nn.Module):
    """A linear map plus a residual MLP on the standardised crop."""

    def __init__(self, linear: LinearMap, hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        features, out = linear.weight.shape
        self.register_buffer("mean", linear.mean.clone())
        self.register_buffer("std", linear.std.clone())
        self.linear = nn.Linear(features, out)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight.T)
            self.linear.bias.copy_(linear.bias)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.flatten(1) - self.mean) / self.std
        return self.linear(x) + self.mlp(x)


def contrastive_loss(predicted: torch.Tensor, targets: torch.Tensor, centre: torch.Tensor,
                     temperature: float = 0.05) -> torch.Tensor:
    """Cross-entropy of each prediction picking its own target among the batch's (cosine, centred)."""
    p = F.normalize(predicted - centre, dim=1)
    t = F.normalize(targets - centre, dim=1)
    logits = p @ t.T / temperature
    return F.cross_entropy(logits, torch.arange(len(p)))


def train_probe(train: CropSet, observer: CropObserver, linear: LinearMap, seconds: float = 120.0,
                batch: int = 256, lr: float = 3e-4, check_every: int = 100, patience: int = 5, seed: int = 0,
                progress: bool = True, steps: int | None = None) -> tuple[ResidualProbe, FitLog]:
    """Train a `ResidualProbe` from ``linear`` with fresh noise every step; the best held-out checkpoint wins.
    It stops after ``seconds``, after ``steps`` (a budget that a busy machine does not shrink), or when held-out
    identification has not improved for ``patience`` checks, whichever comes first. ``linear`` must not have
    seen the held-out identities (`fit_ridge` with ``refit=False`` and the same seed), or its start scores
    in-sample and no honest step can beat it."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    fit_index, val_index = holdout(train.identities, seed)
    targets = train.descriptors
    centre = targets.mean(0)
    probe = ResidualProbe(linear)
    optimiser = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-2)
    observed_val = observer.observe(train.crops[val_index], train.origins[val_index], generator)
    log = FitLog("ridge + residual MLP, contrastive", len(train))

    def validate() -> float:
        probe.eval()
        with torch.no_grad():
            value = identification_score(probe(observed_val), targets[val_index], centre)
        probe.train()
        return value

    best_value, best_state, since_best = validate(), {k: v.clone() for k, v in probe.state_dict().items()}, 0
    log.validation["0"] = best_value
    # patience runs against the best trained checkpoint, not the start: the contrastive loss first pulls the
    # ridge's weights away from it and needs a few hundred steps to climb back past it
    trained_best = -1.0
    start = time.monotonic()
    bar = tqdm(desc="identity probe", unit="step", disable=not progress, leave=False)
    probe.train()
    while time.monotonic() - start < seconds and since_best < patience and (steps is None or log.steps < steps):
        pick = fit_index[torch.randint(len(fit_index), (batch,), generator=generator)]
        x = observer.observe(train.crops[pick], train.origins[pick], generator)
        loss = contrastive_loss(probe(x), targets[pick], centre)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        log.losses.append(loss.item())
        log.steps += 1
        bar.update(1)
        if log.steps % check_every == 0:
            value = validate()
            log.validation[str(log.steps)] = value
            bar.set_postfix(loss=f"{np.mean(log.losses[-check_every:]):.3f}", val=f"{value:.3f}")
            if value > best_value:
                best_value = value
                best_state = {k: v.clone() for k, v in probe.state_dict().items()}
            if value > trained_best:
                trained_best, since_best = value, 0
            else:
                since_best += 1
    bar.close()
    probe.load_state_dict(best_state)
    probe.eval()
    log.seconds = time.monotonic() - start
    return probe, log
