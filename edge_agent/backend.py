"""Head + noise behind one interface, so other backends (TensorRT on a Jetson) can slot in later."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from facesplit.detector import SplitDetector, load_detector
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.shipped import load_profile_for, split_for
from facesplit.preprocess import InputSize, Letterbox, preprocess
from facesplit.weights import clean_fingerprint
from frosted_wire.codec import encode_tensor
from frosted_wire.v1 import tail_pb2


@dataclass(frozen=True)
class EncodedFrame:
    tensor: tail_pb2.Tensor  # the noisy activation, ready for the wire
    letterbox: Letterbox  # maps the tail's model-input boxes back to this frame's pixels
    stage_seconds: dict[str, float]  # preprocess, head, noise, encode


class HeadBackend(Protocol):
    fingerprint: str  # the profile fingerprint the tail must serve
    noisy: bool

    def encode(self, frame_bgr: np.ndarray) -> EncodedFrame:
        """Blocking; the agent calls it on its compute thread."""
        ...


class TorchHeadBackend:
    """The FaceBoxes head on CPU torch, then the noise profile; ``profile=None`` sends clean activations."""

    def __init__(self, detector: SplitDetector, profile: NoiseProfile | None, clean_fingerprint: str,
                 wire_dtype: str = "float16") -> None:
        self.detector = detector
        self.obfuscate = Obfuscator(profile) if profile is not None else None
        self.fingerprint = profile.fingerprint if profile is not None else clean_fingerprint
        self.noisy = profile is not None
        self.wire_dtype = wire_dtype

    def encode(self, frame_bgr: np.ndarray) -> EncodedFrame:
        t0 = time.perf_counter()
        x, letterbox = preprocess(frame_bgr, self.detector.input_size)
        t1 = time.perf_counter()
        activation = self.detector.head(x)
        t2 = time.perf_counter()
        if self.obfuscate is not None:
            activation = self.obfuscate(activation)  # fresh noise from the CSPRNG stream, every frame
        t3 = time.perf_counter()
        tensor = encode_tensor(activation[0].contiguous().numpy(), self.wire_dtype)
        t4 = time.perf_counter()
        return EncodedFrame(tensor, letterbox, {"preprocess": t1 - t0, "head": t2 - t1, "noise": t3 - t2,
                                                "encode": t4 - t3})


def torch_backend(weights: Path | None, input_size: str, threads: int | None, profile: str | None,
                  wire_dtype: str = "float16", split: str | None = None) -> TorchHeadBackend:
    """The CPU backend from config values; ``profile=None`` means clean activations (``--no-noise``);
    ``split=None``, the profile's split."""
    detector = load_detector(str(weights) if weights else None, InputSize.parse(input_size), threads=threads,
                             split=split_for(split, [profile] if profile is not None else []))
    noise = load_profile_for(detector, profile) if profile is not None else None
    return TorchHeadBackend(detector, noise, clean_fingerprint(detector.source), wire_dtype)
