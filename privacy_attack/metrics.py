"""How close a reconstruction is to the original: SSIM/PSNR of the whole image and of each face, and
whether the clean detector still finds the face in it.

SSIM and PSNR are scikit-image's (no hand-written SSIM: its windows, constants and edge handling are the
ones papers report). Faces are located once, by the clean detector on the original, and the same boxes are
used on the reconstruction: the question is "is *this* face recoverable", not "is there some face".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from facesplit.detector import SplitDetector
from facesplit.evaluation.ap import iou_matrix
from privacy_attack.canvas import resize

FACE_THRESHOLD = 0.7  # the operating point: dlib set 43/43 faces, no false alarms (REFERENCE.md)
FOUND_SCORE = 0.5
FOUND_IOU = 0.3  # FaceBoxes' boxes are tight; 0.3 says "the same face", not "the same box style"
MIN_CROP_SIDE = 7  # SSIM's default 7x7 window must fit
# Faces are compared at one size, the scale face recognisers work at (dlib aligns to 150x150): at their
# canvas size a big face is mostly smooth skin, where a flat guess scores SSIM ~0.55 against the original.
FACE_COMPARE_SIDE = 112


@dataclass(frozen=True)
class Similarity:
    ssim: float  # 1 = identical; ~0 = unrelated structure
    psnr: float  # dB; inf for identical images (capped at 100 so results stay JSON-able)


def find_faces(detector: SplitDetector, image_bgr: np.ndarray, threshold: float = FACE_THRESHOLD) -> np.ndarray:
    """(N, 5) [x1, y1, x2, y2, score] faces at ``threshold`` found by the clean (noise-free) detector."""
    boxes = detector.detect(image_bgr)
    return boxes[boxes[:, 4] >= threshold]


def similarity(original: np.ndarray, reconstruction: np.ndarray) -> Similarity:
    """SSIM (colour, 8-bit range, the largest odd window up to 7 that fits) and PSNR of two same-size images."""
    if original.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {reconstruction.shape}")
    side = min(original.shape[:2])
    if side < 3:
        raise ValueError(f"image {original.shape} too small for SSIM")
    window = min(7, side if side % 2 else side - 1)
    channel_axis = 2 if original.ndim == 3 else None
    ssim = structural_similarity(original, reconstruction, win_size=window, channel_axis=channel_axis,
                                 data_range=255)
    with np.errstate(divide="ignore"):
        psnr = peak_signal_noise_ratio(original, reconstruction, data_range=255)
    return Similarity(float(ssim), float(min(psnr, 100.0)))


def image_similarity(original: np.ndarray, reconstruction: np.ndarray,
                     content: tuple[int, int] | None = None) -> Similarity:
    """Whole-image similarity over ``content`` = (width, height) from the top-left (the letterbox's frame
    area): the padding is trivially recovered and would flatter every attack."""
    if content is not None:
        width, height = content
        original, reconstruction = original[:height, :width], reconstruction[:height, :width]
    return similarity(original, reconstruction)


def as_boxes(boxes: np.ndarray | list) -> np.ndarray:
    """(N, 4+) float32 boxes; an empty input becomes (0, 4)."""
    arr = np.asarray(boxes, dtype=np.float32)
    return np.zeros((0, 4), dtype=np.float32) if arr.size == 0 else arr.reshape(-1, arr.shape[-1])


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The pixels of ``box`` (x1, y1, x2, y2), rounded outwards and clipped to the image."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    return image[y1:y2, x1:x2]


def face_similarities(original: np.ndarray, reconstruction: np.ndarray, boxes: np.ndarray,
                      side: int | None = FACE_COMPARE_SIDE) -> list[Similarity]:
    """Similarity of each face crop (boxes in the images' pixels), both crops resized to ``side`` x ``side``
    (None: compared at their own size); faces smaller than SSIM's window are skipped."""
    out = []
    for box in as_boxes(boxes):
        a, b = crop(original, box), crop(reconstruction, box)
        if min(a.shape[:2]) < MIN_CROP_SIDE:
            continue
        if side is not None:
            a, b = resize(a, side, side), resize(b, side, side)
        out.append(similarity(a, b))
    return out


def detector_finds_faces(detector: SplitDetector, reconstruction: np.ndarray, boxes: np.ndarray,
                         score: float = FOUND_SCORE, iou: float = FOUND_IOU) -> list[bool]:
    """For each original face box: does the clean detector find it in the reconstruction (a detection with
    score >= ``score`` overlapping it with IoU >= ``iou``)? If it does, the reconstruction still shows a face."""
    boxes = as_boxes(boxes)
    if not len(boxes):
        return []
    found = detector.detect(reconstruction)
    found = found[found[:, 4] >= score]
    if not len(found):
        return [False] * len(boxes)
    overlaps = iou_matrix(boxes[:, :4], found[:, :4])
    return [bool(v) for v in overlaps.max(axis=1) >= iou]
