"""The tails one process serves: one per noise profile (with its noise-aware tail) and, optionally, clean; each
on a tail runtime (`facesplit.runtimes`), with post-processing composed around it (`facesplit.pipeline`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from facesplit.detector import SplitDetector, at_split, with_tail
from facesplit.errors import ConflictError
from facesplit.faceboxes import activation_shape
from facesplit.noise.profile import NoiseProfile, split_of
from facesplit.noise.shipped import load_profile_for, resolve_profile
from facesplit.noise.validation import validated_heads
from facesplit.pipeline import TailBoxes
from facesplit.runtimes import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_RUNTIME,
    SERVABLE_PRECISIONS,
    UnknownRuntimeError,
    fingerprint_at,
    served_name,
)
from facesplit.runtimes.factory import tail_runtime
from facesplit.weights import clean_fingerprint

log = logging.getLogger("cloud_tail")


class TailInputSizeError(ConflictError, ValueError):
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
    split: str  # where the edge's head ends for this profile
    boxes: TailBoxes  # the tail on its runtime, then post-processing
    detector: SplitDetector | None = None  # the torch model the tail came from (its weights, split, thresholds)
    precision: str = DEFAULT_PRECISION  # of the heads whose frames it takes (`facesplit.runtimes.fingerprint_at`)

    @property
    def served_as(self) -> str:
        """Its name as agents see it: the profile's (or "clean"), marked with the heads' precision if not float32."""
        return served_name(self.name, self.precision)

    def detect_batch(self, activations: np.ndarray) -> list[np.ndarray]:
        """(B, C, H, W) float32 -> per item (N, 5) [x1, y1, x2, y2, score] in model-input pixels."""
        return self.boxes(activations, self.input_width, self.input_height)


def served_tails(detector: SplitDetector, profiles: list[str], *, serve_clean: bool = False,
                 runtime: str = DEFAULT_RUNTIME, threads: int | None = None,
                 head_precisions: tuple[str, ...] = (), device: str = DEFAULT_DEVICE) -> dict[str, ServedTail]:
    """fingerprint -> tail, for each profile (shipped name or path), each at the model split it was fitted for,
    and, only if asked, for clean activations at ``detector``'s split (those expose the frames they came from);
    every tail on ``runtime`` (`facesplit.runtimes.RUNTIME_NAMES`) and ``device``. ``head_precisions`` (of
    `facesplit.runtimes.SERVABLE_PRECISIONS`): each also for frames from a head at that precision (their own
    fingerprint, `facesplit.runtimes.fingerprint_at`), if the profile file records a validation on such a head
    (`facesplit.noise.validation`; a profile without one is logged and not served to it; clean is served as
    asked); without it, such frames are refused as a profile not served."""

    def on_runtime(at: SplitDetector) -> TailBoxes:
        return TailBoxes(tail_runtime(runtime, at, threads, device=device), at.postprocess)

    size = detector.input_size
    if size.native or size.width is None or size.height is None:
        raise TailInputSizeError("the tail needs a fixed input size (e.g. --input-size 1024), not 'native': "
                                 "every frame of a profile has its activation's one shape")
    shape = activation_shape(size.height, size.width)
    tails: dict[str, ServedTail] = {}
    # a noisy tail's fingerprint -> the profile as given, and the heads its file records a validation on
    validated: dict[str, tuple[str, dict[str, dict]]] = {}
    splits = {detector.split: detector}
    if serve_clean:
        fingerprint = clean_fingerprint(detector.source)
        tails[fingerprint] = ServedTail(fingerprint, "clean", 0.0, False, size.width, size.height, shape,
                                        detector.split, on_runtime(detector), detector)
    for name in dict.fromkeys(profiles):  # one name given twice is served once
        split = split_of(resolve_profile(name))
        at = splits[split] if split in splits else splits.setdefault(split, at_split(detector, split))
        profile: NoiseProfile = load_profile_for(at, name)
        if profile.fingerprint in tails:  # else the first would be dropped, unsaid: frames name one fingerprint
            raise ConflictError(f"{validated[profile.fingerprint][0]} and {name} are the same profile "
                                f"(fingerprint {profile.fingerprint}): serve it once")
        tuned = with_tail(at, profile.tail_state)
        tails[profile.fingerprint] = ServedTail(profile.fingerprint, resolve_profile(name).stem, profile.alpha, True,
                                                size.width, size.height, shape, tuned.split, on_runtime(tuned),
                                                tuned)
        validated[profile.fingerprint] = (name, validated_heads(resolve_profile(name)))
    for precision in dict.fromkeys(head_precisions):
        if precision not in SERVABLE_PRECISIONS:
            raise UnknownRuntimeError(f"a tail serves heads at {', '.join(SERVABLE_PRECISIONS)} besides "
                                      f"float32, not {precision!r}")
    for served in list(tails.values()):
        for precision in dict.fromkeys(head_precisions):
            if served.noisy and precision not in validated[served.fingerprint][1]:
                log.warning("not serving %s to %s heads: its AP was never measured on one "
                            "(bench/precision_accuracy.py --precision %s --noise %s --record)",
                            served.name, precision, precision, validated[served.fingerprint][0])
                continue
            at = fingerprint_at(served.fingerprint, precision)
            tails[at] = replace(served, fingerprint=at, precision=precision)
    return tails
