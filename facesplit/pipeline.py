"""What surrounds the runtimes, composed once for all of them.

    edge:   frame -> preprocess -> HEAD RUNTIME -> noise (CSPRNG, where the activation is) -> (the agent encodes it)
    cloud:  activations -> TAIL RUNTIME -> priors, decoding, NMS -> boxes in model-input pixels
    local:  both, and the boxes mapped back to the frame's pixels (`frosted detect`, `frosted eval`)

A runtime only maps arrays to arrays (`facesplit.runtimes`); everything here is the same whichever runs. A
runtime that converts pixels itself (`facesplit.runtimes.PixelHeadRuntime`, OpenVINO) gets the letterboxed
uint8 frame instead of the float model input: the same numbers reach the head, without the float pass here.
A runtime whose activations stay on a GPU (`facesplit.runtimes.DeviceHeadRuntime`, torch with ``--device cuda``)
gets its noise drawn there (`noise_device`), and the noisy activation comes to the host once, for the wire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from facesplit.detector import ActivationTransform
from facesplit.postprocess import PostprocessConfig, detections_from_outputs
from facesplit.preprocess import InputSize, Letterbox, letterbox_pixels, preprocess
from facesplit.runtimes import DeviceHeadRuntime, HeadRuntime, PixelHeadRuntime, TailRuntime


@dataclass(frozen=True)
class HeadResult:
    activations: np.ndarray  # (1, C, h, w) float32: what leaves the edge (noisy when there is a profile)
    letterbox: Letterbox  # maps model-input boxes back to the frame's pixels
    stage_seconds: dict[str, float]  # preprocess, head, noise


def add_noise(noise: ActivationTransform, activations: np.ndarray | torch.Tensor) -> np.ndarray:
    """A profile's noise (an `Obfuscator`) on activations: a host array, or a tensor already on the device the
    noise is drawn on (a GPU head's); the noisy result comes back as a host array, one copy for the wire.

    The noise is drawn in the torch head's memory order (channels_last) whatever the runtime's: a dense NCHW
    output is laid out so first (a copy of ~0.1 ms), so one evaluation seed gives the same noise on every
    runtime of one device, element for element, and the torch runtime's path is today's, copy-free."""
    tensor = torch.from_numpy(activations) if isinstance(activations, np.ndarray) else activations
    if tensor.dim() == 4:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    noisy = noise(tensor)
    return noisy.numpy() if noisy.device.type == "cpu" else noisy.cpu().numpy()


def noise_device(runtime: HeadRuntime) -> torch.device:
    """Where a profile's noise for ``runtime``'s activations is drawn: on its device if they stay there, else
    on the CPU (the AES sampler, `facesplit.noise.streams.gaussian_stream`)."""
    return runtime.device if isinstance(runtime, DeviceHeadRuntime) else torch.device("cpu")


class EdgeHead:
    """Frame -> model input -> head (on ``runtime``) -> fresh noise from ``noise`` (None: clean activations)."""

    def __init__(self, runtime: HeadRuntime, input_size: InputSize, noise: ActivationTransform | None = None) -> None:
        self.runtime = runtime
        self.input_size = input_size
        self.noise = noise

    def __call__(self, frame_bgr: np.ndarray) -> HeadResult:
        t0 = time.perf_counter()
        if isinstance(self.runtime, PixelHeadRuntime):  # it converts the pixels itself, inside its graph
            pixels, letterbox = letterbox_pixels(frame_bgr, self.input_size)
            t1 = time.perf_counter()
            activations = self.runtime.run_pixels(pixels[None])
        else:
            inputs, letterbox = preprocess(frame_bgr, self.input_size)
            t1 = time.perf_counter()
            if self.noise is not None and isinstance(self.runtime, DeviceHeadRuntime):
                activations = self.runtime.run_on_device(inputs.numpy())  # the noise is drawn there too
            else:
                activations = self.runtime.run(inputs.numpy())  # channels_last memory, viewed as NCHW: no copy
        t2 = time.perf_counter()
        if self.noise is not None:
            activations = add_noise(self.noise, activations)  # fresh noise from the CSPRNG stream, every frame
        t3 = time.perf_counter()
        return HeadResult(activations, letterbox, {"preprocess": t1 - t0, "head": t2 - t1, "noise": t3 - t2})


class TailBoxes:
    """Activations -> tail (on ``runtime``) -> post-processing: per item, (N, 5) [x1, y1, x2, y2, score] in
    model-input pixels, best first."""

    def __init__(self, runtime: TailRuntime, postprocess: PostprocessConfig = PostprocessConfig()) -> None:
        self.runtime = runtime
        self.postprocess = postprocess

    def __call__(self, activations: np.ndarray, input_width: int, input_height: int) -> list[np.ndarray]:
        loc, scores = self.runtime.run(activations)
        return [detections_from_outputs(loc[i], scores[i], input_height, input_width, self.postprocess)
                for i in range(activations.shape[0])]


class RuntimeDetector:
    """The whole detector in one process on any runtimes: ``detect`` as `SplitDetector.detect` does it."""

    def __init__(self, head: HeadRuntime, tail: TailRuntime, input_size: InputSize,
                 postprocess: PostprocessConfig = PostprocessConfig()) -> None:
        self.head = EdgeHead(head, input_size)
        self.tail = TailBoxes(tail, postprocess)
        self.input_size = input_size

    def detect(self, frame_bgr: np.ndarray, obfuscate: ActivationTransform | None = None) -> np.ndarray:
        """(N, 5) [x1, y1, x2, y2, score] in ``frame_bgr``'s pixels, best first; ``obfuscate``: a profile's
        noise on the activation (drawn where the head leaves it: `EdgeHead`)."""
        found = (self.head if obfuscate is None else EdgeHead(self.head.runtime, self.input_size, obfuscate))(frame_bgr)
        box = found.letterbox
        return box.boxes_to_frame(self.tail(found.activations, box.input_width, box.input_height)[0])
