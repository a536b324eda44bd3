"""Box arithmetic both the detector and the evaluation need, spelled once (numpy only)."""

from __future__ import annotations

import numpy as np


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """A float32 copy of (N, 4+) ``[x1, y1, x2, y2, ...]`` boxes clipped to a ``width`` x ``height`` image
    (x in 0..width, y in 0..height); extra columns kept."""
    out = np.array(boxes, dtype=np.float32, copy=True)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out
