"""Pixels for the preview page: the frame as a JPEG, and what crossed the wire as an image (each cell's
channel energy, sqrt(mean over channels of z²), of the noisy activation the tail received). Blocking: run off
the event loop."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from frosted_wire.codec import decode_tensor
from frosted_wire.v1 import tail_pb2

MAX_PAGE_WIDTH = 1280  # wider frames are scaled down for the page; the overlay stays in frame pixels
JPEG_QUALITY = 80


@dataclass(frozen=True)
class RenderedFrame:
    sequence: int
    fields: dict[str, Any]  # `board.frame_fields` of the frame these pixels are
    jpeg_base64: str
    activation_png_base64: str
    made_at: float  # time.monotonic()


def frame_jpeg(image: np.ndarray) -> bytes:
    height, width = image.shape[:2]
    if width > MAX_PAGE_WIDTH:
        image = cv2.resize(image, (MAX_PAGE_WIDTH, round(height * MAX_PAGE_WIDTH / width)),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def channel_energy(activation: tail_pb2.Tensor) -> np.ndarray:
    """(H, W) float32: the root mean square over channels of the (C, H, W) activation, per cell."""
    values = decode_tensor(activation, tuple(activation.shape))
    return np.sqrt(np.mean(np.square(values, dtype=np.float32), axis=0))


def energy_png(energy: np.ndarray) -> bytes:
    """One pixel per cell, stretched between the 1st and 99th percentile, in a perceptual colour map."""
    low, high = np.percentile(energy, [1, 99])
    scaled = np.clip((energy - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    coloured = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    ok, data = cv2.imencode(".png", coloured)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def render_frame(fields: dict[str, Any], image: np.ndarray, activation: tail_pb2.Tensor) -> RenderedFrame:
    return RenderedFrame(fields["sequence"], fields, base64.b64encode(frame_jpeg(image)).decode("ascii"),
                         base64.b64encode(energy_png(channel_energy(activation))).decode("ascii"), time.monotonic())
