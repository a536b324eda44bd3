"""Where each photo's face is and who dlib says it is: a face box (the clean detector) and dlib's 128-d
descriptor, computed once per photo and cached.

The descriptor is the identity probe's target and the gallery's key; dlib takes ~60 ms a face on this CPU, so
13,744 attacker faces cost minutes: the cache (``$XDG_CACHE_HOME/frosted/faces``) is keyed by each file's
content and by the detector's weights, so a changed photo or model is described anew, while the same photos
copied, mounted elsewhere or touched keep their cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facesplit.detector import SplitDetector, load_detector
from facesplit.images import read_image_bgr
from facesplit.preprocess import InputSize
from privacy_attack.people import FacePhoto
from privacy_attack.reid import EMBEDDING_DIM, default_encoder

FACE_SCORE = 0.5  # a source photo is a portrait: its face need not pass the operating threshold
MAX_NATIVE_SIDE = 1024  # larger photos are shrunk before looking for their face


@dataclass(frozen=True)
class DescribedFace:
    """A photo whose face was found: its box in the photo's pixels and dlib's descriptor of it."""

    photo: FacePhoto
    box: np.ndarray  # (4,) x1, y1, x2, y2 in the photo's pixels
    descriptor: np.ndarray  # (128,) float32


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "frosted" / "faces"


def main_face(boxes: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """The portrait's subject among (N, 5) detections: the best-scoring box over the photo's centre, else the
    largest; None without a box scoring ``FACE_SCORE``."""
    boxes = boxes[boxes[:, 4] >= FACE_SCORE]
    if not len(boxes):
        return None
    cx, cy = width / 2, height / 2
    central = boxes[(boxes[:, 0] <= cx) & (boxes[:, 2] >= cx) & (boxes[:, 1] <= cy) & (boxes[:, 3] >= cy)]
    if len(central):
        return central[int(np.argmax(central[:, 4]))][:4]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas))][:4]


def find_face(detector: SplitDetector, image: np.ndarray) -> np.ndarray | None:
    """The main face's box in ``image``'s pixels (the detector at the photo's own size, capped)."""
    height, width = image.shape[:2]
    scale = min(1.0, MAX_NATIVE_SIDE / max(height, width))
    if scale < 1.0:
        import cv2

        small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        box = main_face(detector.detect(small), small.shape[1], small.shape[0])
        return None if box is None else box / scale
    return main_face(detector.detect(image), width, height)


def _signature(photos: Sequence[FacePhoto], weights_id: str) -> str:
    digest = hashlib.sha256(weights_id.encode())
    for photo in photos:
        digest.update(hashlib.sha256(photo.path.read_bytes()).digest())
    return digest.hexdigest()[:20]


def describe(photos: Sequence[FacePhoto], detector: SplitDetector | None = None, cache: Path | None = None,
             progress: bool = True, desc: str = "dlib descriptors") -> list[DescribedFace]:
    """Each photo whose face is found, with its box and descriptor (photos without a face are left out).
    Cached as one file per list of photos; ``cache=None`` uses `cache_folder`."""
    detector = detector or load_detector(input_size=InputSize.parse("native"))
    weights_id = detector.source.state_dict()["head.conv1.conv.weight"].numpy().tobytes()[:4096].hex()
    cache = cache or cache_folder()
    file = cache / f"{_signature(photos, weights_id)}.npz"
    if file.is_file():
        stored = np.load(file)
        index, boxes, descriptors = stored["index"], stored["boxes"], stored["descriptors"]
    else:
        encoder = default_encoder()
        found_index, found_boxes, found_descriptors = [], [], []
        for i, photo in enumerate(tqdm(photos, desc=desc, unit="face", disable=not progress, leave=False)):
            image = read_image_bgr(photo.path)
            box = find_face(detector, image)
            if box is None:
                continue
            found_index.append(i)
            found_boxes.append(box)
            found_descriptors.append(encoder.embed(image, box))
        index = np.asarray(found_index, dtype=np.int64)
        boxes = np.asarray(found_boxes, dtype=np.float32).reshape(-1, 4)
        descriptors = np.asarray(found_descriptors, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        cache.mkdir(parents=True, exist_ok=True)
        partial = file.with_suffix(".partial.npz")
        np.savez(partial, index=index, boxes=boxes, descriptors=descriptors)
        partial.replace(file)  # whole or absent: a killed run leaves no half cache behind
    return [DescribedFace(photos[i], boxes[j], descriptors[j]) for j, i in enumerate(index.tolist())]
