"""Options several verbs share, so each is spelled and validated one way."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from facesplit.runtimes import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_RUNTIME,
    DEVICES,
    PRECISIONS,
    RUNTIME_NAMES,
    SERVABLE_PRECISIONS,
)

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize

# facesplit.faceboxes.SPLITS and DEFAULT_SPLIT, spelled out because importing that module imports torch, and
# `--help` must not wait for torch; tests/test_cli_startup.py checks they stay the same.
SPLIT_NAMES = ("rdcl", "inception1", "inception2", "inception3")
DEFAULT_SPLIT_NAME = "rdcl"


class InputSizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> InputSize:
        from facesplit.preprocess import InputSize  # here: only a verb that runs needs it (and torch)

        if isinstance(value, InputSize):
            return value
        try:
            return InputSize.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def model_options(default_size: str = "1024") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--weights, --split, --input-size and --threads."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--split", type=click.Choice(SPLIT_NAMES), default=None,
                         help="Where the head ends and the tail begins: after the RDCL, or after that "
                              f"Inception block (default: the noise profile's split, else {DEFAULT_SPLIT_NAME}).")(f)
        f = click.option("--threads", type=click.IntRange(1), default=None,
                         help="CPU threads of the runtime (default: its choice, one per core).")(f)
        f = click.option("--input-size", type=InputSizeType(), default=default_size, show_default=True,
                         help="Model input: WIDTHxHEIGHT letterbox (multiples of 32), one side for a "
                              "square, or 'native' (each image at its own size, padded to /32).")(f)
        return click.option("--weights", type=click.Path(path_type=Path), default=None,
                            help="FaceBoxes checkpoint (default: $FROSTED_WEIGHTS, then the cache).")(f)
    return decorate


RUNTIME_HELP = ("What runs the head and tail: torch, or an exported ONNX graph in onnxruntime ('frosted[onnx]'), "
                "openvino ('frosted[openvino]') or tensorrt (NVIDIA GPUs, 'frosted[tensorrt]').")


def runtime_option(default: str | None = DEFAULT_RUNTIME) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--runtime NAME: one spelling in every verb that runs the head or the tail (`facesplit.runtimes`)."""
    return click.option("--runtime", type=click.Choice(RUNTIME_NAMES), default=default,
                        show_default=default is not None, help=RUNTIME_HELP)


def device_option(default: str | None = DEFAULT_DEVICE) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--device cpu|cuda: where the runtime computes, one spelling in every verb that runs the head or tail."""
    return click.option("--device", type=click.Choice(DEVICES), default=default, show_default=default is not None,
                        help="Where the head and tail compute: cuda is an NVIDIA GPU (--runtime torch, whose head "
                             "leaves the activation there and draws the noise there; onnxruntime with "
                             "onnxruntime-gpu; tensorrt runs on the GPU anyway). --seed reproduces noise per "
                             "device: the GPU's sampler is another cipher (docs/runtimes.md).")


PRECISION_HELP = ("What the head computes in: int8 is quantized after training by NNCF (--runtime openvino or "
                  "tensorrt, 'frosted[openvino]'), float16 is half precision (--runtime torch or tensorrt; fast on a "
                  "GPU, slow on a CPU): each another head, whose frames carry another fingerprint (docs/runtimes.md).")


def precision_option(default: str | None = DEFAULT_PRECISION) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--precision: what the head computes in, one spelling in every verb that names it."""
    return click.option("--precision", type=click.Choice(PRECISIONS), default=default,
                        show_default=default is not None, help=PRECISION_HELP)


def precision_options(default: str | None = DEFAULT_PRECISION) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--precision and --calibration: what the head computes in, one spelling in every verb that runs it."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--calibration", type=click.Path(file_okay=False, path_type=Path), default=None,
                         metavar="FOLDER",
                         help="With --precision int8: calibrate on the images in FOLDER, frames like the camera's "
                              "(default: MIT+CMU folds 1-5 of the shared data).")(f)
        return precision_option(default)(f)
    return decorate


