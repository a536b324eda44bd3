"""What the agent runs on each frame: the head on a runtime with the noise profile around it (composed in
`facesplit.pipeline.EdgeHead`), then the wire encoding. Any head runtime plugs in (`facesplit.runtimes`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from facesplit.detector import SplitDetector, load_detector
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.shipped import load_profile_for, split_for
from facesplit.noise.streams import gaussian_stream
from facesplit.pipeline import EdgeHead, noise_device
from facesplit.preprocess import InputSize, Letterbox
from facesplit.runtimes import DEFAULT_DEVICE, DEFAULT_PRECISION, DEFAULT_RUNTIME, HeadRuntime, fingerprint_at
from facesplit.runtimes.factory import head_runtime
from facesplit.runtimes.torch_runtime import TorchHead
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


class RuntimeHeadBackend:
    """Preprocess, the head on ``runtime``, the noise profile (``profile=None``: clean activations), the wire.
    ``precision``: what the head computes in; another than float32 is another head, and the frames say so in
    their fingerprint (`facesplit.runtimes.fingerprint_at`)."""

    def __init__(self, runtime: HeadRuntime, input_size: InputSize, profile: NoiseProfile | None,
                 clean_fingerprint: str, wire_dtype: str = "float16", precision: str = DEFAULT_PRECISION) -> None:
        self.runtime = runtime
        # the noise is drawn where the head leaves the activation: AES-CTR on the CPU, ChaCha20 on a GPU
        noise = Obfuscator(profile, gaussian_stream(noise_device(runtime))) if profile is not None else None
        self.head = EdgeHead(runtime, input_size, noise)
        self.fingerprint = fingerprint_at(profile.fingerprint if profile is not None else clean_fingerprint,
                                          precision)
        self.noisy = profile is not None
        self.wire_dtype = wire_dtype

    def encode(self, frame_bgr: np.ndarray) -> EncodedFrame:
        found = self.head(frame_bgr)
        t0 = time.perf_counter()
        tensor = encode_tensor(np.ascontiguousarray(found.activations[0]), self.wire_dtype)
        return EncodedFrame(tensor, found.letterbox, {**found.stage_seconds, "encode": time.perf_counter() - t0})


class TorchHeadBackend(RuntimeHeadBackend):
    """`RuntimeHeadBackend` on the torch runtime, from a detector."""

    def __init__(self, detector: SplitDetector, profile: NoiseProfile | None, clean_fingerprint: str,
                 wire_dtype: str = "float16") -> None:
        super().__init__(TorchHead(detector), detector.input_size, profile, clean_fingerprint, wire_dtype)


def head_backend(weights: Path | None, input_size: str, threads: int | None, profile: str | None,
                 wire_dtype: str = "float16", split: str | None = None,
                 runtime: str = DEFAULT_RUNTIME, precision: str = DEFAULT_PRECISION,
                 calibration: Path | None = None, device: str = DEFAULT_DEVICE) -> RuntimeHeadBackend:
    """The backend from config values; ``profile=None`` means clean activations (``--no-noise``);
    ``split=None``, the profile's split; ``runtime``, what runs the head (`facesplit.runtimes.RUNTIME_NAMES`),
    on ``device``, at ``precision`` (int8: calibrated on the images in ``calibration``)."""
    detector = load_detector(str(weights) if weights else None, InputSize.parse(input_size), threads=threads,
                             split=split_for(split, [profile] if profile is not None else []))
    noise = load_profile_for(detector, profile) if profile is not None else None
    return RuntimeHeadBackend(head_runtime(runtime, detector, threads, precision=precision, calibration=calibration,
                                           device=device),
                              detector.input_size, noise, clean_fingerprint(detector.source), wire_dtype, precision)
