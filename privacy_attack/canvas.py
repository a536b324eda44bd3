"""Images as the model sees them: the letterboxed "canvas" at the model input, in 8-bit BGR.

Every comparison of an original with a reconstruction happens on this canvas: a reconstruction can at best
recover what the head saw, i.e. the frame resized into the model input, not the camera's full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facesplit.preprocess import BGR_MEAN, InputSize, Letterbox, preprocess

# Padding is the BGR mean (zero after mean subtraction); as 8-bit pixels that is this colour.
PAD_BGR = np.round(BGR_MEAN).astype(np.uint8)


@dataclass(frozen=True)
class Canvas:
    """A frame letterboxed into the model input: ``image`` (H, W, 3) uint8 BGR and where the frame landed."""

    image: np.ndarray
    letterbox: Letterbox

    @property
    def content(self) -> tuple[int, int]:
        """(width, height) of the part of the canvas that holds the frame (the rest is padding)."""
        lb = self.letterbox
        return (min(lb.input_width, round(lb.frame_width * lb.scale)),
                min(lb.input_height, round(lb.frame_height * lb.scale)))

    def boxes_from_frame(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4+) boxes in frame pixels -> canvas pixels (extra columns kept)."""
        out = np.array(boxes, dtype=np.float32, copy=True)
        if out.size:
            out[:, :4] *= self.letterbox.scale
        return out


def to_canvas(frame_bgr: np.ndarray, input_size: tuple[int, int] = (1024, 1024)) -> Canvas:
    """Letterbox ``frame_bgr`` exactly as the edge does (`facesplit.preprocess`), back as 8-bit pixels."""
    x, box = preprocess(frame_bgr, InputSize(*input_size))
    return Canvas(input_to_image(x), box)


def input_to_image(x: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) model input (BGR minus mean) -> (H, W, 3) uint8 BGR, rounded and clipped."""
    hwc = x[0].detach().permute(1, 2, 0).cpu().numpy() + BGR_MEAN
    return np.clip(np.round(hwc), 0, 255).astype(np.uint8)


def image_to_input(image_bgr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 BGR canvas -> (1, 3, H, W) float32 BGR minus mean, channels_last (the head's fast order)."""
    hwc = image_bgr.astype(np.float32) - BGR_MEAN
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).unsqueeze(0)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging to shrink (no aliasing), bilinear to enlarge: how reconstructions and targets are sized."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width < image.shape[1] and height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def flat_canvas(canvas: Canvas) -> np.ndarray:
    """The frame's mean colour over its content, padding kept: the "learned nothing" baseline reconstruction."""
    width, height = canvas.content
    out = np.empty_like(canvas.image)
    out[:] = PAD_BGR
    out[:height, :width] = np.round(canvas.image[:height, :width].reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    return out
