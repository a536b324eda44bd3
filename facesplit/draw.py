"""Draw face boxes and scores on a frame (for `--draw` and previews)."""

from __future__ import annotations

import cv2
import numpy as np


def draw_boxes(frame_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A copy of the frame with each (x1, y1, x2, y2, score) box outlined and labelled."""
    out = frame_bgr.copy()
    thickness = max(1, round(max(out.shape[:2]) / 400))
    for x1, y1, x2, y2, score in boxes[:, :5]:
        p1, p2 = (round(float(x1)), round(float(y1))), (round(float(x2)), round(float(y2)))
        cv2.rectangle(out, p1, p2, (0, 255, 0), thickness)
        cv2.putText(out, f"{score:.2f}", (p1[0], max(p1[1] - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, (0, 255, 0), thickness)
    return out
