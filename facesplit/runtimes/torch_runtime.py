"""The torch runtime: the head and tail of a `SplitDetector` (batch norm fused, channels_last), on the CPU as
today, or on a CUDA GPU (`--device cuda`), where the head's activation stays on the device so that the noise is
drawn there too (`facesplit.runtimes.DeviceHeadRuntime`) and only the noisy activation crosses the bus."""

from __future__ import annotations

import copy

import numpy as np
import torch

from facesplit.detector import SplitDetector
from facesplit.runtimes import DEFAULT_PRECISION, cuda_torch


class TorchHead:
    """The detector's head on CPU torch. A channels_last input (an NHWC buffer viewed as NCHW, what
    `facesplit.preprocess` makes) stays channels_last: no copy, and the output is channels_last too.
    ``precision`` float16 runs a half-precision copy of the head (float16 values, float32 sums, as a GPU's
    tensor cores do): slower than float32 here, it is there to measure a profile on a float16 head without a GPU."""

    name = "torch"

    def __init__(self, detector: SplitDetector, precision: str = DEFAULT_PRECISION) -> None:
        self.detector = detector
        self.half: torch.nn.Module | None = None
        if precision == "float16":
            self.half = copy.deepcopy(detector.model.head).to(torch.float16, memory_format=torch.channels_last)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        if self.half is None:
            return self.detector.head(_tensor(inputs)).numpy()
        with torch.inference_mode():
            return self.half(_tensor(inputs).to(torch.float16)).float().numpy()


class TorchTail:
    """The detector's tail on CPU torch."""

    name = "torch"

    def __init__(self, detector: SplitDetector) -> None:
        self.detector = detector

    def run(self, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loc, scores = self.detector.tail(_tensor(activations))
        return loc.numpy(), scores.numpy()


class CudaTorchHead:
    """The detector's head on a CUDA GPU, channels_last; ``precision`` float16 computes in half precision
    (an explicit choice: another head, `facesplit.runtimes.fingerprint_at`). `run_on_device` leaves the float32
    activation on the GPU for the noise; `run` copies it to the host."""

    name = "torch"

    def __init__(self, detector: SplitDetector, precision: str = DEFAULT_PRECISION) -> None:
        cuda_torch()
        _strict_float32_convolutions()
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = torch.float16 if precision == "float16" else torch.float32
        # a copy: the detector's own modules stay on the CPU for whatever else uses them (its tail, a fit)
        self.module = copy.deepcopy(detector.model.head).to(self.device, self.dtype,
                                                             memory_format=torch.channels_last)

    @torch.inference_mode()
    def run_on_device(self, inputs: np.ndarray) -> torch.Tensor:
        """Model inputs (host memory) -> float32 activations on the GPU, channels_last, computed."""
        batch = _tensor(inputs).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        activations = self.module(batch).float()
        torch.cuda.current_stream(self.device).synchronize()  # stage timings and the noise see finished work
        return activations

    def run(self, inputs: np.ndarray) -> np.ndarray:
        return self.run_on_device(inputs).cpu().numpy()


class CudaTorchTail:
    """The detector's tail on a CUDA GPU, float32, channels_last (what a shared GPU cluster runs)."""

    name = "torch"

    def __init__(self, detector: SplitDetector) -> None:
        cuda_torch()
        _strict_float32_convolutions()
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.module = copy.deepcopy(detector.model.tail).to(self.device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(self, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = _tensor(activations).to(self.device).contiguous(memory_format=torch.channels_last)
        loc, scores = self.module(batch)
        return loc.cpu().numpy(), scores.cpu().numpy()


def _strict_float32_convolutions() -> None:
    """float32 means float32 on the GPU too: cuDNN's default TF32 convolutions (10-bit mantissas, Ampere and
    later) move activations by ~1e-3, and profiles were fitted and validated on float32 heads; half precision is
    `--precision float16`, asked for by name. A process-wide setting of torch. (cuDNN's benchmark mode is left
    off: it may pick a faster, less exact algorithm such as Winograd; measure before turning it on.)"""
    torch.backends.cudnn.allow_tf32 = False


def _tensor(array: np.ndarray) -> torch.Tensor:
    """The array's memory as a tensor (strides kept); a read-only array is copied first, as torch needs."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())
