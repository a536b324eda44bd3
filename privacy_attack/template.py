"""What the detections alone give away: the attacker's average face painted into every face box.

The tail returns face boxes by design, so whoever holds it learns where each face is and how big it is.
Painting the average of the attacker's public faces into those boxes, over the frame's mean colour, is a
reconstruction that knows nothing of *who* is there, yet it scores well above a flat image on face-crop SSIM,
because faces share their layout (dark eyes and brows, lighter forehead and cheeks). No profile that keeps
faces detectable can push an attack's face SSIM below this baseline; an attack learns something about a face
only where it beats it.
"""

from __future__ import annotations

import numpy as np

from facesplit.detector import SplitDetector
from privacy_attack.canvas import Canvas, flat_canvas, resize, to_canvas
from privacy_attack.datasets import Photo
from privacy_attack.metrics import FACE_COMPARE_SIDE, MIN_CROP_SIDE, as_boxes, crop, find_faces


def average_face(detector: SplitDetector, photos: list[Photo], input_size: tuple[int, int] = (1024, 1024),
                 side: int = FACE_COMPARE_SIDE) -> np.ndarray | None:
    """The mean of every face the clean detector finds in ``photos`` (as the edge would see them), each crop
    resized to ``side`` x ``side``: (side, side, 3) float32 BGR, or None when the photos hold no face. A photo
    listed more than once (the decoder's colour repeats, `attacker_photos`) counts once."""
    total, count = np.zeros((side, side, 3), np.float64), 0
    for photo in {photo.key: photo for photo in photos}.values():
        canvas = to_canvas(photo.image, input_size)
        for box in find_faces(detector, canvas.image):
            face = crop(canvas.image, box)
            if min(face.shape[:2]) >= MIN_CROP_SIDE:
                total += resize(face, side, side)
                count += 1
    return (total / count).astype(np.float32) if count else None


def paint_faces(canvas: Canvas, boxes: np.ndarray, face: np.ndarray) -> np.ndarray:
    """`flat_canvas` with ``face`` resized into each of ``boxes`` (canvas pixels): the boxes-only guess."""
    out = flat_canvas(canvas)
    height, width = out.shape[:2]
    for box in as_boxes(boxes):
        x1, y1, x2, y2 = np.round(box[:4]).astype(int).tolist()
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if x2 > x1 and y2 > y1:
            out[y1:y2, x1:x2] = np.clip(np.round(resize(face, x2 - x1, y2 - y1)), 0, 255).astype(np.uint8)
    return out
