"""Fit a NoiseProfile: the head is frozen, its clean activations are computed once (with augmentation) and
cached, then mu and sigma (and optionally a noise-aware tail) are trained on

    loss = (1 - alpha) * task + alpha * privacy,      sigma = s_min + (s_max - s_min) * sigmoid(rho)

where task is MultiBox against labels or distillation from the clean model's outputs (no labels needed), and
privacy is TR-4928's -mean(log sigma) or the information the noisy activation lets through (`privacy_loss`).
With a rank R, the noise lives in a basis: the R principal components of the cached clean activations'
channels (`principal_basis`), and the activation's other directions are dropped (see `NoiseProfile`).
With ``dct``, mu and sigma are per spatial frequency of each map rather than per position. With
``tail_epochs``, the noise-aware tail then trains alone on the task, mu and sigma frozen.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from tqdm import tqdm

from facesplit.faceboxes import FaceBoxes
from facesplit.images import read_image_bgr
from facesplit.noise.augment import augment
from facesplit.noise.losses import detection_loss, multibox_targets
from facesplit.noise.profile import NoiseProfile, coordinates, expand
from facesplit.preprocess import InputSize, preprocess
from facesplit.priors import priors_for
from facesplit.weights import head_fingerprint

Task = Literal["distill", "multibox"]
Privacy = Literal["log-sigma", "information"]


class Adversary(Protocol):
    """An attacker the noise is fitted against (`privacy_attack.defence`): retrained on the current noise at
    the start of every joint epoch, and a loss term that is lower the worse it does."""

    weight: float

    def refit(self, sigma: torch.Tensor) -> dict:
        """Train afresh against noise of scale ``sigma`` (detached); returns what it then achieves."""
        ...

    def loss(self, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Differentiable in ``sigma``: minimising it makes the adversary fail."""
        ...

    def in_basis(self, basis: torch.Tensor) -> Adversary:
        """The same adversary for noise along the (C, R) ``basis``: it sees the R coordinates the edge keeps
        (orthonormal columns, so nothing of what leaves is lost to it), and sigma is (R, H, W)."""
        ...


@dataclass(frozen=True)
class FitImage:
    seen_as: str  # "<set>/<key>": recorded in the profile so evaluation can skip what fitting saw
    path: Path
    boxes: np.ndarray | None  # (M, 4) faces in the image's pixels; None when unlabelled
    frame: np.ndarray | None = None  # decoded pixels, for frames taken from a video

    def load(self) -> np.ndarray:
        return self.frame if self.frame is not None else read_image_bgr(self.path)


@dataclass(frozen=True)
class FitConfig:
    alpha: float
    task: Task = "distill"
    input_size: InputSize = field(default_factory=InputSize)
    epochs: int = 12
    batch_size: int = 8
    augmentations: int = 4  # augmented copies of each image, besides the image itself
    learning_rate: float = 0.05  # for rho (sigma)
    mu_learning_rate: float = 0.002  # small: Adam moves every element ~lr per step, and most of mu's
    # gradient is sampling noise, so a large rate makes mu random-walk away and costs AP for nothing
    sigma_min: float = 0.01
    sigma_max: float = 8.0
    sigma_init: float = 0.1
    tune_tail: bool = False  # also fine-tune a noise-aware tail, saved with the profile
    # The whole tail but its two largest convolutions (conv3_2, conv4_2: 590k of its 950k weights) is
    # tuned, so a profile with its tail still ships small (~1.2 MB in fp16). Measured at alpha 0.5 (AP@0.3,
    # held-out MIT+CMU): clean tail 0.918, Inception blocks only 0.930, whole tail 0.942.
    tuned_tail_modules: tuple[str, ...] = ("inception1", "inception2", "inception3", "conv3_1", "conv4_1",
                                           "loc", "conf")
    tail_learning_rate: float = 1e-4
    tail_epochs: int = 0  # then this many more epochs of the tail alone, mu and sigma frozen (needs tune_tail)
    rank: int | None = None  # keep this many principal directions of channel space (None: every channel)
    privacy: Privacy = "log-sigma"
    dct: bool = False  # noise per spatial frequency (2-D DCT of each map), not per position
    seed: int = 0


