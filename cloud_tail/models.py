"""The tails one process serves: one per noise profile (with its noise-aware tail) and, optionally, clean."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facesplit.detector import SplitDetector, at_split, with_tail
from facesplit.errors import FrostedError
from facesplit.faceboxes import activation_shape
from facesplit.noise.profile import NoiseProfile, split_of
from facesplit.noise.shipped import load_profile_for, resolve_profile
from facesplit.postprocess import detections_from_outputs
from facesplit.weights import clean_fingerprint


class TailInputSizeError(FrostedError, ValueError):
    """An input size the tail cannot serve (a ValueError too, as it was before it was a one-line error)."""


@dataclass(frozen=True)
class ServedTail:
    fingerprint: str
    name: str
    alpha: float
    noisy: bool
    input_width: int
    input_height: int
    activation_shape: tuple[int, int, int]
    detector: SplitDetector

    def detect_batch(self, activations: np.ndarray) -> list[np.ndarray]:
        """(B, C, H, W) float32 -> per item (N, 5) [x1, y1, x2, y2, score] in model-input pixels."""
        loc, scores = self.detector.tail(torch.from_numpy(activations))
        postprocess = self.detector.postprocess
        return [detections_from_outputs(loc[i].numpy(), scores[i].numpy(), self.input_height, self.input_width,
                                        postprocess) for i in range(activations.shape[0])]


def served_tails(detector: SplitDetector, profiles: list[str], *, serve_clean: bool = False
                 ) -> dict[str, ServedTail]:
    """fingerprint -> tail, for each profile (shipped name or path), each at the model split it was fitted for,
    and, only if asked, for clean activations at ``detector``'s split (those expose the frames they came from)."""
    size = detector.input_size
    if size.native or size.width is None or size.height is None:
        raise TailInputSizeError("the tail needs a fixed input size (e.g. --input-size 1024), not 'native': "
                                 "every frame of a profile has its activation's one shape")
    shape = activation_shape(size.height, size.width)
    tails: dict[str, ServedTail] = {}
    splits = {detector.split: detector}
    if serve_clean:
        fingerprint = clean_fingerprint(detector.source)
        tails[fingerprint] = ServedTail(fingerprint, "clean", 0.0, False, size.width, size.height, shape, detector)
    for name in profiles:
        split = split_of(resolve_profile(name))
        at = splits[split] if split in splits else splits.setdefault(split, at_split(detector, split))
        profile: NoiseProfile = load_profile_for(at, name)
        tails[profile.fingerprint] = ServedTail(profile.fingerprint, resolve_profile(name).stem, profile.alpha, True,
                                                size.width, size.height, shape, with_tail(at, profile.tail_state))
    return tails