def check_precision_option(precision: str, runtime: str, device: str = DEFAULT_DEVICE,
                           calibration: Path | None = None) -> None:
    """--precision or --device the --runtime cannot run, or --calibration without int8, is a usage error, before
    the model loads."""
    from facesplit.runtimes import UnknownRuntimeError, check_calibration, check_device, check_precision

    try:
        check_device(device, runtime)
        check_precision(precision, runtime, device)
        check_calibration(calibration, precision)
    except UnknownRuntimeError as exc:
        raise click.UsageError(str(exc)) from None


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


# One spelling per idea, in every verb (tests/test_cli_spelling.py walks them):
#   --out PATH         where the verb writes the files it makes: a FILE when it makes one (fit-noise's profile,
#                      weights download's checkpoint), a DIRECTORY when it makes several (attack's report and
#                      plots, detect's drawn images); the metavar says which.
#   --json FILE        the machine-readable output, to FILE; '-' is stdout. Nothing is written unless asked,
#                      except where the JSON lines are the verb's product (detect, edge, demo: stdout by default).
#   --threshold P      faces scoring at least P are the ones reported, counted and sent: DEFAULT_THRESHOLD.
#   --seed INTEGER     reproducible randomness, for evaluation only; without it every draw is fresh from the OS's
#                      CSPRNG (the product's noise must never be predictable).
# Old spellings stay as hidden aliases (deprecated_alias) so scripts keep working.

DEFAULT_THRESHOLD = 0.7
"""The operating threshold: the score from which a box counts as a face. `eval` reports recall and false
positives at it (TR-4928's setting), and every verb that reports boxes keeps those scoring at least this, so what
`detect` prints is what `eval` counted."""

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def threshold_option(help: str) -> Decorator:
    return click.option("--threshold", type=click.FloatRange(0, 1), default=DEFAULT_THRESHOLD, show_default=True,
                        help=help)


def serve_precision_option() -> Decorator:
    """--serve-precision: which heads besides float32 a tail (ours, or a Triton repository) serves."""
    return click.option("--serve-precision", "serve_precisions", type=click.Choice(SERVABLE_PRECISIONS),
                        multiple=True,
                        help="Also serve to agents whose head runs at this --precision (repeatable) each profile "
                             "whose file records its AP measured on such a head (bench/precision_accuracy.py "
                             "--record; docs/runtimes.md); the others are logged and not served to them.")


def seed_option(help: str = "Reproducible noise, for evaluation only (default: fresh noise from the OS's "
                            "CSPRNG).") -> Decorator:
    return click.option("--seed", type=int, default=None, help=help)


def json_option(help: str, dest: str = "json_path", default: str | None = None,
                checked: bool = True) -> Decorator:
    """--json FILE ('-': stdout); ``checked``: a folder is refused as the options are read (else the verb's
    writer names it)."""
    return click.option("--json", dest, type=click.Path(dir_okay=not checked, allow_dash=True, path_type=Path),
                        default=default, show_default=default is not None, metavar="FILE", help=help)


def write_json(value: Any, json_path: Path) -> None:
    """``value`` as indented JSON to the --json FILE ('-': stdout); a file it cannot write is one line."""
    text = json.dumps(value, indent=1)
    if str(json_path) == "-":
        click.echo(text)
        return
    try:
        json_path.write_text(text + "\n")
    except OSError as exc:
        raise click.FileError(str(json_path), hint=exc.strerror or str(exc)) from None


def deprecated_alias(old: str, new: str, dest: str) -> Decorator:
    """A hidden old spelling of the option ``new`` (whose value lands in ``dest``): it still works, and says
    once on stderr that it is deprecated. ``new`` given too wins. The value is handed to ``new`` as a default, so
    it is checked and converted by ``new``'s own type."""
    def forward(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        click.echo(f"Note: {old} is deprecated; use {new}.", err=True)
        ctx.default_map = {**(ctx.default_map or {}), dest: value}

    # eager: processed before ``new``, which then finds the value where a config default would be
    return click.option(old, f"deprecated_{dest}_{old.lstrip('-').replace('-', '_')}", hidden=True,
                        expose_value=False, is_eager=True, callback=forward, metavar="VALUE",
                        help=f"Deprecated spelling of {new}.")
