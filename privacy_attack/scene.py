"""A portrait placed in a camera's frame: the face at a chosen size at the model input, over another scene.

A hallway camera sees small faces in a large frame; a portrait letterboxed to 1024x1024 would show a face of
~400 px that no camera delivers. `place_face` scales the photo so its face box is ``side`` px at the model
input and pastes it, feathered at its edges, at a random position over a background scene that is not the
photo's own. Victims and the attacker's training faces are placed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facesplit.errors import FrostedError
from facesplit.images import ImageError, read_image_bgr, sample_image
from privacy_attack.people import IMAGE_SUFFIXES

FRAME = (1024, 1024)  # (width, height) of the model input the faces are placed in
# scikit-image's offline colour photos without a face: scenes for the faces to stand in
SCENES = ("coffee", "chelsea", "rocket", "cat")
FEATHER = 0.12  # share of the pasted photo's side over which it fades into the scene


class SceneError(FrostedError):
    """No background scene could be read."""


@dataclass(frozen=True)
class PlacedFace:
    """A frame at the model input holding one face: ``image`` (H, W, 3) uint8 BGR, ``box`` its face."""

    image: np.ndarray
    box: np.ndarray  # (4,) x1, y1, x2, y2 in frame pixels

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2


class Backgrounds:
    """Scenes to place faces in; each use is a random crop (half to all of each side), maybe mirrored,
    resized to the frame."""

    def __init__(self, scenes: Sequence[np.ndarray]) -> None:
        if not scenes:
            raise SceneError("no background scene to place faces in")
        self.scenes = list(scenes)

    @classmethod
    def from_folder(cls, folder: Path) -> Backgrounds:
        if not folder.is_dir():
            raise SceneError(f"{folder}: backgrounds folder not found")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SceneError(f"{folder}: no photos to use as backgrounds")
        return cls([read_image_bgr(p) for p in files])

    @classmethod
    def flat(cls, colour: Sequence[int] = (104, 117, 123)) -> Backgrounds:
        """One flat frame of ``colour`` (BGR; the default is the model's mean, zero at the input): the
        reference identity probe's setting (REFERENCE.md), where nothing but the face is in view."""
        return cls([np.full((FRAME[1], FRAME[0], 3), colour, np.uint8)])

    @classmethod
    def shipped(cls) -> Backgrounds:
        scenes = []
        for name in SCENES:
            try:
                scenes.append(sample_image(name))
            except ImageError:
                continue  # an older scikit-image without that photo
        return cls(scenes)

    def sample(self, rng: np.random.Generator, size: tuple[int, int] = FRAME) -> np.ndarray:
        scene = self.scenes[int(rng.integers(len(self.scenes)))]
        h, w = scene.shape[:2]
        ch, cw = (max(16, int(side * rng.uniform(0.5, 1.0))) for side in (h, w))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = scene[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return cv2.resize(np.ascontiguousarray(crop), size, interpolation=cv2.INTER_LINEAR)


def _feather_mask(height: int, width: int) -> np.ndarray:
    """(H, W, 1) float32 alpha: 1 inside, falling linearly to 0 over the outer `FEATHER` of each side."""
    def ramp(n: int) -> np.ndarray:
        edge = max(1.0, FEATHER * n)
        position = np.arange(n, dtype=np.float32) + 0.5
        return np.clip(np.minimum(position, n - position) / edge, 0.0, 1.0)

    return (ramp(height)[:, None] * ramp(width)[None, :])[..., None]


def place_face(photo: np.ndarray, face_box: np.ndarray, side: float, background: np.ndarray,
               centre: tuple[float, float]) -> PlacedFace:
    """``photo`` scaled so its ``face_box`` (photo pixels) has a side of ``side`` px (the geometric mean of its
    width and height), its face centred at ``centre`` (frame pixels) over ``background`` (the frame)."""
    x1, y1, x2, y2 = (float(v) for v in face_box[:4])
    scale = side / max(1e-6, float(np.sqrt(max(x2 - x1, 1.0) * max(y2 - y1, 1.0))))
    h, w = photo.shape[:2]
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(photo, (out_w, out_h), interpolation=interpolation).astype(np.float32)
    # where the scaled photo's top-left lands so that the face centre is at ``centre``
    left = round(centre[0] - (x1 + x2) / 2 * scale)
    top = round(centre[1] - (y1 + y2) / 2 * scale)
    frame = background.copy()
    fh, fw = frame.shape[:2]
    fx1, fy1, fx2, fy2 = max(0, left), max(0, top), min(fw, left + out_w), min(fh, top + out_h)
    if fx2 > fx1 and fy2 > fy1:  # blended where the photo lands only: the rest of the frame is the scene
        alpha = _feather_mask(out_h, out_w)[fy1 - top:fy2 - top, fx1 - left:fx2 - left]
        patch = scaled[fy1 - top:fy2 - top, fx1 - left:fx2 - left]
        blended = alpha * patch + (1 - alpha) * frame[fy1:fy2, fx1:fx2].astype(np.float32)
        frame[fy1:fy2, fx1:fx2] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    box = np.array([left + x1 * scale, top + y1 * scale, left + x2 * scale, top + y2 * scale], np.float32)
    return PlacedFace(frame, box)


def frame_centre(frame: tuple[int, int] = FRAME) -> tuple[float, float]:
    """The frame's centre: on a cell corner at every split, so each face sits at the same phase of the grid."""
    return frame[0] / 2, frame[1] / 2


def random_centre(rng: np.random.Generator, side: float, margin_cells: int, stride: int = 32,
                  frame: tuple[int, int] = FRAME) -> tuple[float, float]:
    """A face centre uniformly over the frame, at least ``margin_cells`` activation cells (and half a face)
    from every edge, so the attack's crop around it lies inside the activation."""
    margin = max(margin_cells * stride, side / 2)
    return (float(rng.uniform(margin, frame[0] - margin)), float(rng.uniform(margin, frame[1] - margin)))
