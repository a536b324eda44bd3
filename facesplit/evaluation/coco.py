"""Face sets in COCO detection format: ``labels.json`` (images, annotations with [x, y, w, h]) + images."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesplit.boxes import clip_boxes
from facesplit.evaluation.errors import DatasetError
from facesplit.evaluation.paths import stays_inside
from facesplit.images import image_size, not_a_file


@dataclass(frozen=True)
class LabelledImage:
    """One image of an evaluation set and its ground-truth face boxes (x1, y1, x2, y2) in its pixels, clipped
    to the image (`truth_in_image`)."""

    key: str  # how the image is named in reports and saved detections
    path: Path
    boxes: np.ndarray  # (M, 4) float32


def read_coco_faces(labels: Path, images_dir: Path) -> list[LabelledImage]:
    """Every image listed in ``labels`` (faces or not), sorted by file name; boxes of all categories."""
    if not labels.is_file():  # a FIFO would block the read for ever
        raise DatasetError(f"{labels}: {not_a_file(labels, 'COCO labels file')}")
    try:
        text = labels.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{labels}: cannot read COCO labels ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{labels}: not UTF-8 text, as COCO JSON is (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{labels}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DatasetError(f"{labels}: not COCO labels (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{labels}: expected a COCO object with 'images' and 'annotations' lists")
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: image folder not found (for {labels})")

    files: dict[object, str] = {}
    named: dict[str, int] = {}  # file name -> its first index in images
    sizes: dict[object, tuple[float, float]] = {}  # (width, height) where the labels give them
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("id"), int | str) \
                or isinstance(image.get("id"), bool) or not isinstance(image.get("file_name"), str):
            raise DatasetError(f"{labels}: images[{i}] needs an 'id' (a number or a string) and a 'file_name'")
        if not stays_inside(image["file_name"]):
            raise DatasetError(f"{labels}: images[{i}] has file_name {image['file_name']!r}: it must name a file "
                               "inside the image folder (a relative path without '..')")
        if image["id"] in files:
            raise DatasetError(f"{labels}: images[{i}] has id {image['id']!r}, which an earlier image has too")
        if image["file_name"] in named:  # scored twice, its faces counted twice
            raise DatasetError(f"{labels}: images[{i}] has file_name {image['file_name']!r}, which "
                               f"images[{named[image['file_name']]}] has too")
        named[image["file_name"]] = i
        files[image["id"]] = image["file_name"]
        width, height = image.get("width"), image.get("height")
        if all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in (width, height)):
            sizes[image["id"]] = (float(width), float(height))
    boxes: dict[object, list[list[float]]] = {image_id: [] for image_id in files}
    for i, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
                or bbox[2] < 0 or bbox[3] < 0):
            raise DatasetError(f"{labels}: annotations[{i}] needs a 'bbox' [x, y, width, height] of 4 "
                               f"finite numbers with width, height >= 0, got {bbox!r}")
        if not isinstance(ann.get("image_id"), int | str) or ann.get("image_id") not in files:
            raise DatasetError(f"{labels}: annotations[{i}] refers to image_id {ann.get('image_id')!r}, "
                               "which 'images' does not list")
        x, y, w, h = (float(v) for v in bbox)
        boxes[ann["image_id"]].append([x, y, x + w, y + h])

    result = []
    for image_id, name in sorted(files.items(), key=lambda item: item[1]):
        path = images_dir / name
        if not path.is_file():
            raise DatasetError(f"{path}: image listed in {labels} not found")
        width, height = image_size(path)
        if image_id in sizes and sizes[image_id] not in ((width, height), (height, width)):  # swapped: EXIF-rotated
            raise DatasetError(f"{labels}: {name} is {width}x{height}, but the labels say "
                               f"{sizes[image_id][0]:g}x{sizes[image_id][1]:g}: labels of another copy of it?")
        faces = np.array(boxes[image_id], dtype=np.float32).reshape(-1, 4)
        result.append(LabelledImage(name, path, truth_in_image(faces, width, height)))
    return result


def truth_in_image(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Ground-truth boxes scored like with like: detections are clipped to the frame when they are made, so
    faces are clipped to the image too (else a face the frame cuts is a miss for the detection that covers
    all of it the frame shows). A box with nothing left inside the image is dropped: nothing there to find."""
    clipped = clip_boxes(boxes, width, height)
    return clipped[(clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])]


def split_into_folds(images: list[LabelledImage], folds: int) -> list[list[LabelledImage]]:
    """Contiguous, deterministic folds of the (sorted) images; never more folds than images."""
    if folds < 1:
        raise ValueError("the number of folds must be at least 1")
    n = min(folds, len(images))
    bounds = np.linspace(0, len(images), n + 1).round().astype(int)
    return [images[a:b] for a, b in itertools.pairwise(bounds)]
