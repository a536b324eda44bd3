"""FaceBoxes anchors (priors) and box decoding.

Anchor order must match the tail's output order exactly: for each feature map (strides 32, 64, 128),
cells in row-major order, and within a stride-32 cell 16 dense 32-px anchors (4x4 sub-positions, **row
offset outer, column inner**), 4 dense 64-px anchors (2x2, same order), one 128-px anchor. Getting the
sub-position order wrong still "works" but costs ~0.25 AP.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

STEPS = (32, 64, 128)
MIN_SIZES = ((32, 64, 128), (256,), (512,))
DENSITY = {32: 4, 64: 2}  # anchors per cell side for the small sizes; others get one, centred
VARIANCES = (0.1, 0.2)


@lru_cache(maxsize=8)
def priors_for(height: int, width: int) -> np.ndarray:
    """(P, 4) float32 anchors as (cx, cy, w, h), normalised to the input size; built once per size."""
    blocks = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cell_anchors = []  # (dy, dx, size) in cell units, in the checkpoint's order
        for size in sizes:
            n = DENSITY.get(size, 1)
            offsets = np.arange(n) / n if n > 1 else np.array([0.5])
            for dy in offsets:
                for dx in offsets:
                    cell_anchors.append((dy, dx, size))
        a = np.array(cell_anchors, dtype=np.float64)  # (A, 3)
        i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cy = (i.reshape(-1, 1) + a[:, 0]) * step / height  # (cells, A)
        cx = (j.reshape(-1, 1) + a[:, 1]) * step / width
        w = np.broadcast_to(a[:, 2] / width, cx.shape)
        h = np.broadcast_to(a[:, 2] / height, cx.shape)
        blocks.append(np.stack([cx, cy, w, h], axis=-1).reshape(-1, 4))
    priors = np.concatenate(blocks).astype(np.float32)
    priors.setflags(write=False)  # shared through the cache
    return priors


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """SSD decoding of (P, 4) offsets against (P, 4) priors -> (P, 4) corners (x1, y1, x2, y2), normalised."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def encode_boxes(boxes: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Inverse of `decode_boxes`: (P, 4) normalised corners -> (P, 4) offsets against (P, 4) priors."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6)
    return np.concatenate([(centre - priors[:, :2]) / (VARIANCES[0] * priors[:, 2:]),
                           np.log(size / priors[:, 2:]) / VARIANCES[1]], axis=1)
