"""`frosted export onnx`: the head and tails as ONNX graphs, for ONNX Runtime, OpenVINO, TensorRT or Triton."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from frosted.options import SPLIT_NAMES, InputSizeType, check_outputs, precision_options

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize

DEFAULT_SIZES = ("1024", "1024x576")


@click.group()
def export() -> None:
    """Export the head and tail as graphs other runtimes load (the noise stays outside the head)."""


@export.command("onnx")
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Folder for the graphs and manifest.json (created if missing).")
@click.option("--split", type=click.Choice(SPLIT_NAMES), default=None,
              help="Where the head ends (default: the noise profiles' split, else rdcl).")
@click.option("--noise", "profiles", multiple=True, metavar="PROFILE",
              help="Export this profile's noise-aware tail (shipped name or path; repeatable). Default: the clean "
                   "tail.")
@click.option("--input-size", "input_sizes", type=InputSizeType(), multiple=True,
              help=f"Model input the graphs are fixed to (repeatable; default: {' and '.join(DEFAULT_SIZES)}).")
@click.option("--weights", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="FaceBoxes checkpoint (default: $FROSTED_WEIGHTS, then the cache).")
@precision_options()
def onnx(out: Path, split: str | None, profiles: tuple[str, ...], input_sizes: tuple[InputSize, ...],
         weights: Path | None, precision: str, calibration: Path | None) -> None:
    """Write head-SPLIT-WxH.onnx per input size and a tail per profile (tail-PROFILE-WxH.onnx, at the size it
    was fitted for), or the clean tail-SPLIT-WxH.onnx, plus manifest.json. Any batch; fixed input size. With
    --precision int8 also the int8 head as QDQ graphs: head-SPLIT-WxH-int8.onnx (OpenVINO's) and
    head-SPLIT-WxH-int8-signed.onnx (TensorRT's)."""
    # imported here: `frosted export onnx --help` must not wait for torch
    from facesplit.runtimes import UnknownRuntimeError, check_calibration

    try:
        check_calibration(calibration, precision)
    except UnknownRuntimeError as exc:
        raise click.UsageError(str(exc)) from None
    check_outputs({"--out": out}, folders=["--out"])
    from facesplit.detector import load_detector
    from facesplit.noise.shipped import split_for
    from facesplit.preprocess import InputSize
    from facesplit.runtimes.export import export_onnx

    sizes = list(input_sizes) or [InputSize.parse(size) for size in DEFAULT_SIZES]
    chosen = split_for(split, list(profiles))
    detector = load_detector(str(weights) if weights else None, sizes[0], split=chosen)
    manifest = export_onnx(detector, list(profiles), sizes, out, chosen, precision, calibration)
    for graph in manifest["graphs"]:
        at = f", {graph['precision']} for {graph['for_runtime']}" if "precision" in graph else ""
        click.echo(f"wrote {out / graph['file']} ({graph['part']}, split {graph['split']}, {graph['input_size']}{at})",
                   err=True)
    click.echo(f"wrote {out / 'manifest.json'}", err=True)


def _add_triton() -> None:
    # its own module (the verb is long); imported at the end: it needs the group above
    from frosted.commands.export_triton import triton

    export.add_command(triton)


_add_triton()