@dataclass
class TrainingSet:
    activations: torch.Tensor  # (S, C, H, W) float16, clean
    target_prob: torch.Tensor  # (S, P) float16
    target_loc: torch.Tensor  # (S, P, 4) float32
    seen: list[str]


@torch.inference_mode()
def build_training_set(model: FaceBoxes, images: Sequence[FitImage], config: FitConfig) -> TrainingSet:
    """Clean activations of every image and its augmented copies, with the task's per-anchor targets."""
    if config.input_size.native:
        raise ValueError("noise profiles need a fixed input size, not 'native'")
    if config.task == "multibox" and any(image.boxes is None for image in images):
        raise ValueError("the multibox task needs labelled images (COCO boxes)")
    rng = np.random.default_rng(config.seed)
    width, height = config.input_size.width, config.input_size.height
    assert width is not None and height is not None
    priors = priors_for(height, width)
    activations, probs, locs = [], [], []
    for image in tqdm(images, desc="activations", unit="img", dynamic_ncols=True):
        frame = image.load()
        boxes = image.boxes if image.boxes is not None else np.zeros((0, 4), np.float32)
        for copy_index in range(config.augmentations + 1):
            view, view_boxes = (frame, boxes) if copy_index == 0 else augment(frame, boxes, rng)
            x, box = preprocess(view, config.input_size)
            activation = model.head(x.contiguous())
            if config.task == "distill":
                loc, prob = model.tail(activation)
                prob, loc = prob[0], loc[0]
            else:
                labels, offsets = multibox_targets(view_boxes * box.scale, priors, width, height)
                prob, loc = torch.from_numpy(labels), torch.from_numpy(offsets)
            activations.append(activation[0].half())
            probs.append(prob.half())
            locs.append(loc.float())
    return TrainingSet(torch.stack(activations), torch.stack(probs), torch.stack(locs),
                       [image.seen_as for image in images])


