"""Frame -> model input: resize, pad, BGR mean subtraction; and the way back to the frame's pixels.

The model input is (1, 3, H, W) float32 in channels_last memory order (that is, an HWC array viewed as
NCHW), which is what makes the head fast on CPU. Padding goes to the right and bottom with the BGR mean,
so padded pixels are exactly zero after mean subtraction and box coordinates only need rescaling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from facesplit.boxes import clip_boxes
from facesplit.errors import FrostedError
from facesplit.faceboxes import HEAD_STRIDE

# Largest model input side: a 8192x8192 input peaks at 2.3 GB RSS through head and tail on CPU (1024: 0.4 GB), and
# memory grows with the input's area, so sizes beyond this are refused by name rather than left to the OOM killer.
MAX_INPUT_SIDE = 8192
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)


class InputSizeError(FrostedError, ValueError):
    """A model input size the head cannot run: not a multiple of the stride, or too large.

    A ValueError too, so option parsers and config validators report it as a bad value."""


@dataclass(frozen=True)
class InputSize:
    """How frames become model inputs: letterboxed into ``width`` x ``height``, or ``native`` size padded."""

    width: int | None = 1024
    height: int | None = 1024

    @property
    def native(self) -> bool:
        return self.width is None

    @classmethod
    def parse(cls, text: str) -> InputSize:
        """``1024`` (square), ``1024x576`` (width x height) or ``native``; sides must be multiples of 32."""
        text = text.strip().lower()
        if text == "native":
            return cls(None, None)
        match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
        if not match:
            raise InputSizeError(f"input size {_shown(text)!r}: expected WIDTHxHEIGHT, a single side, or 'native'")
        sides = (match.group(1), match.group(2) or match.group(1))
        # count digits first: int() refuses numbers of more than 4300 digits with a message of its own
        if any(len(side.lstrip("0")) > len(str(MAX_INPUT_SIDE)) or int(side) > MAX_INPUT_SIDE for side in sides):
            raise InputSizeError(f"input size {_shown(text)}: each side at most {MAX_INPUT_SIDE} pixels")
        width, height = (int(side) for side in sides)
        if width <= 0 or height <= 0 or width % HEAD_STRIDE or height % HEAD_STRIDE:
            raise InputSizeError(f"input size {width}x{height}: both sides must be positive multiples of "
                                 f"{HEAD_STRIDE}")
        return cls(width, height)

    def __str__(self) -> str:
        return "native" if self.native else f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Letterbox:
    """Where a frame landed in the model input: input pixel = frame pixel * scale."""

    scale: float
    frame_width: int
    frame_height: int
    input_width: int
    input_height: int

    def boxes_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4+) boxes in input pixels -> frame pixels, clipped to the frame; extra columns kept."""
        out = np.array(boxes, dtype=np.float32, copy=True)
        out[:, :4] /= self.scale
        return clip_boxes(out, self.frame_width, self.frame_height)


def plan_letterbox(frame_width: int, frame_height: int, size: InputSize) -> Letterbox:
    """Raises InputSizeError for a native-size frame larger than MAX_INPUT_SIDE, before anything is allocated."""
    if size.native:
        width, height = _round_up(frame_width), _round_up(frame_height)
        if max(width, height) > MAX_INPUT_SIDE:
            raise InputSizeError(f"{frame_width}x{frame_height} is too large for --input-size native (model inputs "
                                 f"are at most {MAX_INPUT_SIDE} pixels a side); give a fixed size such as 1024")
        return Letterbox(1.0, frame_width, frame_height, width, height)
    assert size.width is not None and size.height is not None
    scale = min(size.width / frame_width, size.height / frame_height)
    return Letterbox(scale, frame_width, frame_height, size.width, size.height)


def preprocess(frame_bgr: np.ndarray, size: InputSize) -> tuple[torch.Tensor, Letterbox]:
    """A uint8 BGR frame (H, W, 3) -> model input (1, 3, h, w) channels_last float32, and its geometry."""
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 BGR image of shape (H, W, 3), got {frame_bgr.dtype} "
                         f"{frame_bgr.shape}")
    box = plan_letterbox(frame_bgr.shape[1], frame_bgr.shape[0], size)
    frame_bgr = _resized(frame_bgr, box)
    canvas = np.empty((box.input_height, box.input_width, 3), dtype=np.float32)
    h, w = frame_bgr.shape[:2]
    # Subtract a whole row of means at once: broadcasting the 3-element mean makes numpy work in chunks
    # of 3 values (measured 2x slower for the whole preprocess). Only the padding is zeroed.
    rows = canvas[:h].reshape(h, box.input_width * 3)[:, :w * 3]
    np.subtract(frame_bgr.reshape(h, w * 3), _mean_row(w), out=rows, dtype=np.float32)
    canvas[:h, w:] = 0.0
    canvas[h:] = 0.0
    tensor = torch.from_numpy(canvas).permute(2, 0, 1).unsqueeze(0)  # channels_last view, no copy
    return tensor, box


def letterbox_pixels(frame_bgr: np.ndarray, size: InputSize) -> tuple[np.ndarray, Letterbox]:
    """A uint8 BGR frame (H, W, 3) -> the model input before mean subtraction, (h, w, 3) uint8, resized as
    `preprocess` resizes and padded with the BGR mean (zero once a runtime subtracts it): for a runtime that
    converts pixels itself (`facesplit.runtimes.PixelHeadRuntime`), the same input with no float pass here."""
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 BGR image of shape (H, W, 3), got {frame_bgr.dtype} "
                         f"{frame_bgr.shape}")
    box = plan_letterbox(frame_bgr.shape[1], frame_bgr.shape[0], size)
    frame_bgr = _resized(frame_bgr, box)
    h, w = frame_bgr.shape[:2]
    if (h, w) == (box.input_height, box.input_width):
        return np.ascontiguousarray(frame_bgr), box
    canvas = np.empty((box.input_height, box.input_width, 3), dtype=np.uint8)
    canvas[:h, :w] = frame_bgr
    canvas[:h, w:] = BGR_MEAN.astype(np.uint8)
    canvas[h:] = BGR_MEAN.astype(np.uint8)
    return canvas, box


def _resized(frame_bgr: np.ndarray, box: Letterbox) -> np.ndarray:
    if box.scale == 1.0:
        return frame_bgr
    # at least a pixel: a frame 30000 pixels tall and 1 wide would round its width to none
    resized_w = max(1, min(box.input_width, round(box.frame_width * box.scale)))
    resized_h = max(1, min(box.input_height, round(box.frame_height * box.scale)))
    return cv2.resize(frame_bgr, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)


@lru_cache(maxsize=16)
def _mean_row(width: int) -> np.ndarray:
    return np.tile(BGR_MEAN, width)


def _shown(text: str) -> str:
    """``text`` for an error message, cut short: a user may paste anything."""
    return text if len(text) <= 24 else text[:20] + "..."


def _round_up(n: int) -> int:
    return -(-n // HEAD_STRIDE) * HEAD_STRIDE
