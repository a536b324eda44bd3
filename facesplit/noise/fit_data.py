"""What a profile can be fitted on: folders of the user's own camera frames, videos, or COCO face sets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facesplit.evaluation.coco import read_coco_faces, split_into_folds
from facesplit.evaluation.errors import DatasetError
from facesplit.images import frames_too_large, max_image_pixels
from facesplit.noise.fit import FitImage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def frames_from(source: Path, max_frames: int = 300) -> list[FitImage]:
    """Unlabelled frames: every image in a folder (sorted), or up to ``max_frames`` evenly spaced frames of a
    video file (decoded here, once)."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DatasetError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return [FitImage(f"{source.name}/{p.name}", p, None) for p in files[:max_frames]]
    if not source.is_file():
        raise DatasetError(f"{source}: no such folder or video")
    try:  # OpenCV takes the name as UTF-8, and crashes the process on one that is not
        str(source).encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(f"{str(source)!a}: a video file name that is not UTF-8; rename it") from None
    capture = cv2.VideoCapture(str(source))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not capture.isOpened() or total <= 0:
        raise DatasetError(f"{source}: not a readable video (OpenCV could not open it)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    # each kept frame is held decoded, as photos are not
    if (reason := frames_too_large(str(source), width, height, max_image_pixels())) is not None:
        capture.release()
        raise DatasetError(reason)
    wanted = set(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int).tolist())
    frames = []
    for index in range(total):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(FitImage(f"{source.name}/frame{index:06d}", source, None, frame))
    capture.release()
    return frames


def labelled_from_coco(labels: Path, images_dir: Path, folds: int, use_folds: list[int]) -> list[FitImage]:
    """The images of the chosen folds (1-based, same split as `frosted eval`) with their face boxes."""
    split = split_into_folds(read_coco_faces(labels, images_dir), folds)
    bad = [k for k in use_folds if not 1 <= k <= len(split)]
    if bad:
        raise DatasetError(f"{labels}: fold {bad[0]} does not exist (the set has {len(split)} folds)")
    return [FitImage(f"{labels.parent.name}/{image.key}", image.path, image.boxes)
            for k in use_folds for image in split[k - 1]]

