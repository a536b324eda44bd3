"""The torch runtime: the head and tail of a `SplitDetector` (batch norm fused, channels_last), as today."""

from __future__ import annotations

import numpy as np
import torch

from facesplit.detector import SplitDetector


class TorchHead:
    """The detector's head on CPU torch. A channels_last input (an NHWC buffer viewed as NCHW, what
    `facesplit.preprocess` makes) stays channels_last: no copy, and the output is channels_last too."""

    name = "torch"

    def __init__(self, detector: SplitDetector) -> None:
        self.detector = detector

    def run(self, inputs: np.ndarray) -> np.ndarray:
        return self.detector.head(_tensor(inputs)).numpy()


class TorchTail:
    """The detector's tail on CPU torch."""

    name = "torch"

    def __init__(self, detector: SplitDetector) -> None:
        self.detector = detector

    def run(self, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loc, scores = self.detector.tail(_tensor(activations))
        return loc.numpy(), scores.numpy()


def _tensor(array: np.ndarray) -> torch.Tensor:
    """The array's memory as a tensor (strides kept); a read-only array is copied first, as torch needs."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())
