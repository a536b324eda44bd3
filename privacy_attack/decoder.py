"""Learned decoder: a small conv net trained to turn noisy activations back into pixels.

The attacker runs the (public) head on their own public photos, adds noise exactly as the profile would
(they know mu and sigma), and trains a decoder from "activation + noise - mu" to the 256x256 canvas. Noise
is drawn fresh for every sample of every step, so the decoder learns to see through the noise distribution,
not through particular draws. With ``k_values`` it also trains at the reduced noise of k-frame averages
(sigma / sqrt(k)), so one decoder serves every k the attacker may average over.

Deliberately small and CPU-trainable in minutes: what it recovers is a lower bound on what a real attacker
with a GPU and a large face set would recover.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from facesplit.faceboxes import HEAD_CHANNELS
from facesplit.noise.profile import NoiseProfile
from privacy_attack.canvas import image_to_input, resize, to_canvas
from privacy_attack.datasets import Photo


@dataclass(frozen=True)
class DecoderConfig:
    batch_size: int = 8
    lr: float = 2e-3
    train_seconds: float = 180.0  # wall-clock budget; training stops at whichever limit comes first
    max_steps: int | None = None
    views_per_photo: int = 4  # augmented views (crop, flip, scale) of each attacker photo in the bank
    k_values: tuple[int, ...] = (1,)  # train at sigma / sqrt(k) for k drawn uniformly from these
    sharpness_weight: float = 0.5  # L1 on image gradients: L1 alone averages edges into blur
    seed: int = 0
    progress: bool = True


class ActivationDecoder(nn.Module):
    """(N, 128, h, w) activation - mu -> (N, 3, 8h, 8w) BGR in [0, 1].

    Most of the work happens at the activation's resolution and at 2x; the last conv predicts each 4x4
    output patch (PixelShuffle). Convolutions at 128x128 and 256x256 would cost 4-5x more per step on CPU,
    and within a few minutes' budget more steps beat a finer last layer.
    """

    def __init__(self, in_channels: int = HEAD_CHANNELS, width: int = 128, fine_width: int = 64) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            # GroupNorm, not BatchNorm: statistics per sample, so inputs at other noise levels (k-frame
            # averages) are not judged by a batch mix they were never part of
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))

        self.coarse = nn.Sequential(block(in_channels, width), block(width, width))
        self.fine = block(width, fine_width)
        self.out = nn.Conv2d(fine_width, 3 * 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.coarse(z)
        x = self.fine(F.interpolate(x, scale_factor=2, mode="nearest"))
        return torch.sigmoid(self.shuffle(self.out(x)))


@dataclass
class TrainingBank:
    """Clean activations of the attacker's augmented photos and their target canvases (computed once)."""

    activations: torch.Tensor  # (N, C, h, w) float32, clean head output
    targets: torch.Tensor  # (N, 3, S, S) uint8 BGR canvas at the decoder's output size

    def __len__(self) -> int:
        return len(self.activations)


