"""Photometric and geometric augmentation for fitting on small sets: scale, crop, flip, colour."""

from __future__ import annotations

import cv2
import numpy as np


def augment(frame_bgr: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A randomly rescaled, cropped, flipped and recoloured copy of the frame, with its (M, 4) boxes moved
    along (boxes whose centre leaves the crop are dropped)."""
    h, w = frame_bgr.shape[:2]
    scale = rng.uniform(0.6, 1.0)
    crop_w, crop_h = max(32, round(w * scale)), max(32, round(h * scale))
    x0 = int(rng.integers(0, w - crop_w + 1))
    y0 = int(rng.integers(0, h - crop_h + 1))
    out = frame_bgr[y0:y0 + crop_h, x0:x0 + crop_w]
    moved = boxes.reshape(-1, 4) - np.array([x0, y0, x0, y0], dtype=np.float32)
    centres = (moved[:, :2] + moved[:, 2:]) / 2
    inside = (centres >= 0).all(axis=1) & (centres[:, 0] < crop_w) & (centres[:, 1] < crop_h)
    moved = moved[inside].clip(0, [crop_w, crop_h, crop_w, crop_h])
    if rng.random() < 0.5:
        out = out[:, ::-1]
        moved = np.stack([crop_w - moved[:, 2], moved[:, 1], crop_w - moved[:, 0], moved[:, 3]], axis=1)
    contrast = rng.uniform(0.7, 1.3)
    brightness = rng.uniform(-25, 25)
    out = cv2.convertScaleAbs(np.ascontiguousarray(out), alpha=contrast, beta=brightness)
    if rng.random() < 0.3:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return out, moved.astype(np.float32)
