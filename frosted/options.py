"""Options several verbs share, so each is spelled and validated one way."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from facesplit.runtimes import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_RUNTIME,
    DEVICES,
    MAX_THREADS,
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


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing NaN and infinities: NaN fails no comparison, so FloatRange lets it through."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


MAX_SEED = 2**32 - 1  # what every generator a seed feeds (numpy's, torch's, the noise's AES key) accepts
SEED_TYPE = click.IntRange(0, MAX_SEED)


def model_options(default_size: str = "1024") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--weights, --split, --input-size and --threads."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--split", type=click.Choice(SPLIT_NAMES), default=None,
                         help="Where the head ends and the tail begins: after the RDCL, or after that "
                              f"Inception block (default: the noise profile's split, else {DEFAULT_SPLIT_NAME}).")(f)
        f = click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
                         help="CPU threads of the runtime (default: its choice, one per core).")(f)
        f = click.option("--input-size", type=InputSizeType(), default=default_size, show_default=True,
                         help="Model input: WIDTHxHEIGHT letterbox (multiples of 32), one side for a "
                              "square, or 'native' (each image at its own size, padded to /32).")(f)
        return click.option("--weights", type=click.Path(path_type=Path), default=None, metavar="FILE",
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
        f = click.option("--calibration", type=click.Path(path_type=Path), default=None,
                         metavar="DIR",
                         help="With --precision int8: calibrate on the images in DIR, frames like the camera's "
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
        f = click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
                         help="Folder of the COCO set's images (default: 'images' beside labels.json).")(f)
        return click.option("--coco", "coco_labels", type=click.Path(path_type=Path), default=None, metavar="FILE",
                            help=f"COCO labels.json of a face set {purpose}.")(f)
    return decorate


# One spelling per idea, in every verb (tests/test_cli_spelling.py walks them):
#   --out PATH         where the verb writes the files it makes: a FILE when it makes one (fit-noise's profile,
#                      weights download's checkpoint), a DIRECTORY when it makes several (attack's report and
#                      plots, detect's drawn images); the metavar says which.
#   --json [FILE]      the machine-readable output, to FILE; '-' or no FILE is stdout. Nothing is written unless asked,
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
    return click.option("--threshold", type=FiniteFloatRange(0, 1), default=DEFAULT_THRESHOLD, show_default=True,
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
    return click.option("--seed", type=SEED_TYPE, default=None, metavar="INTEGER", help=help)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def _not_an_image(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and str(value) in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        return Path("-")  # stdout by another name: the same as '-' (the JSON alone there, tables to stderr)
    # `--json photo.jpg other.jpg` (the file forgotten) would overwrite a photo
    if value is not None and value.suffix.lower() in IMAGE_SUFFIXES:
        raise click.BadParameter(f"{value}: looks like an image, not a JSON file", ctx, param)
    return value


def json_option(help: str, dest: str = "json_path", default: str | None = None) -> Decorator:
    """--json [FILE] (bare, '-' or /dev/stdout: stdout). A FILE named like an image is refused: it is a photo the
    user forgot to put first. A folder is refused by the verb's check of its outputs (`check_outputs`), with the
    rest of what it finds on disk (exit status 1)."""
    return click.option("--json", dest, type=click.Path(allow_dash=True, path_type=Path),
                        is_flag=False, flag_value="-", default=default, show_default=default is not None,
                        metavar="[FILE]", help=help, callback=_not_an_image)


def check_outputs(outputs: dict[str, Path | None], inputs: Iterable[Path] = (), folders: Iterable[str] = ()
                  ) -> None:
    """Before the work: no output (by option name; None and '-' skipped; those named in ``folders`` are folders)
    is one of ``inputs`` or the same file as another (a usage error, exit status 2), and each can be written
    (exit status 1, as any file the machine refuses)."""
    from facesplit.outputs import OutputError, check_distinct, check_writable

    try:
        check_distinct(outputs, inputs)
    except OutputError as exc:
        raise click.UsageError(str(exc)) from None
    folders = set(folders)
    for name, path in outputs.items():
        if path is not None:
            check_writable(path, folder=name in folders)


def write_json(value: Any, json_path: Path) -> None:
    """``value`` as indented JSON to the --json FILE ('-': stdout), whole or not at all."""
    from facesplit.outputs import write_text

    text = json.dumps(value, indent=1)
    if str(json_path) == "-":
        write_lines(sys.stdout, text)
        return
    write_text(json_path, text + "\n")


def write_lines(out: TextIO, text: str, flush: bool = True) -> None:
    """``text`` and a newline to ``out``; a stream that cannot take it (a full disk, a closed pipe) is one line
    and exit status 1, not a traceback (nor one more as Python flushes stdout on its way out)."""
    try:
        out.write(text + "\n")
        if flush:
            out.flush()
    except OSError as exc:
        if out is sys.stdout:
            from facesplit.outputs import silence_stdout

            silence_stdout()
        name = "stdout" if out is sys.stdout else str(getattr(out, "name", out))
        raise click.ClickException(f"{name}: cannot write ({exc.strerror or exc})") from None


def options_given(ctx: click.Context, names: Iterable[str]) -> list[str]:
    """Those of the parameters ``names`` the user set (on the command line, or by environment), in order."""
    return [name for name in names
            if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]


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
