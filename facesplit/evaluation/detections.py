"""Run the detector over an evaluation set, and save/load raw detections (JSON lines) for comparison."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facesplit.detector import ActivationTransform, SplitDetector
from facesplit.evaluation.coco import LabelledImage
from facesplit.evaluation.errors import DatasetError
from facesplit.evaluation.noise import ImageNoise
from facesplit.images import not_a_file, read_image_bgr
from facesplit.outputs import write_text


def detect_images(detector: SplitDetector, images: Iterable[LabelledImage],
                  obfuscate: ActivationTransform | ImageNoise | None = None,
                  desc: str = "detect") -> dict[str, np.ndarray]:
    """Each image's detections; an `ImageNoise` gives each image its own noise stream (seeded per image)."""
    images = list(images)

    def transform(key: str) -> ActivationTransform | None:
        return obfuscate.for_image(key) if isinstance(obfuscate, ImageNoise) else obfuscate

    return {image.key: detector.detect(read_image_bgr(image.path), transform(image.key))
            for image in tqdm(images, desc=desc, unit="img", dynamic_ncols=True)}


def detection_record(key: str, boxes: np.ndarray, exact: bool = False) -> dict:
    """The JSON form shared by `frosted detect` output (rounded for people) and saved detections (exact, so
    rescoring them reproduces every figure bit for bit)."""
    if exact:
        return {"image": key, "boxes": [[float(v) for v in b[:5]] for b in boxes]}
    return {"image": key, "boxes": [[round(float(v), 2) for v in b[:4]] + [round(float(b[4]), 5)]
                                    for b in boxes]}


def save_detections(path: Path, detections: dict[str, np.ndarray]) -> None:
    write_text(path, "".join(json.dumps(detection_record(key, boxes, exact=True)) + "\n"
                             for key, boxes in detections.items()))


def load_detections(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():  # a FIFO would block the read for ever
        raise DatasetError(f"{path}: {not_a_file(path, 'detections file')}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read detections ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text, as saved detections are (byte {exc.start})") from None
    detections = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            boxes = np.array(record["boxes"], dtype=np.float32).reshape(-1, 5)
            detections[str(record["image"])] = boxes
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError):
            raise DatasetError(f"{path}:{number}: expected {{\"image\": ..., \"boxes\": [[x1, y1, x2, y2, "
                               "score], ...]}") from None
    return detections
