"""Options several verbs share, so each is spelled and validated one way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from facesplit.faceboxes import DEFAULT_SPLIT, SPLITS
from facesplit.preprocess import InputSize


class InputSizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> InputSize:
        if isinstance(value, InputSize):
            return value
        try:
            return InputSize.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def model_options(default_size: str = "1024") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--weights, --split, --input-size and --threads."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--split", type=click.Choice(SPLITS), default=None,
                         help="Where the head ends and the tail begins: after the RDCL, or after that "
                              f"Inception block (default: the noise profile's split, else {DEFAULT_SPLIT}).")(f)
        f = click.option("--threads", type=click.IntRange(1), default=None,
                         help="torch CPU threads (default: torch's choice, one per core).")(f)
        f = click.option("--input-size", type=InputSizeType(), default=default_size, show_default=True,
                         help="Model input: WIDTHxHEIGHT letterbox (multiples of 32), one side for a "
                              "square, or 'native' (each image at its own size, padded to /32).")(f)
        return click.option("--weights", type=click.Path(path_type=Path), default=None,
                            help="FaceBoxes checkpoint (default: $FROSTED_WEIGHTS, then the cache).")(f)
    return decorate


def coco_options(purpose: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--coco, --images and --folds: a COCO face set and its fold split, the same in every verb."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--folds", type=click.IntRange(1), default=10, show_default=True,
                         help="Split the COCO images (sorted by name) into this many contiguous folds.")(f)
        f = click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
                         help="Folder of the COCO set's images (default: 'images' beside labels.json).")(f)
        return click.option("--coco", "coco_labels", type=click.Path(path_type=Path), default=None,
                            help=f"COCO labels.json of a face set {purpose}.")(f)
    return decorate
