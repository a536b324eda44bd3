"""The split detector in one process: frame -> head -> (optional obfuscation) -> tail -> boxes."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from facesplit.errors import FrostedError
from facesplit.faceboxes import DEFAULT_SPLIT, FaceBoxes
from facesplit.postprocess import PostprocessConfig, detections_from_outputs
from facesplit.preprocess import InputSize, Letterbox, preprocess
from facesplit.runtime import tune_cpu_runtime
from facesplit.weights import load_faceboxes

ActivationTransform = Callable[[torch.Tensor], torch.Tensor]


class SplitDetector:
    """FaceBoxes split into head and tail (at the model's split), run on CPU in channels_last order (about
    twice as fast as NCHW)."""

    def __init__(self, model: FaceBoxes, input_size: InputSize = InputSize(),
                 postprocess: PostprocessConfig = PostprocessConfig()) -> None:
        self.source = model  # unfused: what fingerprints and noise-aware tails refer to
        fused = copy.deepcopy(model).eval().fuse_batchnorm_()
        self.model = fused.to(memory_format=torch.channels_last)
        self.input_size = input_size
        self.postprocess = postprocess

    @property
    def split(self) -> str:
        return self.source.split

    @torch.inference_mode()
    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(x)

    @torch.inference_mode()
    def tail(self, activation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.tail(activation.contiguous(memory_format=torch.channels_last))

    def boxes_from_activation(self, activation: torch.Tensor, box: Letterbox) -> np.ndarray:
        """Tail + post-processing for one (1, C, h, w) activation -> (N, 5) boxes in frame pixels."""
        loc, scores = self.tail(activation)
        found = detections_from_outputs(loc[0].numpy(), scores[0].numpy(), box.input_height,
                                        box.input_width, self.postprocess)
        return box.boxes_to_frame(found)

    def detect(self, frame_bgr: np.ndarray, obfuscate: ActivationTransform | None = None) -> np.ndarray:
        """(N, 5) [x1, y1, x2, y2, score] in ``frame_bgr``'s pixels, best first."""
        x, box = preprocess(frame_bgr, self.input_size)
        activation = self.head(x)
        if obfuscate is not None:
            activation = obfuscate(activation)
        return self.boxes_from_activation(activation, box)


def load_detector(weights: str | None = None, input_size: InputSize = InputSize(),
                  postprocess: PostprocessConfig = PostprocessConfig(),
                  threads: int | None = None, split: str = DEFAULT_SPLIT) -> SplitDetector:
    """The detector every verb uses: weights resolved as `load_faceboxes` does, CPU runtime tuned."""
    tune_cpu_runtime(threads)
    return SplitDetector(load_faceboxes(weights, split), input_size, postprocess)


def at_split(detector: SplitDetector, split: str) -> SplitDetector:
    """The same detector (weights, input size, post-processing) split at ``split``, or ``detector`` itself."""
    if split == detector.split:
        return detector
    return SplitDetector(detector.source.at_split(split), detector.input_size, detector.postprocess)


def with_tail(detector: SplitDetector, tail_state: dict[str, torch.Tensor] | None) -> SplitDetector:
    """The same detector with a noise-aware tail's weights (a profile's, often for a few of the tail's
    modules only), or ``detector`` itself."""
    if tail_state is None:
        return detector
    tuned = copy.deepcopy(detector.source)
    state = tuned.tail.state_dict()
    unknown = sorted(set(tail_state) - set(state))
    if unknown:
        raise FrostedError(f"the profile's noise-aware tail has tensors this tail lacks: {unknown[:3]}")
    misshapen = [name for name, tensor in tail_state.items() if tensor.shape != state[name].shape]
    if misshapen:
        name = misshapen[0]
        raise FrostedError(f"the profile's noise-aware tail does not fit this tail: {name} is "
                           f"{tuple(tail_state[name].shape)}, here {tuple(state[name].shape)}")
    state.update(tail_state)
    tuned.tail.load_state_dict(state, strict=True)
    return SplitDetector(tuned, detector.input_size, detector.postprocess)