def principal_basis(activations: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    """The ``rank`` principal directions of the channels of (S, C, H, W) activations, pooled over samples
    and positions: (C, rank) orthonormal columns, most energy first (each column's sign fixed so its
    largest entry is positive: the same data gives the same basis), and the share of the activations'
    energy (mean square) they keep. Not centred: the projection keeps V V^T a, mean included, and the
    activations (ReLU outputs) have a large mean."""
    channels = activations.shape[1]
    if not 1 <= rank <= channels:
        raise ValueError(f"rank must be between 1 and the activation's {channels} channels, got {rank}")
    samples = activations.float().permute(0, 2, 3, 1).reshape(-1, channels).double()
    variances, vectors = torch.linalg.eigh(samples.T @ samples / len(samples))
    order = variances.argsort(descending=True)
    variances, vectors = variances[order].clamp(min=0), vectors[:, order]
    basis = vectors[:, :rank]
    signs = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
    return (basis * signs).float().contiguous(), float(variances[:rank].sum() / variances.sum())


@torch.no_grad()
def signal_variance(activations: torch.Tensor, basis: torch.Tensor | None, dct: bool = False,
                    chunk: int = 64) -> torch.Tensor:
    """Per-element variance over the samples of the (S, C, H, W) activations, in the coordinates the noise
    is added to (see `coordinates`): (R, H, W). Zero where every frame gives the same value (padding)."""
    total = square = torch.zeros((), dtype=torch.float64)  # broadcast up to (R, H, W) by the first chunk
    for start in range(0, len(activations), chunk):
        values = coordinates(basis, activations[start:start + chunk].float(), dct).double()
        total, square = total + values.sum(0), square + (values ** 2).sum(0)
    mean = total / len(activations)
    return (square / len(activations) - mean ** 2).clamp(min=0).float()


def privacy_loss(kind: Privacy, sigma: torch.Tensor, variance: torch.Tensor | None) -> torch.Tensor:
    """log-sigma: TR-4928's -mean(log sigma), which keeps rewarding noise on elements it has already drowned.
    information: the mean over elements of 1/2 log(1 + var/sigma^2), the information a Gaussian channel with
    that signal variance and noise lets through, so the noise goes where there is signal to hide."""
    if kind == "log-sigma":
        return -torch.log(sigma).mean()
    assert variance is not None
    return 0.5 * torch.log1p(variance / sigma ** 2).mean()


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _from_profile(start: NoiseProfile, config: FitConfig, shape: tuple[int, ...]) -> FitConfig:
    """The config that keeps ``start``'s noise: no joint epochs, its alpha, rank and coordinates."""
    if config.epochs or not config.tail_epochs or not config.tune_tail:
        raise ValueError("a fit from a profile trains its tail alone: epochs 0, tail_epochs > 0, tune_tail")
    if start.shape != shape:
        raise ValueError(f"the profile is for activations {start.shape}, these are {shape}")
    return replace(config, alpha=start.alpha, rank=start.rank, dct=start.dct)


def fit_profile(model: FaceBoxes, data: TrainingSet, config: FitConfig, fitted_on: dict | None = None,
                adversary: Adversary | None = None, start: NoiseProfile | None = None) -> NoiseProfile:
    """Train mu, rho (and the tail, if asked) on the cached activations; returns the fitted profile. With an
    ``adversary``, its loss joins the privacy term (weighted by its own ``weight``), and it is retrained on the
    current noise before every joint epoch. From a ``start`` profile, its noise (mu, sigma, basis) is kept
    bit for bit and only its noise-aware tail trains on, ``tail_epochs`` more, so every privacy figure
    measured on it still holds."""
    if adversary is not None and config.dct:
        raise ValueError("an adversary is fitted against noise per element (in a basis or not), not per frequency")
    if config.tail_epochs and not config.tune_tail:
        raise ValueError("tail_epochs train the noise-aware tail: set tune_tail")
    if start is not None:
        if adversary is not None:
            raise ValueError("a fit from a profile keeps its noise: there is nothing for an adversary to move")
        config = _from_profile(start, config, tuple(data.activations.shape[1:]))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # training noise: reproducible, never shipped
    if start is not None:
        basis, energy_kept = start.basis, float(start.fitted_on.get("energy_kept", 1.0))
    else:
        basis, energy_kept = principal_basis(data.activations, config.rank) if config.rank else (None, 1.0)
    if adversary is not None and basis is not None:
        adversary = adversary.in_basis(basis)
    shape = (config.rank or data.activations.shape[1], *data.activations.shape[2:])
    variance = signal_variance(data.activations, basis, config.dct) if config.privacy == "information" else None
    span = config.sigma_max - config.sigma_min
    mu = torch.zeros(shape, requires_grad=True)
    rho = torch.full(shape, _logit((config.sigma_init - config.sigma_min) / span), requires_grad=True)
    # eval: batch-norm statistics stay the clean model's; channels_last: ~1.7x faster steps on CPU
    tail = copy.deepcopy(model.tail).eval().to(memory_format=torch.channels_last)
    fixed_sigma = None
    if start is not None:
        mu, fixed_sigma = start.mu.clone(), start.sigma.clone()
        tail.load_state_dict(start.tail_state or {}, strict=False)

    def current_sigma() -> torch.Tensor:
        return fixed_sigma if fixed_sigma is not None else config.sigma_min + span * torch.sigmoid(rho)

    tuned = {name: p for name, p in tail.named_parameters()
             if config.tune_tail and name.split(".")[0] in config.tuned_tail_modules}
    for name, p in tail.named_parameters():
        p.requires_grad_(name in tuned)
    groups = [{"params": [rho], "lr": config.learning_rate}, {"params": [mu], "lr": config.mu_learning_rate}]
    if tuned:
        groups.append({"params": list(tuned.values()), "lr": config.tail_learning_rate})
    optimiser = torch.optim.Adam(groups)
    # Every joint epoch lets the privacy term grow sigma further (and costs AP); the tail-only epochs spend
    # their steps on AP alone, at the privacy the joint epochs reached.
    tail_optimiser = torch.optim.Adam(tuned.values(), lr=config.tail_learning_rate) if tuned else None
    count = len(data.activations)
    steps_per_epoch = math.ceil(count / config.batch_size)
    history = []
    started = time.perf_counter()
    with tqdm(total=(config.epochs + config.tail_epochs) * steps_per_epoch, desc=f"fit alpha={config.alpha}",
              unit="step", dynamic_ncols=True) as bar:
        for epoch in range(config.epochs + config.tail_epochs):
            tail_only = epoch >= config.epochs
            rho.requires_grad_(not tail_only)
            mu.requires_grad_(not tail_only)
            order = torch.randperm(count, generator=generator)
            totals = np.zeros(3)
            adversary_scores = None if adversary is None or tail_only else adversary.refit(current_sigma().detach())
            for first in range(0, count, config.batch_size):
                index = order[first:first + config.batch_size]
                clean = coordinates(basis, data.activations[index].float(), config.dct)
                sigma = current_sigma()
                eps = torch.randn(clean.shape, generator=generator)
                noisy = expand(basis, clean + mu + sigma * eps, config.dct).contiguous(
                    memory_format=torch.channels_last)
                loc, logits = tail.logits(noisy)
                task = detection_loss(loc, logits, data.target_prob[index].float(), data.target_loc[index])
                if tail_only:
                    loss, step = task, tail_optimiser
                else:
                    loss = (1 - config.alpha) * task + config.alpha * privacy_loss(config.privacy, sigma, variance)
                    if adversary is not None:
                        loss = loss + adversary.weight * adversary.loss(sigma, generator)
                    step = optimiser
                assert step is not None
                step.zero_grad(set_to_none=True)
                loss.backward()
                step.step()
                totals += [loss.item(), task.item(), sigma.detach().mean().item()]
                bar.update(1)
                bar.set_postfix(task=f"{task.item():.3f}", sigma=f"{sigma.detach().mean().item():.3f}")
            mean = totals / steps_per_epoch
            history.append({"epoch": epoch + 1, "loss": mean[0], "task": mean[1], "mean_sigma": mean[2],
                            "tail_only": tail_only, **({"adversary": adversary_scores} if adversary_scores else {})})
    sigma = current_sigma().detach()
    width, height = config.input_size.width, config.input_size.height
    assert width is not None and height is not None
    summary = {
        **(fitted_on or {}), "task": config.task, "epochs": config.epochs, "samples": count,
        "tail_epochs": config.tail_epochs, "augmentations": config.augmentations, "history": history,
        # what evaluation must skip: every image that shaped the profile, the start's fit included
        "seen": sorted(set(data.seen) | set(start.fitted_on.get("seen", []) if start else [])),
        "fit_seconds": round(time.perf_counter() - started, 1), "seed": config.seed,
        "sigma_bounds": [config.sigma_min, config.sigma_max], "noise_aware_tail": config.tune_tail,
        "rank": config.rank, "privacy": config.privacy, "dct": config.dct, "energy_kept": round(energy_kept, 4),
        **({"noise_from": {"fingerprint": start.fingerprint, "fitted_on": start.fitted_on}} if start else {})}
    return NoiseProfile(mu=mu.detach(), sigma=sigma, alpha=config.alpha, input_size=(width, height),
                        head_fingerprint=head_fingerprint(model), fitted_on=summary,
                        tail_state={k: v.detach().contiguous() for k, v in tail.state_dict().items()
                                    if k.split(".")[0] in config.tuned_tail_modules}
                        if tuned else None, basis=basis, dct=config.dct, split=model.split)
