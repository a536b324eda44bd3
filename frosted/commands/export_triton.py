"""`frosted export triton`: the tails `frosted tail` serves, as an NVIDIA Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from frosted.options import FiniteFloatRange, check_outputs, model_options, serve_precision_option, threshold_option

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize


@click.command("triton")
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="The model repository (created if missing; models of the same names are replaced).")
@click.option("--noise", "profiles", multiple=True, metavar="PROFILE",
              help="Export this noise profile's tail (shipped name or path; repeatable). Default: every shipped "
                   "profile, as `frosted tail` serves.")
@click.option("--serve-clean/--no-serve-clean", default=False, show_default=True,
              help="Also export the tail for clean activations (agents run with --no-noise), at --split.")
@click.option("--max-batch", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Largest batch Triton's dynamic batcher forms.")
@click.option("--max-delay-ms", type=FiniteFloatRange(0, 1000), default=4.0, show_default=True,
              help="How long Triton holds a frame for a batch to form.")
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Instances (processes) of each python-backend model.")
@click.option("--ensemble-tail", type=click.Choice(["python", "onnxruntime"]), default="python", show_default=True,
              help="Which tail the ensemble calls: the python-backend one (ONNX Runtime in the server's Python; "
                   "any Triton with the python backend) or the onnxruntime_onnx one (NVIDIA's Triton images).")
@serve_precision_option()
@threshold_option("Send back faces scoring at least this.")
@model_options()
def triton(out: Path, profiles: tuple[str, ...], serve_clean: bool, max_batch: int, max_delay_ms: float,
           instances: int, ensemble_tail: str, serve_precisions: tuple[str, ...], threshold: float,
           weights: Path | None, split: str | None, input_size: InputSize, threads: int | None) -> None:
    """Per tail: NAME (the ensemble agents call: FP16 activation -> boxes), NAME.tail-onnx, NAME.tail-python
    and NAME.boxes, each with the profile fingerprint in its parameters. Agents use it with
    --tail triton://HOST:PORT."""
    if split is not None and not serve_clean:
        raise click.UsageError("--split places the clean tail (--serve-clean); a profile's tail is at the split "
                               "it was fitted for")
    check_outputs({"--out": out}, folders=["--out"])
    # imported here: `frosted export triton --help` must not wait for torch
    from cloud_tail.models import served_tails
    from cloud_tail.triton_repository import TritonOptions, write_repository
    from facesplit.detector import load_detector
    from facesplit.faceboxes import DEFAULT_SPLIT
    from facesplit.noise.shipped import shipped_profiles
    from facesplit.postprocess import PostprocessConfig

    detector = load_detector(str(weights) if weights else None, input_size,
                             PostprocessConfig(score_threshold=threshold), threads, split or DEFAULT_SPLIT)
    tails = served_tails(detector, list(profiles) or list(shipped_profiles()), serve_clean=serve_clean,
                         head_precisions=serve_precisions)
    options = TritonOptions(max_batch=max_batch, max_delay_ms=max_delay_ms, threads=threads or 0,
                            instances=instances, ensemble_tail=ensemble_tail)  # type: ignore[arg-type]
    for summary in write_repository(tails.values(), out, options):
        click.echo(f"wrote {out / summary['model']} (+ .tail-onnx, .tail-python, .boxes; split {summary['split']}, "
                   f"{summary['input_size']}) fingerprint {summary['fingerprint']}", err=True)
