"""`frosted detect IMAGE...`: one JSON line of face boxes per image, optionally drawn."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from frosted.options import (
    DEFAULT_SPLIT_NAME,
    check_precision_option,
    deprecated_alias,
    device_option,
    json_option,
    model_options,
    precision_options,
    runtime_option,
    threshold_option,
)

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sample", "samples", multiple=True, metavar="NAME",
              help="Also detect on a photo scikit-image ships, e.g. 'astronaut' (repeatable).")
@threshold_option("Report faces scoring at least this (the operating threshold 'eval' counts at).")
@json_option("Write the JSON lines here ('-': stdout).", default="-")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write each image with its boxes drawn into this folder.")
@deprecated_alias("--draw", "--out", "out")
@model_options()
@runtime_option()
@device_option()
@precision_options()
def detect(images: tuple[Path, ...], samples: tuple[str, ...], threshold: float, json_path: Path, out: Path | None,
           weights: Path | None, split: str | None, input_size: InputSize, threads: int | None, runtime: str,
           device: str, precision: str, calibration: Path | None) -> None:
    """Find faces in IMAGES; print {"image": ..., "boxes": [[x1, y1, x2, y2, score], ...]} per line.

    The lines go to --json FILE if given. Files larger than $FROSTED_MAX_IMAGE_PIXELS pixels (default
    134217728) are refused from their header."""
    # the model's modules are imported in _detect_all: `frosted --help` and `frosted detect --help` must not wait
    # for torch
    if not images and not samples:
        raise click.UsageError("give at least one IMAGE or --sample NAME")
    check_precision_option(precision, runtime, device, calibration)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(f"{out}: cannot create the folder ({exc.strerror})",
                                     param_hint="--out") from None
    if json_path.suffix.lower() in _IMAGE_SUFFIXES:  # `--json photo.jpg other.jpg` would overwrite a photo
        raise click.BadParameter(f"{json_path}: looks like an image, not a JSON lines file", param_hint="--json")
    try:  # before the model loads: an output that cannot be written fails at once
        lines = sys.stdout if str(json_path) == "-" else json_path.open("w")
    except OSError as exc:
        raise click.FileError(str(json_path), hint=exc.strerror or str(exc)) from None
    try:
        failures = _detect_all(images, samples, threshold, lines, out, weights, split, input_size, threads, runtime,
                               precision, calibration, device)
    finally:
        if lines is not sys.stdout:
            lines.close()
    if failures:
        sys.exit(1)


def _detect_all(images: tuple[Path, ...], samples: tuple[str, ...], threshold: float, lines: TextIO,
                out: Path | None, weights: Path | None, split: str | None, input_size: InputSize,
                threads: int | None, runtime: str, precision: str, calibration: Path | None, device: str) -> int:
    """Detect on every input, one JSON line each to ``lines``; the number that failed."""
    import json

    import cv2
    import numpy as np

    from facesplit.detector import load_detector
    from facesplit.draw import draw_boxes
    from facesplit.errors import FrostedError
    from facesplit.evaluation.detections import detection_record
    from facesplit.images import read_image_bgr, sample_image
    from facesplit.postprocess import PostprocessConfig
    from facesplit.runtimes.factory import detector_on

    detector = detector_on(runtime, load_detector(weights, input_size, PostprocessConfig(score_threshold=threshold),
                                                  threads, split or DEFAULT_SPLIT_NAME), threads,
                           precision=precision, calibration=calibration, device=device)
    failures = 0
    inputs: list[tuple[str, Path | None]] = [(str(p), p) for p in images] + [(f"skimage:{s}", None)
                                                                             for s in samples]
    for key, path in inputs:
        try:  # one bad image is reported and must not lose the others' results
            frame = read_image_bgr(path) if path is not None else sample_image(key.split(":", 1)[1])
            boxes = detector.detect(frame)
        except FrostedError as exc:
            click.echo(f"Error: {exc}", err=True)
            failures += 1
            continue
        click.echo(json.dumps(detection_record(key, boxes)), file=lines)
        if out is not None:
            drawn = out / (Path(key.split(":", 1)[-1]).stem + ".jpg")
            if not cv2.imwrite(str(drawn), draw_boxes(frame, np.asarray(boxes))):  # False, not an exception
                click.echo(f"Error: {drawn}: could not write the drawn image", err=True)
                failures += 1
    return failures
