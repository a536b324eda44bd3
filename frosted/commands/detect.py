"""`frosted detect IMAGE...`: one JSON line of face boxes per image, optionally drawn."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from facesplit.outputs import input_overwritten, replacing
from frosted.options import (
    DEFAULT_SPLIT_NAME,
    check_outputs,
    check_precision_option,
    deprecated_alias,
    device_option,
    json_option,
    model_options,
    precision_options,
    runtime_option,
    threshold_option,
    write_lines,
)

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize

@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sample", "samples", multiple=True, metavar="NAME",
              help="Also detect on a photo scikit-image ships, e.g. 'astronaut' (repeatable).")
@threshold_option("Report faces scoring at least this (the operating threshold 'eval' counts at).")
@json_option("Write the JSON lines here ('-': stdout).", default="-")
@click.option("--out", type=click.Path(path_type=Path), default=None, metavar="DIR",
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
    counts = Counter([str(p) for p in images] + [f"--sample {s}" for s in samples])
    if repeated := sorted(key for key, count in counts.items() if count > 1):
        # its line and its drawing would come twice under one name, and a count of lines would not be of images
        raise click.UsageError(f"{repeated[0]} is given twice: give each image once")
    drawn = _drawn_paths(images, samples, out)
    # before the model loads: an output that cannot be written, or would overwrite an input, fails at once
    check_outputs({"--json": json_path, "--out": out}, images, folders=["--out"])
    for key, path in drawn.items():
        if input_overwritten(path, images) is not None:
            raise click.BadParameter(f"{out}: the drawing of {key} would overwrite {path}, an input: choose another "
                                     "folder", param_hint="--out")
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(f"{out}: cannot create the folder ({exc.strerror})",
                                     param_hint="--out") from None
    with contextlib.ExitStack() as stack:
        lines: TextIO = (sys.stdout if str(json_path) == "-"
                         else stack.enter_context(stack.enter_context(replacing(json_path)).open("w")))
        failures = _detect_all(images, samples, threshold, lines, drawn, weights, split, input_size, threads,
                               runtime, precision, calibration, device)
    if failures:
        sys.exit(1)


def _drawn_paths(images: tuple[Path, ...], samples: tuple[str, ...], out: Path | None) -> dict[str, Path]:
    """Where each input's drawing goes (by its key): ``out``/STEM.jpg, numbered (STEM-2.jpg, ...) where inputs
    share a stem, so no drawing overwrites another."""
    if out is None:
        return {}
    drawn: dict[str, Path] = {}
    taken: set[str] = set()
    for key, stem in [(str(p), p.stem) for p in images] + [(f"skimage:{s}", s) for s in samples]:
        name, n = f"{stem}.jpg", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}.jpg"
        taken.add(name.lower())
        drawn[key] = out / name
    return drawn


def _detect_all(images: tuple[Path, ...], samples: tuple[str, ...], threshold: float, lines: TextIO,
                drawn: dict[str, Path], weights: Path | None, split: str | None, input_size: InputSize,
                threads: int | None, runtime: str, precision: str, calibration: Path | None, device: str) -> int:
    """Detect on every input, one JSON line each to ``lines``; the number that failed."""
    import json

    import numpy as np

    from facesplit.detector import load_detector
    from facesplit.draw import draw_boxes
    from facesplit.errors import FrostedError
    from facesplit.evaluation.detections import detection_record
    from facesplit.images import read_image_bgr, sample_image, write_image
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
        record = detection_record(key, boxes)
        if key in drawn:
            record["drawn"] = str(drawn[key])
            try:  # a drawing is remade from its image: one that fails is said, the others go on
                write_image(drawn[key], draw_boxes(frame, np.asarray(boxes)))
            except FrostedError as exc:
                click.echo(f"Error: {exc}", err=True)
                failures += 1
        write_lines(lines, json.dumps(record), flush=lines is sys.stdout)  # a pipe sees each image as it is done
    return failures
