"""`frosted detect IMAGE...`: one JSON line of face boxes per image, optionally drawn."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import cv2
import numpy as np

from facesplit.detector import load_detector
from facesplit.draw import draw_boxes
from facesplit.errors import FrostedError
from facesplit.evaluation.detections import detection_record
from facesplit.faceboxes import DEFAULT_SPLIT
from facesplit.images import read_image_bgr, sample_image
from facesplit.postprocess import PostprocessConfig
from facesplit.preprocess import InputSize
from frosted.options import model_options


@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sample", "samples", multiple=True, metavar="NAME",
              help="Also detect on a photo scikit-image ships, e.g. 'astronaut' (repeatable).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Report faces scoring at least this.")
@click.option("--draw", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write each image with its boxes drawn into this folder.")
@model_options()
def detect(images: tuple[Path, ...], samples: tuple[str, ...], threshold: float, draw: Path | None,
           weights: Path | None, split: str | None, input_size: InputSize, threads: int | None) -> None:
    """Find faces in IMAGES; print {"image": ..., "boxes": [[x1, y1, x2, y2, score], ...]} per line."""
    if not images and not samples:
        raise click.UsageError("give at least one IMAGE or --sample NAME")
    detector = load_detector(weights, input_size, PostprocessConfig(score_threshold=threshold), threads,
                             split or DEFAULT_SPLIT)
    failures = 0
    inputs: list[tuple[str, Path | None]] = [(str(p), p) for p in images] + [(f"skimage:{s}", None)
                                                                             for s in samples]
    for key, path in inputs:
        try:
            frame = read_image_bgr(path) if path is not None else sample_image(key.split(":", 1)[1])
        except FrostedError as exc:  # one bad file must not lose the others' results
            click.echo(f"Error: {exc}", err=True)
            failures += 1
            continue
        boxes = detector.detect(frame)
        click.echo(json.dumps(detection_record(key, boxes)))
        if draw is not None:
            draw.mkdir(parents=True, exist_ok=True)
            name = Path(key.split(":", 1)[-1]).stem + ".jpg"
            cv2.imwrite(str(draw / name), draw_boxes(frame, np.asarray(boxes)))
    if failures:
        sys.exit(1)