@dataclass
class TrainingLog:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def augmented_view(image: np.ndarray, rng: np.random.Generator, view: int) -> np.ndarray:
    """View 0 is the photo itself; others: a random crop of 55-100 % of each side, flipped on odd views.
    Crops change the scale and position faces appear at, which the victims' faces vary in too."""
    if view == 0:
        return image
    h, w = image.shape[:2]
    ch, cw = (max(32, int(side * rng.uniform(0.55, 1.0))) for side in (h, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y:y + ch, x:x + cw]
    return np.ascontiguousarray(out[:, ::-1] if view % 2 else out)


@torch.no_grad()  # not inference_mode: inference tensors cannot be saved for the decoder's backward
def build_bank(head: nn.Module, photos: list[Photo], input_size: tuple[int, int] = (1024, 1024),
               config: DecoderConfig = DecoderConfig()) -> TrainingBank:
    """Run the head once over ``views_per_photo`` augmented views of each attacker photo; the bank lives on the
    head's device."""
    device = next(head.parameters()).device
    rng = np.random.default_rng(config.seed)
    # the decoder's output: 8x the activation, i.e. 256x256 for a 1024x1024 input (a quarter of its side)
    width, height = input_size[0] // 4, input_size[1] // 4
    activations, targets = [], []
    for photo in tqdm(photos, desc="decoder bank", disable=not config.progress, leave=False):
        for view in range(config.views_per_photo):
            canvas = to_canvas(augmented_view(photo.image, rng, view), input_size)
            x = image_to_input(canvas.image).to(device).contiguous(memory_format=torch.channels_last)
            activations.append(head(x))
            target = resize(canvas.image, width, height)
            targets.append(torch.from_numpy(np.ascontiguousarray(target)).permute(2, 0, 1))
    return TrainingBank(torch.cat(activations).contiguous(), torch.stack(targets).to(device))


def noisy_batch(clean: torch.Tensor, profile: NoiseProfile | None, k_values: tuple[int, ...],
                generator: torch.Generator) -> torch.Tensor:
    """What the attacker feeds the decoder: clean + sigma / sqrt(k) * eps (mu already removed, as at
    attack time; with a basis, the clean activation's kept part, noise along the basis). torch's
    generator, not the product's AES stream: the noise only needs the right distribution here, and the
    attacker has no use for the stream's secrecy."""
    if profile is None:
        return clean
    on = generator.device  # the noise is drawn where the generator lives (on a GPU: no copy per step)
    ks = torch.tensor(k_values, dtype=torch.float32, device=on)[
        torch.randint(len(k_values), (len(clean),), generator=generator, device=on)]
    coordinates = profile.coordinates(clean.float())
    eps = torch.randn(coordinates.shape, generator=generator, device=on).to(clean.device)
    scale = (profile.sigma.unsqueeze(0) / ks.sqrt().view(-1, 1, 1, 1).to(clean.device))
    return profile.expand(coordinates + eps * scale)


def sharpness_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical image gradients: rewards putting edges where they are."""
    def grads(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return t[..., :, 1:] - t[..., :, :-1], t[..., 1:, :] - t[..., :-1, :]

    (px, py), (tx, ty) = grads(pred), grads(target)
    return (px - tx).abs().mean() + (py - ty).abs().mean()


def train_decoder(bank: TrainingBank, profile: NoiseProfile | None, config: DecoderConfig = DecoderConfig(),
                  decoder: ActivationDecoder | None = None) -> tuple[ActivationDecoder, TrainingLog]:
    """Train (or keep training) a decoder on ``bank`` under ``profile``'s noise; stops at the time or step budget.
    It trains on the bank's device (move the bank to a GPU to train there)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = bank.activations.device
    # on a CPU one generator for batches and noise, as always; on a GPU the noise's own, there: drawing it on
    # the CPU and copying it over held a 60 s decoder to ~2 000 steps instead of ~15 000
    noise_generator = generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(config.seed)
    profile = None if profile is None else profile.to(device)
    decoder = (decoder or ActivationDecoder(bank.activations.shape[1])).to(device)
    decoder.train()
    optimiser = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    log = TrainingLog()
    start = time.monotonic()
    max_steps = config.max_steps if config.max_steps is not None else math.inf
    bar = tqdm(desc="decoder", unit="step", disable=not config.progress, leave=False,
               total=None if config.max_steps is None else config.max_steps)
    while log.steps < max_steps and time.monotonic() - start < config.train_seconds:
        index = torch.randint(len(bank), (min(config.batch_size, len(bank)),), generator=generator).to(device)
        target = bank.targets[index].float() / 255.0
        pred = decoder(noisy_batch(bank.activations[index], profile, config.k_values, noise_generator))
        loss = (pred - target).abs().mean() + config.sharpness_weight * sharpness_loss(pred, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        log.losses.append(loss.item())
        log.steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{log.losses[-1]:.4f}")
    bar.close()
    log.seconds = time.monotonic() - start
    decoder.eval()
    return decoder, log


@torch.inference_mode()
def decode(decoder: ActivationDecoder, z: torch.Tensor, profile: NoiseProfile | None,
           input_size: tuple[int, int] = (1024, 1024)) -> np.ndarray:
    """One observed activation (1, C, h, w) -> the reconstructed canvas (H, W, 3) uint8 BGR at the input size."""
    device = next(decoder.parameters()).device
    z = z.to(device)
    centred = z if profile is None else profile.to(device).centred(z)
    pixels = decoder(centred.float())[0].permute(1, 2, 0).cpu().numpy()
    image = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    return resize(image, *input_size)
